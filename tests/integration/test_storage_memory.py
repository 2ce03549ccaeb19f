"""A streamed copy holds parts read ahead, never the object: peak Python allocations stay
within the read-ahead budget plus a few chunks, far below the object's size, with and
without the SHA-256."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from objmig.storage import CopyOptions, SourceObject, TargetObject, copy_object
from objmig.storage.streaming import ReadAhead
from tests.fixtures.s3 import S3Seeder

MiB = 1024 * 1024
OBJECT = 256 * MiB
PART = 8 * MiB
CONCURRENCY = 4


@pytest.mark.slow
@pytest.mark.parametrize("compute_sha256", [False, True], ids=["plain", "sha256"])
@pytest.mark.parametrize("budget", [0, 3 * PART], ids=["no-read-ahead", "read-ahead"])
async def test_streamed_copy_memory_stays_bounded_by_the_read_ahead(
    s3_http, s3_seed: S3Seeder, compute_sha256: bool, budget: int
) -> None:
    src, dst = await s3_seed.bucket(), await s3_seed.bucket()
    obj = await s3_seed.put_multipart(src, "huge", [PART] * (OBJECT // PART), seed="mem")
    gc.collect()

    tracemalloc.start()
    try:
        result = await copy_object(
            s3_http,
            s3_http,
            SourceObject(src, "huge", etag=obj.etag, size=obj.size),
            TargetObject(dst, "huge"),
            CopyOptions(
                part_concurrency=CONCURRENCY,
                compute_sha256=compute_sha256,
                read_ahead=ReadAhead(budget),
            ),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.etag == obj.etag
    if compute_sha256:
        assert result.sha256 == obj.sha256
    # The parts held, the one being joined from its chunks, and a few chunks per stream
    # (measured: 5 MiB without read-ahead, 36 MiB with 24 MiB of it).
    bound = budget + PART + 12 * MiB
    assert peak < bound, f"peak {peak / MiB:.1f} MiB for a {OBJECT // MiB} MiB object"
    assert peak < OBJECT / 4
