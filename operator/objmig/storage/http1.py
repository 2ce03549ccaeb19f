"""A lean HTTP/1.1 client on raw asyncio protocols, for the per-object S3 requests.

Why this exists: for small objects, aiohttp's client machinery (ClientSession tracing hooks,
the cookie jar, ClientRequest / ClientResponse objects, multidicts, a timer per request,
separate writes for head and body, a payload abstraction around every body) became the
largest CPU cost of the copy process once botocore was out of the way (see `s3http.py`).
An S3 request needs very little of HTTP: send a head and maybe a body with a known length,
read a status, headers and a body framed by Content-Length or chunked encoding, keep the
connection for the next request. This module does exactly that with as few allocations,
awaits and timers per request as it can:

* the request head is built as one bytes object and, for bodies up to 256 KiB, written
  together with the body in one `transport.write` (one send for a small PUT);
* responses are parsed from one bytearray per connection; a request waits on one future
  per wakeup, and the read timeout is a single lazily re-armed timer per connection, not a
  timer per request or per read;
* no task is created per request, and `request()` is a plain async context manager object.

What it deliberately does not do: proxies, cookies, redirects, authentication, content
(de)compression (bodies are bytes as sent), chunked *request* bodies (callers always send
Content-Length), `Expect: 100-continue` handshakes (interim 1xx answers are skipped, never
waited for), pipelining, HTTP/2, and DNS caching (an address is resolved only when a new
connection is opened, which keep-alive makes rare; names under `.localhost` are the
loopback interface, RFC 6761). It never adds a header of its own: the
caller sends Host and Content-Length itself.

Errors: connection-level failures raise `HttpConnectionError` subclasses (all builtin
`ConnectionError`s), connect failures may also surface as `OSError`, and timeouts as the
builtin `TimeoutError`: the three kinds the copy engine retries. `connect_timeout` covers
the TCP connect and the TLS handshake; `read_timeout` is the longest the client waits
without progress: no byte of the response, or (uploading a streamed body) no room in the
send buffer. A request on a reused connection that fails before any byte of an answer
arrived is sent once more on a new connection, unless its body is an async iterable (which
cannot be replayed).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterable, Mapping
from contextlib import AbstractAsyncContextManager, suppress
from types import TracebackType

from objmig.storage.endpoint import LOOPBACK, loopback_name
from objmig.storage.http1_connection import Connection, HttpResponse
from objmig.storage.http1_wire import (
    HttpConnectionError,
    HttpProtocolError,
    ServerDisconnectedError,
    build_head,
)

__all__ = [
    "HttpConnectionError",
    "HttpPool",
    "HttpProtocolError",
    "HttpResponse",
    "ServerDisconnectedError",
]


class _RequestContext:
    """What `HttpPool.request` returns: sends the request on entry, releases on exit."""

    __slots__ = ("_body", "_conn", "_headers", "_host", "_method", "_pool", "_response", "_target")

    def __init__(
        self,
        pool: HttpPool,
        method: str,
        host: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | AsyncIterable[bytes] | None,
    ) -> None:
        self._pool = pool
        self._method = method
        self._host = host
        self._target = target
        self._headers = headers
        self._body = body
        self._conn: Connection | None = None
        self._response: HttpResponse | None = None

    async def __aenter__(self) -> HttpResponse:
        pool = self._pool
        host = self._host
        body = self._body
        headers = self._headers
        head = build_head(self._method, self._target, headers)
        head_request = self._method == "HEAD"
        connection = headers.get("connection") or headers.get("Connection")
        request_close = connection is not None and "close" in connection.lower()
        conn = pool._take_idle(host)
        if conn is None:
            conn = await pool._acquire(host)
        self._conn = conn
        try:
            try:
                response = await conn.exchange(head, body, head_request, request_close)
            except ConnectionError:
                if (
                    not conn.served
                    or conn.got_data
                    or not (body is None or isinstance(body, (bytes, bytearray, memoryview)))
                ):
                    raise
                # A kept-alive connection the server had closed (or closed as the request
                # went out): nothing was answered, so sending it again is safe.
                self._conn = None
                pool._close_keeping_slot(conn)
                conn = await pool._connect(host)
                self._conn = conn
                response = await conn.exchange(head, body, head_request, request_close)
        except BaseException:
            failed = self._conn
            self._conn = None
            if failed is not None:
                pool._discard(failed)
            raise
        self._response = response
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # No await in here: a cancellation cannot interrupt the release half-way.
        conn = self._conn
        response = self._response
        self._conn = None
        self._response = None
        if response is not None:
            response._conn = None
        if conn is None:
            return
        if exc_type is None and conn.finish():
            self._pool._release(conn)
        else:
            # Unread body or an error: the connection's state is unknown, never drain it.
            # A complete answer the server did not want to keep alive may close politely.
            self._pool._discard(conn, abort=exc_type is not None or not conn.complete())


class HttpPool:
    """Keep-alive HTTP/1.1 connections to one scheme's hosts, at most `limit` open at once.

    Connections are kept per host (the request's authority). Callers beyond `limit` wait
    in FIFO order; a connection idle for another host is closed to make room.
    """

    def __init__(
        self,
        *,
        scheme: str,
        limit: int,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = 60.0,
        read_timeout: float | None = 300.0,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._ssl: ssl.SSLContext | None = None
        self._default_port = 80
        if scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
            self._default_port = 443
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # Slots taken: connections open or being opened, idle or busy.
        self._open = 0
        self._idle: dict[str, deque[Connection]] = {}
        self._waiters: deque[tuple[str, asyncio.Future[Connection | None]]] = deque()
        self._conns: set[Connection] = set()
        self._addresses: dict[str, tuple[str, int]] = {}
        self._closed = False

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def request(
        self,
        method: str,
        host: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | AsyncIterable[bytes] | None = None,
    ) -> AbstractAsyncContextManager[HttpResponse]:
        """`async with pool.request(...) as response:` sends one request.

        `host` is the authority ("name" or "name:port"), `target` the encoded path and
        query, `headers` go out exactly as given (include host and content-length). The
        connection returns to the pool if the block exits normally with the body read to
        its end; otherwise it is closed.
        """
        return _RequestContext(self, method, host, target, headers, body)

    async def close(self) -> None:
        """Close every connection; requests still running fail with a connection error."""
        self._closed = True
        idle = {conn for connections in self._idle.values() for conn in connections}
        conns = list(self._conns)
        self._idle.clear()
        self._conns.clear()
        self._open = 0
        waiters = self._waiters
        while waiters:
            _, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(HttpConnectionError("the connection pool was closed"))
        closing = []
        for conn in conns:
            closing.append(conn.closed())
            conn.close(abort=conn not in idle)
        if closing:
            # Let the transports finish closing (a TLS close_notify) without hanging on a
            # peer that never answers it.
            await asyncio.wait(closing, timeout=1.0)

    # -- the slots -----------------------------------------------------------------------

    def _take_idle(self, host: str) -> Connection | None:
        idle = self._idle.get(host)
        while idle:
            # Newest first: the one least likely to have hit the server's idle timeout.
            conn = idle.pop()
            if conn.usable():
                return conn
            self._discard(conn)
        return None

    async def _acquire(self, host: str) -> Connection:
        """A connection for `host` when none is idle: a new one, or one handed over."""
        if self._closed:
            raise HttpConnectionError("the connection pool is closed")
        if not self._waiters:
            if self._open < self._limit:
                self._open += 1
                return await self._connect(host)
            if self._evict_idle():
                return await self._connect(host)
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        entry = (host, waiter)
        self._waiters.append(entry)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a slot or a connection just as we were cancelled: pass it on.
                given = waiter.result()
                if given is None:
                    self._free_slot()
                else:
                    self._release(given)
            else:
                with suppress(ValueError):
                    self._waiters.remove(entry)
            raise
        if handed is None:
            return await self._connect(host)
        if not handed.usable():
            self._close_keeping_slot(handed)
            return await self._connect(host)
        return handed

    async def _connect(self, host: str) -> Connection:
        """Open a connection in a slot the caller already holds (freed if this fails)."""
        try:
            address = self._addresses.get(host)
            if address is None:
                address = self._addresses[host] = _split_host(host, self._default_port)
            name, port = address
            loop = asyncio.get_running_loop()
            conn = Connection(loop, host, self._read_timeout)
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    LOOPBACK if loopback_name(name) else name,
                    port,
                    ssl=self._ssl,
                    server_hostname=name if self._ssl is not None else None,
                )
        except BaseException:
            self._free_slot()
            raise
        if self._closed:
            conn.close(abort=True)
            raise HttpConnectionError("the connection pool was closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: Connection) -> None:
        """Take back a connection that finished a response cleanly."""
        if self._closed:
            conn.close(abort=False)
            return
        conn.served += 1
        waiters = self._waiters
        while waiters:
            host, waiter = waiters.popleft()
            if waiter.done():
                continue
            if host == conn.host:
                waiter.set_result(conn)
            else:
                # The next in line wants another host: this connection's slot is theirs.
                self._close_keeping_slot(conn)
                waiter.set_result(None)
            return
        idle = self._idle.get(conn.host)
        if idle is None:
            idle = self._idle[conn.host] = deque()
        idle.append(conn)

    def _discard(self, conn: Connection, *, abort: bool = True) -> None:
        """Close a connection and give its slot up (idempotent)."""
        if conn in self._conns:
            self._conns.remove(conn)
            conn.close(abort=abort)
            self._free_slot()
        else:
            conn.close(abort=abort)

    def _close_keeping_slot(self, conn: Connection) -> None:
        self._conns.discard(conn)
        conn.close(abort=True)

    def _free_slot(self) -> None:
        if self._closed:
            return
        waiters = self._waiters
        while waiters:
            _, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._open -= 1

    def _evict_idle(self) -> bool:
        """Close one idle connection (to some other host), keeping its slot."""
        for idle in self._idle.values():
            if idle:
                self._close_keeping_slot(idle.popleft())
                return True
        return False


def _split_host(host: str, default_port: int) -> tuple[str, int]:
    """("name", port) from an authority: "name", "name:port", "[v6]" or "[v6]:port"."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            raise ValueError(f"malformed host {host!r}")
        name, rest = host[1:end], host[end + 1 :]
        if not rest:
            return name, default_port
        if not rest.startswith(":"):
            raise ValueError(f"malformed host {host!r}")
        port_text = rest[1:]
    else:
        name, colon, port_text = host.rpartition(":")
        if not colon:
            return host, default_port
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"malformed port in host {host!r}")
    return name, int(port_text)
