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
    gate = Hold()
    proxy.add_rule(gate, method="GET", key="obj")   # ... await gate.arrived(); gate.release()
    proxy.add_rule(LoseAnswer(), method="POST", query={"uploadId": None}, times=1)
    proxy.add_rule(Reset(), probability=0.05)          # drawn from the proxy's seeded RNG
    add_fault_mix(proxy, rate=0.05)                   # 5% of each kind of fault

A `Hold` keeps matching requests until the test releases them: the test waits for the
request to arrive and lets it go when it has done what had to happen meanwhile, where a
`Delay` would bet that the rest is done within some seconds.

Only path-style addressing is understood (`/bucket/key`), which is what the tests use.
The proxy runs its own event loop in a daemon thread, so it works from sync and async tests
alike and never blocks the client's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
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


@dataclass(frozen=True)
class Answer:
    """Answer with this status, body and headers instead of forwarding: a store that says
    something else than the one behind the proxy would (e.g. tags it did not keep)."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


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
class LoseAnswer:
    """Forward the request and let the store act on it, then drop the connection instead
    of passing its answer on: a write that happened, whose client cannot know it."""


@dataclass(frozen=True)
class RewriteHeaders:
    """Forward, then set (or with value None remove) response headers."""

    headers: Mapping[str, str | None]


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before forwarding: a slow server. Never use it to order events in a
    test (that is a bet on the machine's speed); use `Hold`."""

    seconds: float


class Hold:
    """Keep matching requests until `release()`, then forward them.

    `await hold.arrived(n)` returns once `n` requests have reached the hold (held, or let
    through after the release). Every method may be called from any thread; the proxy runs
    its own loop. Removing the rule (or clearing the proxy) releases it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._released = False
        self._arrivals = 0
        self._held = 0
        # Held requests, each a future in the proxy's loop.
        self._gates: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # Callers of `arrived`, each a future in its own loop, with the count it waits for.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], int]] = []

    @property
    def arrivals(self) -> int:
        """Requests that reached the hold so far."""
        with self._cond:
            return self._arrivals

    @property
    def held(self) -> int:
        """Requests held right now."""
        with self._cond:
            return self._held

    @property
    def released(self) -> bool:
        with self._cond:
            return self._released

    def release(self) -> None:
        """Let every held request through, and every later one at once."""
        with self._cond:
            self._released = True
            gates, self._gates = self._gates, []
        for loop, gate in gates:
            _resolve_threadsafe(loop, gate)

    async def arrived(self, count: int = 1, patience: float = 120.0) -> None:
        """Wait until `count` requests have reached the hold (AssertionError after
        `patience` seconds: a guard against a hang, not a measure)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._cond:
            if self._arrivals >= count:
                return
            entry = (loop, future, count)
            self._waiters.append(entry)
        try:
            async with asyncio.timeout(patience):
                await future
        except TimeoutError:
            raise AssertionError(
                f"{count} request(s) expected at the hold within {patience:g} s, "
                f"{self.arrivals} came"
            ) from None
        finally:
            with self._cond:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    def wait_arrived(self, count: int = 1, patience: float = 120.0) -> None:
        """`arrived` for synchronous callers."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._arrivals >= count, patience):
                raise AssertionError(
                    f"{count} request(s) expected at the hold within {patience:g} s, "
                    f"{self._arrivals} came"
                )

    async def _pass(self) -> None:
        """In the proxy's loop: count the request, and wait while the hold is closed."""
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[None] = loop.create_future()
        with self._cond:
            self._arrivals += 1
            ready = [w for w in self._waiters if self._arrivals >= w[2]]
            for waiter in ready:
                self._waiters.remove(waiter)
            self._cond.notify_all()
            closed = not self._released
            if closed:
                self._gates.append((loop, gate))
                self._held += 1
        for waiter_loop, waiter, _ in ready:
            _resolve_threadsafe(waiter_loop, waiter)
        if not closed:
            return
        try:
            await gate
        finally:
            with self._cond:
                self._held -= 1


def _resolve_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    # A closed loop raises: nobody is waiting there any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(resolve)


Action = Fail | Reset | Truncate | RewriteHeaders | Delay | Hold | LoseAnswer | Answer


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


#: A `Rule.query` value: the request must not have this parameter.
ABSENT = _Absent()


# -------------------------------------------------------------------------------- rules


@dataclass
class Rule:
    """When a request matches, apply `action`.

    `method` None = any; `bucket` / `key` are fnmatch globs (`*` crosses `/` here) on the
    decoded path-style bucket and key; `query` maps parameter names to required values
    (None = present with any value, ABSENT = not present); `header` names a request header
    that must be present (any value). `times` limits how often the rule fires; `seconds`
    limits for how long after it was added (by the proxy's clock); `probability` makes a
    matching request fire it by chance (drawn from the proxy's seeded random generator; a
    request it spares goes on to the next rule); `once_each` fires it once per distinct
    request (method, bucket, key and query), so that what a client sends again gets through.
    """

    action: Action
    method: str | None = None
    bucket: str | None = None
    key: str | None = None
    query: Mapping[str, str | _Absent | None] = field(default_factory=dict)
    header: str | None = None
    times: int | None = None
    seconds: float | None = None
    probability: float | None = None
    once_each: bool = False
    hits: int = 0
    added: float = field(default_factory=time.monotonic)
    fired_for: set[tuple[str, str, str, tuple[tuple[str, str], ...]]] = field(default_factory=set)

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
            if value is ABSENT:
                if name in query:
                    return False
                continue
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
        self,
        upstream: str,
        *,
        keep_requests: int = 10_000,
        upstream_ca: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
    ) -> None:
        """`upstream_ca`: the PEM CA an https upstream's certificate chains to."""
        self.upstream = upstream.rstrip("/")
        self.upstream_ca = upstream_ca
        self.keep_requests = keep_requests
        # What rules' `seconds` are measured by; a test of expiry sets its own.
        self.clock = clock
        self._closing = False
        self._random = random.Random(seed)
        self.port: int | None = None
        #: Requests received in all (`requests` keeps the first `keep_requests` of them).
        self.received = 0
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
        rule = Rule(action=action, **match, added=self.clock())
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        """Remove a rule; a `Hold` lets what it holds through."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)
        if isinstance(rule.action, Hold):
            rule.action.release()

    def clear(self) -> None:
        """Remove every rule (releasing holds) and forget seen requests."""
        with self._lock:
            rules, self._rules = self._rules, []
            self.requests.clear()
        for rule in rules:
            if isinstance(rule.action, Hold):
                rule.action.release()

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
            reads_bytes = not {"tagging", "attributes"} & request.query.keys()
            if request.bucket == bucket and request.key and reads_bytes:
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
        now = self.clock()
        with self._lock:
            for rule in self._rules:
                if rule.active(now) and rule.matches(method, bucket, key, query, headers):
                    if rule.probability is not None and self._random.random() >= rule.probability:
                        continue
                    if rule.once_each:
                        request = (method, bucket, key, tuple(sorted(query.items())))
                        if request in rule.fired_for:
                            continue
                        rule.fired_for.add(request)
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
        # Requests still held are dropped, not forwarded: their clients are gone or going.
        self._closing = True
        with self._lock:
            holds = [r.action for r in self._rules if isinstance(r.action, Hold)]
        for hold in holds:
            hold.release()
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
        # Stopping must not wait for requests a Delay rule is keeping.
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
            self.received += 1
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
        if isinstance(action, Answer):
            await request.read()
            return web.Response(
                status=action.status,
                body=b"" if request.method == "HEAD" else action.body,
                headers={"x-amz-request-id": "objmig-proxy", **action.headers},
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
        if isinstance(action, Hold):
            await action._pass()
            transport = request.transport
            if self._closing or transport is None or transport.is_closing():
                # The client gave up meanwhile (or the proxy is stopping): forwarding now
                # would write for nobody, possibly an object nobody is still copying.
                if transport is not None:
                    transport.abort()
                return web.Response(status=500)
        if isinstance(action, LoseAnswer):
            await self._forward_and_drop(request)
            return web.Response(status=500)  # never sent: the connection is gone
        return await self._forward(request, action)

    async def _forward_and_drop(self, request: web.Request) -> None:
        async with self._upstream_request(request) as upstream:
            await upstream.read()
        assert request.transport is not None
        request.transport.abort()

    @contextlib.asynccontextmanager
    async def _upstream_request(
        self, request: web.Request
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The request sent upstream: its headers and body as the client signed them."""
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        data: Any = None
        if request.body_exists:
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
            yield upstream

    async def _forward(self, request: web.Request, action: Action | None) -> web.StreamResponse:
        async with self._upstream_request(request) as upstream:
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
                    transport = request.transport
                    assert transport is not None
                    # Let the partial body leave the proxy (the kernel has it once the
                    # transport's buffer is empty), then drop the connection mid-body.
                    deadline = time.monotonic() + 30
                    # No event says "buffer empty" (drain waits only for the low mark).
                    while transport.get_write_buffer_size() and time.monotonic() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.005)
                    transport.abort()
                    return response
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response


#: The faults a store's clients meet, by request kind: any request may fail with a 500,
#: be throttled or be reset; a GET's body may be cut short; a write's answer may be lost
#: after the store acted on it.
FAULT_KINDS: tuple[tuple[str, Action, str | None], ...] = (
    ("500 InternalError", Fail(500, "InternalError"), None),
    ("503 SlowDown", SlowDown(), None),
    ("connection reset", Reset(), None),
    ("truncated body", Truncate(256), "GET"),
    ("lost answer", LoseAnswer(), "PUT"),
    ("lost answer", LoseAnswer(), "POST"),
    ("lost answer", LoseAnswer(), "DELETE"),
)


def add_fault_mix(proxy: S3FaultProxy, rate: float, **match: Any) -> list[tuple[str, Rule]]:
    """Make `rate` of the requests meet each kind of fault of `FAULT_KINDS` (a request
    meets at most one; each rule is drawn only for the requests the rules before it
    spared, hence the rising probabilities). Returns the rules, named by kind."""
    rules: list[tuple[str, Rule]] = []
    spent: dict[str | None, float] = {}
    for name, action, method in FAULT_KINDS:
        # The share of this method's requests the rules before this one took.
        before = spent.get(method, 0.0) + (spent.get(None, 0.0) if method else 0.0)
        probability = rate / (1 - before)
        rule = proxy.add_rule(action, method=method, probability=probability, **match)
        rules.append((name, rule))
        spent[method] = spent.get(method, 0.0) + rate
    return rules
