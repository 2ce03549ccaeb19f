"""The floor of an aiobotocore copier: GET + PUT per object and nothing else (no ledger).

Run by benchmarks/copy_bench.py as the ``floor`` tool, with objmig's S3 client
(`objmig.storage.endpoint.open_client`) and the same concurrency, so the difference between
this row and objmig's shows what objmig's extra requests and its ledger cost, and the
difference between this row and rclone's shows what the Python SDK itself costs.

Per object: ListObjectsV2 (shared), then GetObject + PutObject for single-part objects, or
CreateMultipartUpload + (GetObject Range + UploadPart) per part + CompleteMultipartUpload for
objects larger than --part-size (same part size as the source, so ETags match). No HEADs, no
tags, no metadata, no verification beyond the ETag PutObject / Complete returns.

    .venv/bin/python benchmarks/floor_copy.py --endpoint URL --access-key A --secret-key S \\
        --source SRC --target DST --concurrency 32 --part-concurrency 4 --part-size 8388608
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

from objmig.storage.endpoint import Credentials, Endpoint
from objmig.storage.sdk import open_client


async def copy_all(args: argparse.Namespace) -> int:
    endpoint = Endpoint(
        url=args.endpoint,
        region="us-east-1",
        addressing_style="path",
        credentials=Credentials(args.access_key, args.secret_key),
    )
    connections = args.concurrency * args.part_concurrency + 4
    async with open_client(endpoint, connections) as s3:
        objects: list[tuple[str, int, str]] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=args.source):
            for item in page.get("Contents", []):
                objects.append((item["Key"], int(item["Size"]), item["ETag"].strip('"')))
        slots = asyncio.Semaphore(args.concurrency)
        failures = 0

        async def single(key: str) -> None:
            response = await s3.get_object(Bucket=args.source, Key=key)
            body = await response["Body"].read()
            await s3.put_object(Bucket=args.target, Key=key, Body=body)

        async def multipart(key: str, size: int) -> None:
            upload = await s3.create_multipart_upload(Bucket=args.target, Key=key)
            upload_id = upload["UploadId"]
            part_slots = asyncio.Semaphore(args.part_concurrency)

            async def part(number: int) -> CompletedPartTypeDef:
                start = (number - 1) * args.part_size
                end = min(size, start + args.part_size) - 1
                async with part_slots:
                    response = await s3.get_object(
                        Bucket=args.source, Key=key, Range=f"bytes={start}-{end}"
                    )
                    body = await response["Body"].read()
                    done = await s3.upload_part(
                        Bucket=args.target,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                    )
                return {"PartNumber": number, "ETag": done["ETag"]}

            count = -(-size // args.part_size)
            parts = await asyncio.gather(*(part(n) for n in range(1, count + 1)))
            await s3.complete_multipart_upload(
                Bucket=args.target,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)},
            )

        async def one(key: str, size: int, etag: str) -> None:
            nonlocal failures
            async with slots:
                try:
                    if "-" in etag and size > args.part_size:
                        await multipart(key, size)
                    else:
                        await single(key)
                except Exception as exc:
                    failures += 1
                    print(f"{key}: {exc}", file=sys.stderr)

        await asyncio.gather(*(one(*o) for o in objects))
        print(f"copied {len(objects) - failures} of {len(objects)} objects")
        return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--part-concurrency", type=int, default=4)
    p.add_argument("--part-size", type=int, default=8 * 1024 * 1024)
    return asyncio.run(copy_all(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
