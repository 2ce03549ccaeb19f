"""A real HTTP endpoint for per-object hooks: an aiohttp server on loopback that records
every call and answers as the test decides, per object key and call number."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

#: (status, body) for the n-th call (from 1) about a key.
Answer = Callable[[str, int], tuple[int, str]]


def always_ok(_key: str, _call: int) -> tuple[int, str]:
    return 200, "ok"


class HookEndpoint:
    """``async with HookEndpoint(answer) as hook:`` then POST documents to ``hook.url``."""

    def __init__(self, answer: Answer = always_ok) -> None:
        self._answer = answer
        self.calls: Counter[str] = Counter()
        self.documents: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        key = document["source"]["key"]
        self.calls[key] += 1
        self.documents.append(document)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        status, body = self._answer(key, self.calls[key])
        return web.Response(status=status, text=body)

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
        if self._runner is not None:
            await self._runner.cleanup()
