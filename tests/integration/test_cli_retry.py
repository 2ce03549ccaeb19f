"""``objmig retry`` (issue 23.2): failed objects return to pending with fresh attempts, the
request is recorded, and the next run copies them and cuts over."""

from __future__ import annotations

import asyncio
import os
import sys

from objmig.ledger import Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import migration, rows_of, run
from tests.support.s3proxy import Deny, S3FaultProxy


async def _retry(database_url: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "objmig", "retry", "test/m", "--database-url", database_url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=dict(os.environ),
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_retry_returns_failed_objects_to_pending_and_the_next_run_cuts_over(
    ledger: Ledger,
    database_url: str,
    proxy_endpoint: Endpoint,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
) -> None:
    source, target = await s3_seed.bucket(), await s3_seed.bucket()
    for i in range(6):
        await s3_seed.put_object(source, f"k/{i}", 128)
    denied = s3_proxy.add_rule(Deny(), bucket=source, key="k/[12]")
    resource = migration(proxy_endpoint, source, target)

    first = await run(ledger, resource, proxy_endpoint)

    assert first.outcome == "awaiting-cutover"
    rows = await rows_of(ledger)
    assert {k for k, r in rows.items() if r.state is ObjectState.FAILED} == {"k/1", "k/2"}
    # Running again retries nothing: a failed object stays failed.
    again = await run(ledger, resource, proxy_endpoint)
    assert again.outcome == "awaiting-cutover"
    s3_proxy.remove_rule(denied)

    code, output = await _retry(database_url, "--key", "k/1", "--reason", "bucket policy fixed")
    assert code == 0, output
    assert "1 failed objects are pending again" in output, output
    rows = await rows_of(ledger)
    assert (rows["k/1"].state, rows["k/1"].attempts) == (ObjectState.PENDING, 0)
    assert rows["k/2"].state is ObjectState.FAILED
    code, output = await _retry(database_url)
    assert code == 0, output
    assert "1 failed objects are pending again" in output, output

    final = await run(ledger, resource, proxy_endpoint)

    assert final.outcome == "cut-over"
    assert {r.state for r in (await rows_of(ledger)).values()} == {ObjectState.VERIFIED}
    migration_id = await ledger.find_migration("test/m")
    assert migration_id is not None
    retried = (await ledger.get_state(migration_id)).retried
    assert retried is not None
    assert (retried.count, retried.objects) == (2, 1)

    # Once cut over, a retry is refused: the applications read the target by then.
    code, output = await _retry(database_url)
    assert code == 1
    assert "has cut over" in output, output
