"""The scan's parallel listing against real S3 servers: the same keys, in the same order,
as one plain listing, whatever the layout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from objmig.storage.fanout import list_fanned_out
from objmig.storage.store import open_store
from tests.fixtures.s3 import S3Backend, S3Seeder

# Keys chosen where a merge of levels could go wrong: keys beside common prefixes that
# sort before ('a.txt' < 'a/'), between and after them ('a0' > 'a/...'), a directory
# marker, keys several levels deep, non-ASCII keys (UTF-8 byte order), an empty level.
KEYS = [
    "a.txt",
    "a/1",
    "a/2/x",
    "a/2/y",
    "a/3/",
    "a0",
    "b/c/d/e/f",
    "b/c/d/g",
    "b/h",
    "top",
    "z/é/1",
    "z/ü",
    "zz",
]


@pytest.mark.parametrize("fan_out", [2, 16])
@pytest.mark.parametrize("prefix", ["", "a/", "b/c/", "nothing/"])
async def test_the_fanned_out_listing_equals_one_plain_listing(
    s3_backend: S3Backend, backend_seed: S3Seeder, prefix: str, fan_out: int
) -> None:
    bucket = await backend_seed.bucket()
    await asyncio.gather(*(backend_seed.put_object(bucket, k, 1 + i) for i, k in enumerate(KEYS)))

    async with open_store(s3_backend.endpoint) as store:
        plain = [i async for i in store.http.list_objects(bucket, prefix)]
        fanned = [i async for i in list_fanned_out(store.http, bucket, prefix, fan_out=fan_out)]

    assert [i.key for i in fanned] == [i.key for i in plain]
    assert [(i.size, i.etag) for i in fanned] == [(i.size, i.etag) for i in plain]
    assert [i.key for i in fanned] == sorted(
        (k for k in KEYS if k.startswith(prefix)), key=lambda k: k.encode()
    )


async def test_subtrees_are_listed_side_by_side_in_pages(
    s3_backend: S3Backend, backend_seed: S3Seeder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each subtree pages through its own listing while the others run."""
    bucket = await backend_seed.bucket()
    keys = [f"p{p}/k{k:02d}" for p in range(4) for k in range(5)]
    await asyncio.gather(*(backend_seed.put_object(bucket, key, 3) for key in keys))
    pages: list[str] = []

    async with open_store(s3_backend.endpoint) as store:
        list_page = store.http.list_page

        async def recorded(bucket: str, prefix: str = "", **kwargs: Any) -> Any:
            pages.append(prefix)
            return await list_page(bucket, prefix, **kwargs)

        # A spy on the real client (the server answers): which subtree each page was for.
        monkeypatch.setattr(store.http, "list_page", recorded)
        fanned = [
            i.key async for i in list_fanned_out(store.http, bucket, "", fan_out=4, page_size=2)
        ]

    assert fanned == keys
    # Each subtree on its own listing, in pages of two: 3 pages of 5 keys each ...
    assert sorted(pages) == sorted(f"p{p}/" for p in range(4) for _ in range(3))
    # ... side by side: the last subtree's first page came before the first's last one.
    assert pages.index("p3/") < len(pages) - 1 - pages[::-1].index("p0/")
