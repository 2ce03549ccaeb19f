"""Client CPU per request: aiohttp.ClientSession against objmig.storage.http1.HttpPool.

    .venv/bin/python benchmarks/http_client_bench.py                 # 20,000 requests a row
    .venv/bin/python benchmarks/http_client_bench.py --requests 50000 --concurrency 32

A minimal HTTP/1.1 server runs in a child process (its CPU is not counted) and answers
``HEAD /x`` and ``PUT /x`` (16 KiB body) with 200 and a few S3-like headers. The client side
sends the headers `s3http.py` sends for such requests (host, x-amz-date,
x-amz-content-sha256, authorization, content-length) from `--concurrency` coroutines over one
pool of as many connections, first unmeasured (warm-up: connections opened, caches filled),
then measured: CPU seconds of this process (`time.process_time`) divided by the requests
made. Each client runs on the default asyncio loop and on uvloop, in a fresh loop per row.

aiohttp is driven the way `s3http.py` drives it: `session.request` with an encoded `URL`,
`skip_auto_headers=("Content-Type", "Accept-Encoding")`, `auto_decompress=False`, no
per-request timeout beyond the session's connect / sock_read ones.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from importlib.metadata import version
from typing import Any

import aiohttp
import uvloop
from yarl import URL

from objmig.storage.http1 import HttpPool

BODY = b"\x5a" * (16 * 1024)
_ANSWER_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"x-amz-id-2: hVbD0p9pS2F6wq2gQm0bV5o0Zl3Ck1X0b5yVqH4hIUu9w9fK1gU=\r\n"
    b"x-amz-request-id: 17E2F3C4A5B6C7D8\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b'ETag: "5d41402abc4b2a76b9719d911017c592"\r\n'
    b"Server: bench\r\n"
)
HEAD_ANSWER = (
    _ANSWER_HEAD + b"Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 16384\r\n\r\n"
)
PUT_ANSWER = _ANSWER_HEAD + b"Content-Length: 0\r\n\r\n"


# -- the server (child process) --------------------------------------------------------------


class _Server(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buf[:end]).lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end >= 0 else None])
            if len(buf) < end + 4 + length:
                break
            del buf[: end + 4 + length]
            out.append(HEAD_ANSWER if head.startswith(b"head ") else PUT_ANSWER)
        if out:
            self.transport.write(b"".join(out))


def serve() -> None:
    uvloop.install()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Server, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        # Until the parent closes our stdin.
        await loop.run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


# -- the clients ------------------------------------------------------------------------------


def _headers(host: str, method: str) -> dict[str, str]:
    headers = {
        "host": host,
        "x-amz-date": "20240101T000000Z",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/"
            "aws4_request, SignedHeaders=content-length;host;x-amz-content-sha256;x-amz-date, "
            "Signature=" + "0" * 64
        ),
    }
    if method == "PUT":
        headers["content-length"] = str(len(BODY))
    return headers


Client = Callable[[str, int, int, int], Coroutine[Any, Any, None]]


async def run_aiohttp(method: str, port: int, concurrency: int, count: int) -> None:
    host = f"127.0.0.1:{port}"
    headers = _headers(host, method)
    del headers["host"]  # aiohttp derives Host from the URL (as in s3http.py)
    url = URL(f"http://{host}/x", encoded=True)
    body = BODY if method == "PUT" else None
    connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, connect=60, sock_read=300)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:

        async def worker(n: int) -> None:
            for _ in range(n):
                async with session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    skip_auto_headers=("Content-Type", "Accept-Encoding"),
                    auto_decompress=False,
                ) as response:
                    assert response.status == 200
                    await response.read()

        await _measured(worker, concurrency, count)


async def run_http1(method: str, port: int, concurrency: int, count: int) -> None:
    host = f"127.0.0.1:{port}"
    headers = _headers(host, method)
    body = BODY if method == "PUT" else None
    async with HttpPool(scheme="http", limit=concurrency) as pool:

        async def worker(n: int) -> None:
            for _ in range(n):
                async with pool.request(method, host, "/x", headers, body) as response:
                    assert response.status == 200
                    await response.read()

        await _measured(worker, concurrency, count)


_RESULT: dict[str, float] = {}


async def _measured(worker: Callable[[int], Awaitable[None]], concurrency: int, count: int) -> None:
    per_worker = max(1, count // concurrency)
    await asyncio.gather(*(worker(max(1, per_worker // 10)) for _ in range(concurrency)))
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    _RESULT["cpu"] = time.process_time() - cpu
    _RESULT["wall"] = time.perf_counter() - wall
    _RESULT["requests"] = per_worker * concurrency


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=20_000, help="measured requests per row")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve()
        return 0

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        clients: list[tuple[str, Client]] = [("aiohttp", run_aiohttp), ("HttpPool", run_http1)]
        loops = [("asyncio", asyncio.new_event_loop), ("uvloop", uvloop.new_event_loop)]
        print(
            f"{args.requests} requests per row, {args.concurrency} concurrent, "
            f"Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, "
            f"uvloop {version('uvloop')}"
        )
        print(f"{'client':<9} {'loop':<8} {'op':<9} {'CPU us/req':>10} {'req/s':>8}")
        for method, label in (("HEAD", "HEAD"), ("PUT", "PUT 16K")):
            for client_name, client in clients:
                for loop_name, factory in loops:
                    with asyncio.Runner(loop_factory=factory) as runner:
                        runner.run(client(method, port, args.concurrency, args.requests))
                    cpu_us = _RESULT["cpu"] / _RESULT["requests"] * 1e6
                    rate = _RESULT["requests"] / _RESULT["wall"]
                    print(
                        f"{client_name:<9} {loop_name:<8} {label:<9} {cpu_us:>10.1f} {rate:>8.0f}"
                    )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
