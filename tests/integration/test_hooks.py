"""A per-object step of the application's own (write-up 004): an HTTP hook per object.

The endpoint is a real aiohttp server on loopback that fails a share of the calls with
500 (some until a retry succeeds, one always) and one with 400, and counts every call.
"""

from __future__ import annotations

import socket
from typing import Any

from objmig.api.migration import ObjectMigration
from objmig.engine.secrets import EnvSecrets, env_name
from objmig.ledger import Ledger, ObjectState
from objmig.storage.endpoint import Endpoint
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import migration, rows_of, run, secrets_for
from tests.support.hook_endpoint import HOLD, HookEndpoint, Reply

TOKEN = "hook-s3cr3t"
OK = [f"ok/{i}" for i in range(6)]
FLAKY = ["flaky/0", "flaky/1"]  # 500 twice, then 200
DOWN = "down/0"  # 500 every time
BAD = "bad/0"  # 400: the application refuses this object


def answer(key: str, call: int) -> tuple[int, str]:
    if key in FLAKY and call <= 2:
        return 500, "index service busy"
    if key == DOWN:
        return 500, "index service down"
    if key == BAD:
        return 400, "no such upload: the space was deleted"
    return 200, "registered"


def hooked(
    endpoint: Endpoint, source: str, target: str, url: str, timeout: str = "5s", **spec: Any
) -> ObjectMigration:
    """A migration whose objects go to the hook at ``url`` (4 attempts, fast backoff)."""
    return migration(
        endpoint,
        source,
        target,
        hooks={
            "perObject": {
                "url": url,
                "bearerTokenSecretRef": {"name": "hook", "key": "token"},
                "timeout": timeout,
            }
        },
        **spec,
    )


def with_token(endpoint: Endpoint) -> EnvSecrets:
    return secrets_for(endpoint, **{env_name("hook", "token"): TOKEN})


async def seed(seed: S3Seeder, keys: list[str]) -> str:
    bucket = await seed.bucket()
    for key in keys:
        await seed.put_object(bucket, key, 256)
    return bucket


async def test_each_object_is_hooked_once_5xx_retried_4xx_failed_with_the_endpoints_message(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    keys = [*OK, *FLAKY, DOWN, BAD]
    bucket = await seed(s3_seed, keys)
    async with HookEndpoint(answer) as hook:
        resource = hooked(
            s3_endpoint,
            bucket,
            bucket,
            hook.url,
            copy={"mode": "none"},
            failurePolicy={"maxFailedObjects": 2},
        )
        result = await run(ledger, resource, s3_endpoint, secrets=with_token(s3_endpoint))

        assert result.outcome == "cut-over", result.status.conditions
        assert dict(hook.calls) == {
            **dict.fromkeys(OK, 1),
            **dict.fromkeys(FLAKY, 3),
            DOWN: 4,
            BAD: 1,
        }
        rows = await rows_of(ledger)
        assert rows[BAD].state is ObjectState.FAILED
        assert rows[BAD].error_code == "Hook400"
        assert "no such upload: the space was deleted" in (rows[BAD].last_error or "")
        assert rows[DOWN].state is ObjectState.FAILED
        assert rows[DOWN].error_code == "Hook500"
        for key in [*OK, *FLAKY]:
            assert rows[key].state is ObjectState.VERIFIED, key
            assert rows[key].hook_done_at is not None, key
        assert {h["authorization"] for h in hook.headers} == {f"Bearer {TOKEN}"}
        first = next(d for d in hook.documents if d["source"]["key"] == OK[0])
        assert first == {
            "migration": "test/m",
            "source": {"bucket": bucket, "key": OK[0], "versionId": None},
            "target": {"bucket": bucket, "key": OK[0], "versionId": None},
            "size": 256,
            "etag": rows[OK[0]].etag,
            "checksum": None,
        }
        keys_sent = {h["idempotency-key"] for h in hook.headers}
        assert len(keys_sent) == len(keys)  # one key per object, however often it was sent
        steps = result.status.steps
        assert steps is not None
        assert (steps.hooks_done, steps.hooks_pending) == (8, 0)

        # Running again sends nothing: every hook done is recorded, failures are final.
        before = dict(hook.calls)
        again = await run(ledger, resource, s3_endpoint, secrets=with_token(s3_endpoint))
        assert again.outcome == "cut-over"
        assert dict(hook.calls) == before


async def test_after_a_copy_the_hook_hears_of_the_target_before_the_cutover(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    source = await seed(s3_seed, OK)
    target = await s3_seed.bucket()
    async with HookEndpoint() as hook:
        resource = hooked(s3_endpoint, source, target, hook.url)
        result = await run(ledger, resource, s3_endpoint, secrets=with_token(s3_endpoint))

    assert result.outcome == "cut-over"
    assert dict(hook.calls) == dict.fromkeys(OK, 1)
    assert {d["target"]["bucket"] for d in hook.documents} == {target}
    rows = await rows_of(ledger)
    cut_over = result.status.cutover.at
    assert cut_over is not None
    assert all(r.hook_done_at is not None and r.hook_done_at <= cut_over for r in rows.values())


async def test_verify_only_shows_which_hooks_are_not_done_and_calls_none(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket = await seed(s3_seed, OK)
    async with HookEndpoint() as hook:

        def spec(verify_only: bool) -> ObjectMigration:
            return hooked(
                s3_endpoint,
                bucket,
                bucket,
                hook.url,
                copy={"mode": "none"},
                verify={"verifyOnly": verify_only},
            )

        checked = await run(ledger, spec(True), s3_endpoint, secrets=with_token(s3_endpoint))

        assert hook.calls == {}
        rows = await rows_of(ledger)
        assert {r.skip_reason for r in rows.values()} == {"HookPending"}
        steps = checked.status.steps
        assert steps is not None
        assert (steps.hooks_pending, steps.hooks_done) == (len(OK), 0)
        assert {o.last_error for o in checked.status.objects} == {"HookPending"}

        done = await run(ledger, spec(False), s3_endpoint, secrets=with_token(s3_endpoint))

        assert done.outcome == "cut-over"
        assert dict(hook.calls) == dict.fromkeys(OK, 1)


async def test_a_dry_run_calls_no_hook_and_the_real_run_after_it_calls_each_once(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket = await seed(s3_seed, OK)
    async with HookEndpoint() as hook:

        def spec(dry_run: bool) -> ObjectMigration:
            return hooked(
                s3_endpoint, bucket, bucket, hook.url, copy={"mode": "none"}, dryRun=dry_run
            )

        planned = await run(ledger, spec(True), s3_endpoint, secrets=with_token(s3_endpoint))

        assert planned.outcome == "planned"
        assert hook.calls == {}
        assert {r.skip_reason for r in (await rows_of(ledger)).values()} == {"PlanCopy"}
        done = await run(ledger, spec(False), s3_endpoint, secrets=with_token(s3_endpoint))
        assert done.outcome == "cut-over"
        assert dict(hook.calls) == dict.fromkeys(OK, 1)


async def test_a_hook_url_that_refuses_connections_fails_the_run_before_any_object(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    bucket = await seed(s3_seed, OK)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    url = f"http://127.0.0.1:{port}/objects"
    resource = hooked(s3_endpoint, bucket, bucket, url, copy={"mode": "none"})

    result = await run(ledger, resource, s3_endpoint, secrets=with_token(s3_endpoint))

    failed = next(c for c in result.status.conditions if c.type == "Failed")
    assert result.outcome == "failed"
    assert (failed.status, failed.reason) == ("True", "HookUnreachable")
    assert failed.message.startswith(
        f"spec.hooks.perObject.url: cannot connect to 127.0.0.1:{port}"
    )
    assert await rows_of(ledger) == {}


THROTTLED = "throttled/0"  # 429 asking for 1 s, then 200
GREEDY = "greedy/0"  # 429 asking for an hour, then 200: the wait is capped
SLOW = "slow/0"  # no answer within the hook's timeout, then 200


def answer_later(key: str, call: int) -> Reply | None:
    if call == 1 and key == THROTTLED:
        return 429, "slow down", {"Retry-After": "1"}
    if call == 1 and key == GREEDY:
        return 429, "come back tomorrow", {"Retry-After": "3600"}
    if call == 1 and key == SLOW:
        return HOLD
    return 200, "registered"


async def test_retry_after_is_honoured_up_to_the_backoff_cap_and_a_timeout_is_retried(
    ledger: Ledger, s3_seed: S3Seeder, s3_endpoint: Endpoint
) -> None:
    keys = [*OK[:2], THROTTLED, GREEDY, SLOW]
    bucket = await seed(s3_seed, keys)
    async with HookEndpoint(answer_later) as hook:
        resource = hooked(
            s3_endpoint,
            bucket,
            bucket,
            hook.url,
            timeout="500ms",
            copy={"mode": "none"},
            retry={"attempts": 3, "backoff": {"initial": "20ms", "max": "2s"}},
        )

        result = await run(ledger, resource, s3_endpoint, secrets=with_token(s3_endpoint))

        assert result.outcome == "cut-over", result.status.conditions
        assert dict(hook.calls) == {OK[0]: 1, OK[1]: 1, THROTTLED: 2, GREEDY: 2, SLOW: 2}
        rows = await rows_of(ledger)
        assert all(r.hook_done_at is not None for r in rows.values())
        # The held call is answered only when the endpoint closes, after the run: its retry
        # came from the hook's timeout (the object's, 1h by default, would have outlasted
        # the test).
        # The second call came no sooner than asked (the backoff alone is 20 ms) and, for
        # an hour asked, no later than the cap: the run is over.
        waited = {k: hook.times[k][1] - hook.times[k][0] for k in (THROTTLED, GREEDY)}
        assert waited[THROTTLED] >= 1.0
        assert waited[GREEDY] >= 2.0
