"""A real HTTP endpoint for per-object hooks: an aiohttp server on loopback that records
every call and answers as the test decides, per object key and call number."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

#: (status, body) or (status, body, headers) for the n-th call (from 1) about a key, or
#: HOLD: no answer until the endpoint closes (a caller's timeout runs out first).
Reply = tuple[int, str] | tuple[int, str, Mapping[str, str]]
Answer = Callable[[str, int], "Reply | None"]
HOLD = None


def always_ok(_key: str, _call: int) -> tuple[int, str]:
    return 200, "ok"


class HookEndpoint:
    """``async with HookEndpoint(answer) as hook:`` then POST documents to ``hook.url``."""

    def __init__(self, answer: Answer = always_ok) -> None:
        self._answer = answer
        self.calls: Counter[str] = Counter()
        self.documents: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        #: time.monotonic() of each call, per key.
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        key = document["source"]["key"]
        self.calls[key] += 1
        self.times[key].append(time.monotonic())
        self.documents.append(document)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        reply = self._answer(key, self.calls[key])
        if reply is HOLD:
            await self._closing.wait()
            return web.Response(status=503, text="closing")
        status, body, *extra = reply
        return web.Response(status=status, text=body, headers=extra[0] if extra else None)

    async def __aenter__(self) -> HookEndpoint:
        app = web.Application()
        app.router.add_post("/objects", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/objects"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()


class ThreadedHookEndpoint:
    """A `HookEndpoint` serving from a thread of its own: for tests whose event loop blocks
    (waiting on the control plane) while worker pods call the hook."""

    def __init__(self, answer: Answer = always_ok) -> None:
        self.endpoint = HookEndpoint(answer)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> HookEndpoint:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.endpoint.__aenter__(), self._loop).result(30)
        return self.endpoint

    def __exit__(self, *exc: object) -> None:
        done = asyncio.run_coroutine_threadsafe(
            self.endpoint.__aexit__(None, None, None), self._loop
        )
        done.result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
