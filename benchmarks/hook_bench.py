"""Benchmark of the per-object hook client: calls/s against a local endpoint.

Usage::

    .venv/bin/python benchmarks/hook_bench.py --calls 20000 --concurrency 32

The endpoint is an aiohttp server answering 200 at once, in a process of its own (so the
client's CPU is not shared with it), on loopback. The client is `objmig.engine.hooks`'s
`HookClient`, the one the workers use: each call POSTs an object's JSON document with its
Idempotency-Key and reads the answer, `concurrency` calls in flight (as a worker has up to
copy.concurrency * 2 objects). Printed: calls/s (wall clock), the client's CPU per call,
and the load average, because the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import time

from objmig.api.migration import PerObjectHook
from objmig.engine.hooks import HookClient

SERVER = """
import sys
from aiohttp import web

async def answer(request):
    await request.read()
    return web.Response(text="ok")

app = web.Application()
app.router.add_post("/objects", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    server = await asyncio.create_subprocess_exec(sys.executable, "-c", SERVER, str(port))
    try:
        await wait_listening(port)
        hook = PerObjectHook(url=f"http://127.0.0.1:{port}/objects")
        client = HookClient(hook, "token", limit=args.concurrency)
        document = {
            "migration": "bench/hooks",
            "source": {"bucket": "uploads", "key": "", "versionId": None},
            "target": {"bucket": "uploads", "key": "", "versionId": None},
            "size": 1024,
            "etag": "d41d8cd98f00b204e9800998ecf8427e",
            "checksum": None,
        }
        queue = iter(range(args.calls))

        async def caller() -> None:
            for index in queue:
                key = f"uploads/{index:08d}"
                await client.call({**document, "source": {**document["source"], "key": key}}, key)

        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        await client.close()
        used = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
        print(
            f"{args.calls:,} calls, {args.concurrency} in flight: {args.calls / elapsed:,.0f} "
            f"calls/s ({elapsed:.1f} s), client CPU {used / args.calls * 1e6:.0f} µs/call, "
            f"load {os.getloadavg()[0]:.1f}"
        )
    finally:
        server.terminate()
        await server.wait()


if __name__ == "__main__":
    asyncio.run(main())
