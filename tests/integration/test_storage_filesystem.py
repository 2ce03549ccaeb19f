"""A directory tree as a store, against real S3 servers (moto and MinIO): objects written
to a tree and copied back keep their bytes, part boundaries (so ETags), metadata, content
headers and tags; a plain tree copies to S3 with the MD5 of each file as its ETag."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from types_aiobotocore_s3 import S3Client

from objmig.storage.copy import CopyOptions, SourceObject, TargetObject, copy_object
from objmig.storage.filesystem import open_file_store
from objmig.storage.s3http import S3HttpClient
from tests.fixtures.s3 import S3Seeder

KiB = 1024


async def _tags(client: S3Client, bucket: str, key: str) -> dict[str, str]:
    answer = await client.get_object_tagging(Bucket=bucket, Key=key)
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


async def test_objects_go_to_a_tree_and_back_as_they_were(
    backend_seed: S3Seeder, backend_http: S3HttpClient, backend_client: S3Client, tmp_path: Path
) -> None:
    source = await backend_seed.bucket()
    back = await backend_seed.bucket()
    part = max(backend_seed.backend.min_part_size, 64 * KiB)
    seeded = [
        await backend_seed.put_object(
            source,
            "plain.txt",
            3000,
            metadata={"owner": "ann", "storage-version": "3"},
            tags={"team": "a b", "x": "1"},
            ContentType="text/plain",
            CacheControl="max-age=60",
        ),
        await backend_seed.put_multipart(
            source,
            "dir/big.bin",
            [part, part, 1000],
            metadata={"kind": "blob"},
            tags={"size": "big"},
            ContentType="application/x-big",
        ),
        await backend_seed.put_object(source, "spaces and ü/ä b.txt", 10),
        await backend_seed.put_object(source, "empty", b""),
    ]
    root = tmp_path / "tree"
    async with open_file_store(str(root), writable=True) as tree:
        for obj in seeded:
            head = await backend_http.head(source, obj.key)
            written = await tree.write(
                backend_http,
                SourceObject(bucket=source, key=obj.key, size=obj.size, etag=obj.etag),
                obj.key,
                CopyOptions(migration_tag="test/m"),
            )
            assert written.etag == obj.etag, obj.key
            assert written.layout_kept
            assert written.sha256 == obj.sha256
            on_disk = (root / obj.key).read_bytes()
            assert hashlib.sha256(on_disk).hexdigest() == obj.sha256
            assert os.stat(root / obj.key).st_mtime == head.last_modified.timestamp()
            described = await tree.http.head("", obj.key, checksums=True)
            assert described.etag == obj.etag
            assert dict(described.metadata) == dict(obj.metadata)
            assert described.content.content_type == head.content.content_type
            assert described.whole_checksums() == {"SHA256": f"sha256:{obj.sha256}"}

    # Another process, another day: the tree is read back through its index alone.
    async with open_file_store(str(root), writable=False) as tree:
        for obj in seeded:
            copied = await copy_object(
                tree.http,
                backend_http,
                SourceObject(bucket="", key=obj.key, size=obj.size, etag=obj.etag),
                TargetObject(back, obj.key),
                CopyOptions(),
            )
            assert copied.etag == obj.etag, obj.key
            head = await backend_http.head(back, obj.key)
            original = await backend_http.head(source, obj.key)
            assert dict(head.metadata) == dict(original.metadata)
            assert head.content == original.content
            assert await _tags(backend_client, back, obj.key) == dict(obj.tags)
            assert await backend_seed.get_bytes(back, obj.key) == await backend_seed.get_bytes(
                source, obj.key
            )


async def test_a_plain_tree_copies_with_each_files_md5_as_its_etag(
    backend_http: S3HttpClient, backend_seed: S3Seeder, tmp_path: Path
) -> None:
    target = await backend_seed.bucket()
    root = tmp_path / "plain"
    (root / "docs").mkdir(parents=True)
    files = {"docs/readme.md": b"# hello\n", "photo.jpg": os.urandom(200 * KiB)}
    for key, data in files.items():
        (root / key).write_bytes(data)
    async with open_file_store(str(root), writable=False) as tree:
        listed = [info async for info in tree.http.list_objects("", "")]
        assert [i.key for i in listed] == ["docs/readme.md", "photo.jpg"]
        for info in listed:
            md5 = hashlib.md5(files[info.key], usedforsecurity=False).hexdigest()
            assert info.etag == md5
            copied = await copy_object(
                tree.http,
                backend_http,
                SourceObject(bucket="", key=info.key, size=info.size, etag=info.etag),
                TargetObject(target, info.key),
                CopyOptions(),
            )
            assert copied.etag == md5
            head = await backend_http.head(target, info.key)
            assert head.content.content_type in ("text/markdown", "image/jpeg")


async def test_a_file_changed_since_it_was_listed_is_refused_as_changed(
    s3_http: S3HttpClient, s3_seed: S3Seeder, tmp_path: Path
) -> None:
    target = await s3_seed.bucket()
    root = tmp_path / "plain"
    root.mkdir()
    (root / "f").write_bytes(b"before")
    async with open_file_store(str(root), writable=False) as tree:
        [info] = [i async for i in tree.http.list_objects("", "")]
        (root / "f").write_bytes(b"after!")
        with pytest.raises(Exception, match=r"ETag|size") as refused:
            await copy_object(
                tree.http,
                s3_http,
                SourceObject(bucket="", key="f", size=info.size, etag=info.etag),
                TargetObject(target, "f"),
                CopyOptions(),
            )
        assert type(refused.value).__name__ == "SourceChangedError"
