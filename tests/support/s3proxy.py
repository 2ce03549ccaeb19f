"""A fault-injecting HTTP reverse proxy for S3, for tests.

Point an S3 client at `S3FaultProxy.endpoint_url` instead of the real server: requests are
forwarded unchanged (method, raw path and query, headers including the Host the client
signed, streaming bodies), so SigV4 signatures stay valid and MinIO accepts them. Rules,
changeable while the test runs, make chosen requests misbehave:

    proxy.add_rule(Fail(503, "SlowDown"), method="PUT", key="big/*", query={"partNumber": "2"})
    proxy.add_rule(Reset(), method="GET", times=1)
    proxy.add_rule(Truncate(1024), method="GET", key="obj")
    proxy.add_rule(RewriteHeaders({"x-amz-restore": 'ongoing-request="true"'}), method="HEAD",
                   seconds=5)
    proxy.add_rule(Deny(), method="PUT", key="secret/**")

Only path-style addressing is understood (`/bucket/key`), which is what the tests use.
The proxy runs its own event loop in a daemon thread, so it works from sync and async tests
alike and never blocks the client's loop.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

# Headers that describe one hop, not the message; never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        # Expect is not signed by SigV4 (botocore excludes it), and our server side
        # already answered the 100-continue handshake with the client.
        "expect",
    }
)


# ------------------------------------------------------------------------------ actions


@dataclass(frozen=True)
class Fail:
    """Answer with an S3 error document instead of forwarding."""

    status: int = 500
    code: str = "InternalError"
    message: str = "injected by the test proxy"


def Deny(message: str = "Access Denied (injected)") -> Fail:
    """403 AccessDenied, as a bucket policy denying the request would answer."""
    return Fail(403, "AccessDenied", message)


def SlowDown() -> Fail:
    """503 SlowDown, S3's throttling answer."""
    return Fail(503, "SlowDown", "Please reduce your request rate.")


@dataclass(frozen=True)
class Reset:
    """Drop the connection without answering (after reading `read_body` request bytes)."""

    read_body: int = 0


@dataclass(frozen=True)
class Truncate:
    """Forward, but cut the response body after `after` bytes and drop the connection."""

    after: int = 0


@dataclass(frozen=True)
class RewriteHeaders:
    """Forward, then set (or with value None remove) response headers."""

    headers: Mapping[str, str | None]


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before forwarding."""

    seconds: float


Action = Fail | Reset | Truncate | RewriteHeaders | Delay


# -------------------------------------------------------------------------------- rules


@dataclass
class Rule:
    """When a request matches, apply `action`.

    `method` None = any; `bucket` / `key` are fnmatch globs (`*` crosses `/` here) on the
    decoded path-style bucket and key; `query` maps parameter names to required values
    (None = present with any value); `header` names a request header that must be present
    (any value). `times` limits how often the rule fires; `seconds` limits for how long
    after it was added.
    """

    action: Action
    method: str | None = None
    bucket: str | None = None
    key: str | None = None
    query: Mapping[str, str | None] = field(default_factory=dict)
    header: str | None = None
    times: int | None = None
    seconds: float | None = None
    hits: int = 0
    added: float = field(default_factory=time.monotonic)

    def active(self, now: float) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return not (self.seconds is not None and now - self.added > self.seconds)

    def matches(
        self,
        method: str,
        bucket: str,
        key: str,
        query: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.header is not None and self.header.lower() not in {
            name.lower() for name in (headers or {})
        }:
            return False
        if self.bucket is not None and not fnmatch.fnmatchcase(bucket, self.bucket):
            return False
        if self.key is not None and not fnmatch.fnmatchcase(key, self.key):
            return False
        for name, value in self.query.items():
            if name not in query:
                return False
            if value is not None and query[name] != value:
                return False
        return True


@dataclass(frozen=True)
class SeenRequest:
    """A request as the proxy received it (for assertions on what the client sent)."""

    method: str
    bucket: str
    key: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    action: str | None


def _split_path(raw_path: str) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit(raw_path)
    path = unquote(parts.path).lstrip("/")
    bucket, _, key = path.partition("/")
    return bucket, key, dict(parse_qsl(parts.query, keep_blank_values=True))


def _error_body(fail: Fail, bucket: str, key: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{fail.code}</Code><Message>{fail.message}</Message>"
        f"<BucketName>{bucket}</BucketName><Key>{key}</Key>"
        "<RequestId>objmig-proxy</RequestId></Error>"
    ).encode()


class S3FaultProxy:
    """The proxy. `start()` / `stop()`, or use it as a context manager."""

    def __init__(
        self, upstream: str, *, keep_requests: int = 10_000, upstream_ca: str | None = None
    ) -> None:
        """`upstream_ca`: the PEM CA an https upstream's certificate chains to."""
        self.upstream = upstream.rstrip("/")
        self.upstream_ca = upstream_ca
        self.keep_requests = keep_requests
        self.port: int | None = None
        self.requests: list[SeenRequest] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- rules, callable from any thread
    def add_rule(self, action: Action, **match: Any) -> Rule:
        """Add a rule (see `Rule`); the first active matching rule wins."""
        rule = Rule(action=action, **match)
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Remove every rule and forget seen requests."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()

    def seen(self, method: str | None = None, key: str | None = None) -> list[SeenRequest]:
        """Requests received, optionally filtered by method and key glob."""
        with self._lock:
            requests = list(self.requests)
        return [
            r
            for r in requests
            if (method is None or r.method == method.upper())
            and (key is None or fnmatch.fnmatchcase(r.key, key))
        ]

    def object_reads(self, bucket: str) -> dict[str, int]:
        """GETs of the objects of `bucket` (not listings, tag or attribute reads), per key."""
        reads: dict[str, int] = {}
        for request in self.seen("GET"):
            if (
                request.bucket == bucket
                and request.key
                and "tagging" not in request.query
                and "attributes" not in request.query
            ):
                reads[request.key] = reads.get(request.key, 0) + 1
        return reads

    def _pick(
        self,
        method: str,
        bucket: str,
        key: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.active(now) and rule.matches(method, bucket, key, query, headers):
                    rule.hits += 1
                    return rule
        return None

    # -- lifecycle
    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("proxy not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3FaultProxy:
        self._thread = threading.Thread(target=self._run, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("fault proxy did not start")
        if self._startup_error is not None:
            raise RuntimeError("fault proxy did not start") from self._startup_error
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(30)
        self._loop = None

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Stopping must not wait for requests a Delay rule is holding.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # the bound socket tells us the port we got
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(
                limit=0,
                ssl=ssl.create_default_context(cadata=self.upstream_ca)
                if self.upstream_ca
                else True,
            ),
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding", "Accept"),
        )

    async def _shutdown(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the proxy itself
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        bucket, key, query = _split_path(request.raw_path)
        rule = self._pick(request.method, bucket, key, query, request.headers)
        action = rule.action if rule is not None else None
        with self._lock:
            if len(self.requests) < self.keep_requests:
                self.requests.append(
                    SeenRequest(
                        method=request.method,
                        bucket=bucket,
                        key=key,
                        query=query,
                        headers=dict(request.headers),
                        action=type(action).__name__ if action is not None else None,
                    )
                )

        if isinstance(action, Fail):
            await request.read()
            body = b"" if request.method == "HEAD" else _error_body(action, bucket, key)
            return web.Response(
                status=action.status,
                body=body,
                headers={"Content-Type": "application/xml", "x-amz-request-id": "objmig-proxy"},
            )
        if isinstance(action, Reset):
            if action.read_body:
                await request.content.read(action.read_body)
            assert request.transport is not None
            request.transport.abort()
            # Nothing reaches the client; aiohttp needs a response object regardless.
            return web.Response(status=500)
        if isinstance(action, Delay):
            await asyncio.sleep(action.seconds)
        return await self._forward(request, action)

    async def _forward(self, request: web.Request, action: Action | None) -> web.StreamResponse:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        has_body = request.body_exists
        data: Any = None
        if has_body:
            data = request.content.iter_any()
            if "Content-Length" not in request.headers:
                # A chunked upload stays chunked.
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        async with self._session.request(
            request.method,
            # The raw path is already encoded exactly as the client signed it.
            URL(f"{self.upstream}{request.raw_path}", encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
            skip_auto_headers=("Content-Type",),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            if isinstance(action, RewriteHeaders):
                for name, new in action.headers.items():
                    response.headers.popall(name, None)
                    if new is not None:
                        response.headers[name] = new
            await response.prepare(request)
            if request.method == "HEAD":
                await response.write_eof()
                return response
            limit = action.after if isinstance(action, Truncate) else None
            sent = 0
            async for chunk in upstream.content.iter_any():
                if limit is not None and sent + len(chunk) >= limit:
                    await response.write(chunk[: limit - sent])
                    assert request.transport is not None
                    # Let the partial body leave, then drop the connection mid-body.
                    await asyncio.sleep(0.05)
                    request.transport.abort()
                    return response
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response
