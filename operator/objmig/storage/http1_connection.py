"""One HTTP/1.1 connection of `http1.HttpPool`: the asyncio protocol, the read timer,
read- and write-side flow control, and reading a response body as it is framed.

A connection serves one request at a time; see `http1` for what the client does and does
not do, and `http1_wire` for the head parsing it relies on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable
from typing import Final

from objmig.storage.http1_wire import (
    CHUNKED,
    DONE,
    LENGTH,
    HttpConnectionError,
    HttpProtocolError,
    ServerDisconnectedError,
    parse_response_head,
)

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

# Where a chunked body's parser is.
_CHUNK_SIZE: Final = 0
_CHUNK_DATA: Final = 1
_CHUNK_DATA_END: Final = 2
_CHUNK_TRAILER: Final = 3


class HttpResponse:
    """The status, headers and streamed body of a response.

    `headers` has lower-case names; a repeated header's values are joined with ", ".
    The body can be read only inside the `request` block that produced the response.
    """

    __slots__ = ("_conn", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], conn: Connection) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._conn: Connection | None = conn

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.reason}>"

    async def read(self, n: int = -1) -> bytes:
        """At most `n` bytes of the body (all the rest for n < 0); b"" at its end."""
        conn = self._conn
        if conn is None:
            raise HttpConnectionError("the response was released: its body can no longer be read")
        return await conn.read(n)


class Connection(asyncio.Protocol):
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
        self._mode = DONE
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
        head = parse_response_head(text, self.host, head_request)
        if head is None:
            return None
        status, reason, headers, mode, length, keep_alive = head
        if mode == CHUNKED:
            self._chunk_state = _CHUNK_SIZE
            self._trailer_bytes = 0
        elif mode == LENGTH:
            self._left = length
        self._mode = mode
        self._keep_alive = keep_alive and not request_close
        return HttpResponse(status, reason, headers, self)

    # -- the body ------------------------------------------------------------------------

    async def read(self, n: int) -> bytes:
        if n <= 0:
            return await self._read_all() if n else b""
        mode = self._mode
        if mode == LENGTH:
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
                self._mode = DONE
            return data
        if mode == DONE:
            return b""
        if mode == CHUNKED:
            return await self._read_chunked(n)
        return await self._read_until_close(n)

    async def _read_all(self) -> bytes:
        if self._mode == LENGTH and len(self._buf) >= self._left:
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
                self._mode = DONE
                return b""
            await self._wait()
        return self._take(n if n < len(buf) else len(buf))

    async def _read_chunked(self, n: int) -> bytes:
        buf = self._buf
        while True:
            if self._chunk_state != _CHUNK_DATA:
                self._parse_chunk_framing()
                if self._mode == DONE:
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
                    self._mode = DONE
                    return
                # Trailers are read past, not kept: S3 sends none we need.
                self._trailer_bytes += end + 2
                if self._trailer_bytes > _MAX_TRAILERS:
                    raise HttpProtocolError(f"trailers from {self.host} too long")
            else:
                return

    def complete(self) -> bool:
        """Whether the response was read to its end."""
        return self._mode == DONE

    def finish(self) -> bool:
        """Whether the connection can serve another request now that the block exited."""
        if self._mode == CHUNKED and self._chunk_state != _CHUNK_DATA:
            try:
                self._parse_chunk_framing()
            except HttpProtocolError:
                return False
        return self._mode == DONE and self._keep_alive and self.usable()
