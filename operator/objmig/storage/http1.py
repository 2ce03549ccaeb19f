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
connection is opened, which keep-alive makes rare). It never adds a header of its own: the
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
import re
import ssl
from collections import deque
from collections.abc import AsyncIterable, Mapping
from contextlib import AbstractAsyncContextManager, suppress
from types import TracebackType
from typing import Final

__all__ = [
    "HttpConnectionError",
    "HttpPool",
    "HttpProtocolError",
    "HttpResponse",
    "ServerDisconnectedError",
]

_KiB: Final = 1024
_MiB: Final = 1024 * 1024

# A response head (status line + headers) larger than this is not from an S3 store.
_MAX_HEAD: Final = 64 * _KiB
# Chunk-size lines (with extensions) and the trailer section get the same kind of bound.
_MAX_CHUNK_LINE: Final = 8 * _KiB
_MAX_TRAILERS: Final = 64 * _KiB
# Bodies up to this size are sent in the same write as the head: one send(2), and the
# copy into the joined buffer costs less than a second system call.
_ONE_WRITE_MAX: Final = 256 * _KiB
# Read-side flow control: stop reading the socket when this much is buffered and unread,
# start again when the consumer brought it below _RESUME_AT. Bounds a 1 GiB GET's memory;
# a copy may hold copy.concurrency x partConcurrency GETs open, so this stays small.
_PAUSE_AT: Final = 2 * _MiB
_RESUME_AT: Final = 512 * _KiB
# Above this, slicing the buffer through a memoryview saves a second copy of the bytes.
_VIEW_COPY_MIN: Final = 64 * _KiB
# The loop may run a timer a hair before its time; a deadline this close counts as reached.
_TIMER_SLACK: Final = 0.001

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_VERSIONS: Final = frozenset({"HTTP/1.1", "HTTP/1.0"})

# Body framing of the response being read on a connection.
_DONE: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_UNTIL_CLOSE: Final = 3
# Where a chunked body's parser is.
_CHUNK_SIZE: Final = 0
_CHUNK_DATA: Final = 1
_CHUNK_DATA_END: Final = 2
_CHUNK_TRAILER: Final = 3


class HttpConnectionError(ConnectionError):
    """A connection-level failure: the request may be retried on another connection."""


class ServerDisconnectedError(HttpConnectionError):
    """The server closed (or reset) the connection before the response was complete."""


class HttpProtocolError(HttpConnectionError):
    """The server sent something that is not a valid HTTP/1.x response."""


class HttpResponse:
    """The status, headers and streamed body of a response.

    `headers` has lower-case names; a repeated header's values are joined with ", ".
    The body can be read only inside the `request` block that produced the response.
    """

    __slots__ = ("_conn", "headers", "reason", "status")

    def __init__(
        self, status: int, reason: str, headers: dict[str, str], conn: _Connection
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._conn: _Connection | None = conn

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.reason}>"

    async def read(self, n: int = -1) -> bytes:
        """At most `n` bytes of the body (all the rest for n < 0); b"" at its end."""
        conn = self._conn
        if conn is None:
            raise HttpConnectionError("the response was released: its body can no longer be read")
        return await conn.read(n)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the protocol callbacks plus the response parser.

    A connection serves one request at a time; the coroutine driving that request is the
    only reader, so a single waiter future is woken by every event (data, EOF, loss,
    write resumption) and re-checks its own condition.
    """

    __slots__ = (
        "_buf",
        "_chunk_state",
        "_closed",
        "_eof",
        "_exc",
        "_keep_alive",
        "_left",
        "_loop",
        "_lost",
        "_mode",
        "_read_timeout",
        "_reading_paused",
        "_timer",
        "_trailer_bytes",
        "_transport",
        "_wait_start",
        "_waiter",
        "_writing_paused",
        "got_data",
        "host",
        "served",
    )

    _transport: asyncio.Transport

    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, read_timeout: float | None
    ) -> None:
        self.host = host
        # Responses completed and handed back to the pool: > 0 means a reused connection.
        self.served = 0
        # Whether any byte arrived since the current request was sent.
        self.got_data = False
        self._loop = loop
        self._read_timeout = read_timeout
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wait_start = 0.0
        # No more bytes will arrive (EOF or connection lost); `_exc` says why, if abnormally.
        self._eof = False
        self._lost = False
        self._exc: BaseException | None = None
        self._closed: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._mode = _DONE
        self._keep_alive = False
        self._chunk_state = _CHUNK_SIZE
        # Body bytes still due: of the Content-Length, or of the current chunk.
        self._left = 0
        self._trailer_bytes = 0

    # -- protocol callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        self.got_data = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(buf) > _PAUSE_AT and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        # Falsy: let the transport close itself. HTTP/1.1 has no use for half-closed sockets.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = True
        if self._exc is None:
            self._exc = exc
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        self._wake()
        closed = self._closed
        if closed is not None and not closed.done():
            closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    # -- plumbing ------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def usable(self) -> bool:
        """Idle and still open: nothing unread, no EOF (a keep-alive the server dropped)."""
        return not self._eof and not self._buf and not self._transport.is_closing()

    def close(self, *, abort: bool) -> None:
        # Abort for a connection in an unknown state: do not flush a half-sent request,
        # do not wait for a TLS close_notify from a peer that may be gone.
        self._eof = True
        if self._exc is None:
            # So that a reader still at work (the pool closing under it) sees a failure,
            # not the clean end of a body framed by the connection's close.
            self._exc = HttpConnectionError("connection closed by the client")
        if self._lost:
            return
        transport = self._transport
        if abort:
            transport.abort()
        else:
            transport.close()

    def closed(self) -> asyncio.Future[None]:
        """A future done once the transport reported connection_lost."""
        if self._closed is None:
            self._closed = self._loop.create_future()
            if self._lost:
                self._closed.set_result(None)
        return self._closed

    async def _wait(self) -> None:
        """Wait for the next event; TimeoutError after `read_timeout` without one."""
        loop = self._loop
        waiter = loop.create_future()
        self._waiter = waiter
        timeout = self._read_timeout
        if timeout is not None:
            # One timer per connection, re-armed only when it fires early: a request that
            # gets its answer in time schedules nothing (see _on_timer).
            now = loop.time()
            self._wait_start = now
            if self._timer is None:
                self._timer = loop.call_at(now + timeout, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        timeout = self._read_timeout
        if waiter is None or waiter.done() or timeout is None:
            return
        deadline = self._wait_start + timeout
        if deadline - self._loop.time() > _TIMER_SLACK:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._waiter = None
        waiter.set_exception(TimeoutError(f"no data from {self.host} for {timeout:g} s"))

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._transport.write(data)
        except Exception as exc:
            # uvloop raises on a transport that closed under us; asyncio drops the data.
            # Either way nothing more will be exchanged: what arrived decides.
            self._eof = True
            if self._exc is None:
                self._exc = exc

    def _disconnected(self, what: str) -> ServerDisconnectedError:
        error = ServerDisconnectedError(f"{self.host} closed the connection {what}")
        error.__cause__ = self._exc
        return error

    # -- a request -----------------------------------------------------------------------

    async def exchange(
        self,
        head: bytes,
        body: bytes | AsyncIterable[bytes] | None,
        head_request: bool,
        request_close: bool,
    ) -> HttpResponse:
        """Send one request and read its response head."""
        if self._eof:
            raise self._disconnected("before the request was sent")
        self.got_data = False
        if body is None:
            self._write(head)
        elif isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) <= _ONE_WRITE_MAX:
                self._write(head + body)
            else:
                self._write(head)
                self._write(body)
        else:
            await self._send_stream(head, body)
        return await self._read_head(head_request, request_close)

    async def _send_stream(self, head: bytes, body: AsyncIterable[bytes]) -> None:
        chunks = body.__aiter__()
        self._write(head)
        while not self._eof:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            if chunk:
                self._write(chunk)
                # Honour the transport's flow control. The read timeout bounds these waits
                # too: a server that stops taking the body is as stuck as a silent one.
                while self._writing_paused and not self._eof:
                    await self._wait()
        # The server answered early and closed, or went away: stop sending, let whatever it
        # answered decide, and close the source now rather than whenever GC gets to it.
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _read_head(self, head_request: bool, request_close: bool) -> HttpResponse:
        buf = self._buf
        start = 0
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                size = len(buf)
                if size > _MAX_HEAD:
                    raise HttpProtocolError(f"response head from {self.host} over {_MAX_HEAD} B")
                if self._eof:
                    raise self._disconnected(
                        "before answering" if not size else "in the middle of a response head"
                    )
                start = size - 3 if size > 3 else 0
                await self._wait()
                continue
            if end > _MAX_HEAD:
                raise HttpProtocolError(f"response head from {self.host} over {_MAX_HEAD} B")
            text = buf[:end].decode("utf-8", "surrogateescape")
            del buf[: end + 4]
            start = 0
            response = self._parse_head(text, head_request, request_close)
            if response is not None:
                return response

    def _parse_head(
        self, text: str, head_request: bool, request_close: bool
    ) -> HttpResponse | None:
        """The response for a final head; None for an interim (1xx) one, which is skipped."""
        lines = text.split("\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in _VERSIONS or len(code) != 3 or not code.isdigit() or not code.isascii():
            raise HttpProtocolError(f"malformed status line from {self.host}: {status_line[:80]!r}")
        status = int(code)
        if status < 200:
            if status == 101:
                raise HttpProtocolError(f"{self.host} switched protocols without being asked")
            return None
        del lines[0]
        # The common case in one cheap pass: every line "name: value", no name repeated.
        # Anything else (no colon, a repeat, a folded line, space before a colon) is
        # re-parsed carefully; the substring tests are C-speed scans of a short head.
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                headers = self._parse_fields(lines)
                break
            headers[name.lower()] = value.strip()
        else:
            if (
                len(headers) != len(lines)
                or "\n " in text
                or "\n\t" in text
                or " :" in text
                or "\t:" in text
            ):
                headers = self._parse_fields(lines)

        keep_alive = not request_close
        connection = headers.get("connection")
        if connection is not None:
            tokens = [token.strip() for token in connection.lower().split(",")]
            if "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens):
                keep_alive = False
        elif version == "HTTP/1.0":
            keep_alive = False

        transfer_encoding = headers.get("transfer-encoding")
        if head_request or status == 204 or status == 304:
            self._mode = _DONE
        elif transfer_encoding is not None:
            if "content-length" in headers:
                # Both framings present: trust the chunked one, but never reuse a
                # connection whose framing a middlebox may have read differently.
                keep_alive = False
            if transfer_encoding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                self._mode = _CHUNKED
                self._chunk_state = _CHUNK_SIZE
                self._trailer_bytes = 0
            else:
                self._mode = _UNTIL_CLOSE
                keep_alive = False
        else:
            length_text = headers.get("content-length")
            if length_text is None:
                self._mode = _UNTIL_CLOSE
                keep_alive = False
            else:
                length = _content_length(length_text)
                if length is None:
                    raise HttpProtocolError(
                        f"invalid content-length from {self.host}: {length_text[:40]!r}"
                    )
                self._mode = _LENGTH if length else _DONE
                self._left = length
        self._keep_alive = keep_alive
        return HttpResponse(status, reason, headers, self)

    def _parse_fields(self, lines: list[str]) -> dict[str, str]:
        """Header lines the fast path declined: repeats joined, obs-fold unfolded."""
        headers: dict[str, str] = {}
        name = ""
        for line in lines:
            field, colon, value = line.partition(":")
            if line[:1] in (" ", "\t"):
                if not name:
                    raise HttpProtocolError(f"header continuation first from {self.host}")
                # obs-fold: a continuation of the previous header (RFC 9112 5.2).
                headers[name] = f"{headers[name]} {line.strip()}".strip()
                continue
            if not colon or not field.strip():
                raise HttpProtocolError(f"malformed header line from {self.host}: {line[:80]!r}")
            name = field.strip().lower()
            if name in headers:
                headers[name] = f"{headers[name]}, {value.strip()}"
            else:
                headers[name] = value.strip()
        return headers

    # -- the body ------------------------------------------------------------------------

    async def read(self, n: int) -> bytes:
        if n <= 0:
            return await self._read_all() if n else b""
        mode = self._mode
        if mode == _LENGTH:
            buf = self._buf
            while not buf:
                if self._eof:
                    raise self._disconnected(f"with {self._left} body bytes still due")
                await self._wait()
            left = self._left
            k = len(buf)
            if n < k:
                k = n
            if left < k:
                k = left
            data = self._take(k)
            left -= k
            self._left = left
            if not left:
                self._mode = _DONE
            return data
        if mode == _DONE:
            return b""
        if mode == _CHUNKED:
            return await self._read_chunked(n)
        return await self._read_until_close(n)

    async def _read_all(self) -> bytes:
        if self._mode == _LENGTH and len(self._buf) >= self._left:
            # Usual for small bodies: all of it arrived with the head.
            return await self.read(self._left)
        parts = []
        while data := await self.read(_PAUSE_AT):
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _take(self, k: int) -> bytes:
        """Remove and return the first k buffered bytes (k <= len(buffer))."""
        buf = self._buf
        if k == len(buf):
            data = bytes(buf)
            buf.clear()
        elif k < _VIEW_COPY_MIN:
            data = bytes(buf[:k])
            del buf[:k]
        else:
            with memoryview(buf) as view:
                data = view[:k].tobytes()
            del buf[:k]
        if self._reading_paused and len(buf) <= _RESUME_AT:
            self._reading_paused = False
            if not self._eof:
                self._transport.resume_reading()
        return data

    async def _read_until_close(self, n: int) -> bytes:
        buf = self._buf
        while not buf:
            if self._eof:
                if self._exc is not None:
                    # A reset is not an end: the body may have been cut short.
                    raise self._disconnected("abnormally before the end of the body")
                self._mode = _DONE
                return b""
            await self._wait()
        return self._take(n if n < len(buf) else len(buf))

    async def _read_chunked(self, n: int) -> bytes:
        buf = self._buf
        while True:
            if self._chunk_state != _CHUNK_DATA:
                self._parse_chunk_framing()
                if self._mode == _DONE:
                    return b""
            if self._chunk_state == _CHUNK_DATA and buf:
                k = len(buf)
                if n < k:
                    k = n
                left = self._left
                if left < k:
                    k = left
                data = self._take(k)
                left -= k
                self._left = left
                if not left:
                    self._chunk_state = _CHUNK_DATA_END
                    # Consume the framing that follows if it is already here, so a caller
                    # that stops after the last data byte still leaves a reusable connection.
                    self._parse_chunk_framing()
                return data
            if self._eof:
                raise self._disconnected("before the last chunk of the body")
            await self._wait()

    def _parse_chunk_framing(self) -> None:
        """Consume buffered chunk framing until data, the end, or the need for more bytes."""
        buf = self._buf
        while True:
            state = self._chunk_state
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        raise HttpProtocolError(f"chunk-size line from {self.host} too long")
                    return
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip(b" \t")
                if not _HEX.fullmatch(size_text):
                    raise HttpProtocolError(
                        f"malformed chunk size from {self.host}: {bytes(buf[:end])[:40]!r}"
                    )
                del buf[: end + 2]
                size = int(size_text, 16)
                if size:
                    self._left = size
                    self._chunk_state = _CHUNK_DATA
                    return
                self._chunk_state = _CHUNK_TRAILER
            elif state == _CHUNK_DATA_END:
                if len(buf) < 2:
                    return
                if buf[0] != 13 or buf[1] != 10:
                    raise HttpProtocolError(f"chunk from {self.host} longer than its size")
                del buf[:2]
                self._chunk_state = _CHUNK_SIZE
            elif state == _CHUNK_TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    if self._trailer_bytes + len(buf) > _MAX_TRAILERS:
                        raise HttpProtocolError(f"trailers from {self.host} too long")
                    return
                del buf[: end + 2]
                if not end:
                    self._mode = _DONE
                    return
                # Trailers are read past, not kept: S3 sends none we need.
                self._trailer_bytes += end + 2
                if self._trailer_bytes > _MAX_TRAILERS:
                    raise HttpProtocolError(f"trailers from {self.host} too long")
            else:
                return

    def complete(self) -> bool:
        """Whether the response was read to its end."""
        return self._mode == _DONE

    def finish(self) -> bool:
        """Whether the connection can serve another request now that the block exited."""
        if self._mode == _CHUNKED and self._chunk_state != _CHUNK_DATA:
            try:
                self._parse_chunk_framing()
            except HttpProtocolError:
                return False
        return self._mode == _DONE and self._keep_alive and self.usable()


def _content_length(text: str) -> int | None:
    if text.isdigit() and text.isascii():
        return int(text)
    # A repeated header was joined with ", "; identical values are acceptable (RFC 9110 8.6).
    values = {value.strip() for value in text.split(",")}
    if len(values) == 1:
        (value,) = values
        if value.isdigit() and value.isascii():
            return int(value)
    return None


def _build_head(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    parts = [method, " ", target, " HTTP/1.1\r\n"]
    for name, value in headers.items():
        parts += (name, ": ", value, "\r\n")
    parts.append("\r\n")
    text = "".join(parts)
    # One line ending per line and no others: a CR or LF inside a value (say, metadata
    # copied from a hostile source) would otherwise inject headers.
    lines = len(headers) + 2
    if text.count("\n") != lines or text.count("\r") != lines:
        raise ValueError("CR or LF in the request target or a header")
    # surrogateescape: header values decoded from a response go back out byte for byte.
    return text.encode("utf-8", "surrogateescape")


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
        self._conn: _Connection | None = None
        self._response: HttpResponse | None = None

    async def __aenter__(self) -> HttpResponse:
        pool = self._pool
        host = self._host
        body = self._body
        headers = self._headers
        head = _build_head(self._method, self._target, headers)
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
        self._idle: dict[str, deque[_Connection]] = {}
        self._waiters: deque[tuple[str, asyncio.Future[_Connection | None]]] = deque()
        self._conns: set[_Connection] = set()
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

    def _take_idle(self, host: str) -> _Connection | None:
        idle = self._idle.get(host)
        while idle:
            # Newest first: the one least likely to have hit the server's idle timeout.
            conn = idle.pop()
            if conn.usable():
                return conn
            self._discard(conn)
        return None

    async def _acquire(self, host: str) -> _Connection:
        """A connection for `host` when none is idle: a new one, or one handed over."""
        if self._closed:
            raise HttpConnectionError("the connection pool is closed")
        if not self._waiters:
            if self._open < self._limit:
                self._open += 1
                return await self._connect(host)
            if self._evict_idle():
                return await self._connect(host)
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
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

    async def _connect(self, host: str) -> _Connection:
        """Open a connection in a slot the caller already holds (freed if this fails)."""
        try:
            address = self._addresses.get(host)
            if address is None:
                address = self._addresses[host] = _split_host(host, self._default_port)
            name, port = address
            loop = asyncio.get_running_loop()
            conn = _Connection(loop, host, self._read_timeout)
            async with asyncio.timeout(self._connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    name,
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

    def _release(self, conn: _Connection) -> None:
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

    def _discard(self, conn: _Connection, *, abort: bool = True) -> None:
        """Close a connection and give its slot up (idempotent)."""
        if conn in self._conns:
            self._conns.remove(conn)
            conn.close(abort=abort)
            self._free_slot()
        else:
            conn.close(abort=abort)

    def _close_keeping_slot(self, conn: _Connection) -> None:
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
