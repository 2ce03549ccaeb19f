"""The lean HTTP/1.1 client (objmig.storage.http1) against real local TCP servers.

Every server here is asyncio.start_server (or a raw asyncio server protocol where the test
needs to see recv boundaries) on 127.0.0.1, answering with canned or computed bytes; the
client is exercised only through its public interface, plus a look at one connection's
receive buffer to prove the read-side flow control bounds it.

The test coroutines take no fixtures, so `test_on_uvloop` runs a selection of them again on
a uvloop event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import random
import socket
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from objmig.storage.http1 import (
    HttpConnectionError,
    HttpPool,
    HttpProtocolError,
    ServerDisconnectedError,
)

KiB = 1024
MiB = 1024 * KiB


# -- a small real HTTP server ---------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    conn: int  # which connection (1-based, in accept order)
    index: int  # which request on that connection (1-based)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


# A responder writes the answer; it returns False to have the server close the connection.
Responder = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool | None]]


def response(
    status: int = 200,
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    reason: str = "OK",
    *,
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def ok(request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(response(body=f"{request.method} {request.target}".encode()))


@dataclass
class Server:
    respond: Responder = ok
    tls: ssl.SSLContext | None = None
    read_body: bool = True
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed_connections: int = 0
    active: int = 0
    max_active: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = self.connections
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            index = 0
            while True:
                request = await read_request(reader, conn, index + 1, read_body=self.read_body)
                if request is None:
                    break
                index += 1
                self.requests.append(request)
                keep = await self.respond(request, reader, writer)
                await writer.drain()
                if keep is False:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.active -= 1
            self.closed_connections += 1
            writer.close()
            self._tasks.discard(task)


async def read_request(
    reader: asyncio.StreamReader, conn: int, index: int, *, read_body: bool = True
) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head[:-4].decode("utf-8", "surrogateescape").split("\r\n")
    method, target, version = lines[0].split(" ")
    assert version == "HTTP/1.1"
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name, value.strip()))
    request = Request(method, target, headers, b"", conn, index)
    length = int(request.header("content-length") or 0)
    if read_body and length:
        request.body = await reader.readexactly(length)
    return request


async def fetch(
    pool: HttpPool,
    host: str,
    target: str = "/",
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"host": host}
    if body is not None:
        headers["content-length"] = str(len(body))
    async with pool.request(method, host, target, headers, body) as resp:
        return resp.status, resp.headers, await resp.read()


def assert_slots_consistent(pool: HttpPool) -> None:
    """White-box: every slot the pool counts is an open connection, and vice versa."""
    assert pool._open == len(pool._conns)
    assert pool._open <= pool._limit
    assert not pool._waiters


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# How long a test waits for something that comes within milliseconds on an idle machine.
PATIENCE = 60.0


async def until(condition: Callable[[], object], what: str) -> None:
    """Poll `condition` (the loop is shared with the test's servers) until it holds; fail
    after PATIENCE, a guard against a hang rather than a measure. Raises AssertionError,
    never a TimeoutError a test could take for the client's."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PATIENCE:g} s: {what}")
        await asyncio.sleep(0.001)


async def client_waits(pool: HttpPool) -> None:
    """Until a connection of the pool has taken in what arrived and waits for more (white
    box): a server writing in pieces knows the client saw each piece on its own."""
    await until(lambda: any(c._waiter is not None for c in pool._conns), "the client waiting")


async def outcome(coro: Awaitable[object]) -> BaseException | None:
    """Run `coro` and return what it raised (None if it returned). Fails if it has not ended
    within PATIENCE: a guard that cannot be mistaken for a TimeoutError of the code tested."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=PATIENCE)
    if not done:
        task.cancel()
        raise AssertionError(f"still running after {PATIENCE:g} s")
    return task.exception()


# -- keep-alive and framing -----------------------------------------------------------------


async def test_keep_alive_reuses_one_connection_and_sends_headers_as_given() -> None:
    async with Server() as server, HttpPool(scheme="http", limit=4) as pool:
        for i in range(5):
            status, headers, body = await fetch(pool, server.host, f"/k{i}?a=b%20c")
            assert (status, body) == (200, f"GET /k{i}?a=b%20c".encode())
            assert headers["content-length"] == str(len(body))
        assert server.connections == 1
        assert [r.index for r in server.requests] == [1, 2, 3, 4, 5]
        # Nothing but what the caller gave: no user-agent, accept-encoding, connection...
        assert server.requests[0].headers == [("host", server.host)]

        sent = {"host": server.host, "X-Amz-Meta-Caf\u00e9": "cr\u00e8me", "content-length": "3"}
        async with pool.request("PUT", server.host, "/m", sent, b"abc") as resp:
            assert await resp.read() == b"PUT /m"
        assert server.requests[-1].headers == list(sent.items())
        assert server.requests[-1].body == b"abc"


async def test_response_headers_are_lower_cased_and_repeats_joined() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b'HTTP/1.1 200 Fine Thanks\r\nETag: "abc"\r\nX-Amz-Meta-A:  one \r\n'
            b"x-amz-meta-a: two\r\nContent-Length: 2\r\n\r\nhi"
        )

    async with (
        Server(respond) as server,
        HttpPool(scheme="http", limit=1) as pool,
        pool.request("GET", server.host, "/", {"host": server.host}) as resp,
    ):
        assert (resp.status, resp.reason) == (200, "Fine Thanks")
        assert resp.headers == {
            "etag": '"abc"',
            "x-amz-meta-a": "one, two",
            "content-length": "2",
        }
        assert await resp.read() == b"hi"


async def test_unusual_but_valid_header_lines_are_understood() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200\r\nX-Folded: first\r\n  second\r\n\tthird\r\n"
            b"Content-Length : 3\r\nX-Empty:\r\nx-colon: a:b: c\r\n\r\nabc"
        )

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        for _ in range(2):
            async with pool.request("GET", server.host, "/", {"host": server.host}) as resp:
                assert (resp.status, resp.reason) == (200, "")
                assert resp.headers == {
                    "x-folded": "first second third",
                    "content-length": "3",
                    "x-empty": "",
                    "x-colon": "a:b: c",
                }
                assert await resp.read() == b"abc"
        assert server.connections == 1


async def test_content_length_body_read_in_pieces() -> None:
    payload = os.urandom(300 * KiB)

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(response(body=payload))

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        async with pool.request("GET", server.host, "/", {"host": server.host}) as resp:
            assert await resp.read(0) == b""
            first = await resp.read(1000)
            assert 0 < len(first) <= 1000
            pieces = [first]
            while chunk := await resp.read(64 * KiB):
                assert len(chunk) <= 64 * KiB
                pieces.append(chunk)
            assert b"".join(pieces) == payload
            assert await resp.read() == b""
        assert (await fetch(pool, server.host))[2] == payload
        assert server.connections == 1


async def test_chunked_body_with_extensions_and_trailers() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"5;name=value\r\nhello\r\n")
        await writer.drain()
        await client_waits(pool)  # in the middle of the framing
        writer.write(b"1\r\n \r\n1A ; ext\r\n")
        await writer.drain()
        await client_waits(pool)
        # The last data and the end of the body in one write, so they arrive together.
        writer.write(b"abcdefghijklmnopqrstuvwxyz\r\n0\r\nx-checksum: 123\r\nx-other: 4\r\n\r\n")

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        for _ in range(2):
            status, headers, body = await fetch(pool, server.host)
            assert status == 200
            assert body == b"hello abcdefghijklmnopqrstuvwxyz"
            assert "x-checksum" not in headers  # trailers are skipped
        # Read exactly the data bytes, never the end: still reusable once the last chunk
        # arrived (with the last data bytes: one write), because framing already buffered
        # is consumed.
        async with pool.request("GET", server.host, "/", {"host": server.host}) as resp:
            got = b""
            while len(got) < 32:
                got += await resp.read(32 - len(got))
        assert got == b"hello abcdefghijklmnopqrstuvwxyz"
        await fetch(pool, server.host)
        assert server.connections == 1


async def test_body_until_close_without_length() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(body=b"", length=False))
        for part in (b"first ", b"second ", b"third"):
            writer.write(part)
            await writer.drain()
            await client_waits(pool)  # the body arrives piece by piece until the close
        return False

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        assert (await fetch(pool, server.host))[2] == b"first second third"
        assert (await fetch(pool, server.host))[2] == b"first second third"
        assert server.connections == 2


async def test_head_and_204_have_no_body_and_keep_the_connection() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        if request.method == "HEAD":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 123456\r\nETag: "e"\r\n\r\n')
        elif request.target == "/204":
            writer.write(b"HTTP/1.1 204 No Content\r\nx-amz-id: 1\r\n\r\n")
        else:
            await ok(request, reader, writer)

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        status, headers, body = await fetch(pool, server.host, "/obj", method="HEAD")
        assert (status, headers["content-length"], body) == (200, "123456", b"")
        status, headers, body = await fetch(pool, server.host, "/204", method="DELETE")
        assert (status, body) == (204, b"")
        assert (await fetch(pool, server.host, "/after"))[2] == b"GET /after"
        # HEAD's answer was left unread and the pool still reused the connection.
        async with pool.request("HEAD", server.host, "/obj", {"host": server.host}) as resp:
            assert resp.status == 200
        await fetch(pool, server.host)
        assert server.connections == 1


async def test_interim_100_continue_is_skipped() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await client_waits(pool)  # the interim answer arrived on its own
        writer.write(b"HTTP/1.1 102 Processing\r\nX-Progress: 1\r\n\r\n")
        writer.write(response(201, b"made", reason="Created"))

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        status, headers, body = await fetch(pool, server.host, "/x", "PUT", b"data")
        assert (status, body) == (201, b"made")
        assert "x-progress" not in headers
        assert server.requests[0].body == b"data"


async def test_connection_close_from_the_server_is_honoured() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        # Says close but leaves the socket open: the client must not reuse it anyway.
        writer.write(response(body=b"bye", headers=(("Connection", "close"),)))

    async with Server(respond) as server, HttpPool(scheme="http", limit=2) as pool:
        assert (await fetch(pool, server.host))[2] == b"bye"
        assert (await fetch(pool, server.host))[2] == b"bye"
        assert server.connections == 2


async def test_http10_answer_without_keep_alive_is_not_reused() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with Server(respond) as server, HttpPool(scheme="http", limit=2) as pool:
        assert (await fetch(pool, server.host))[2] == b"ok"
        assert (await fetch(pool, server.host))[2] == b"ok"
        assert server.connections == 2


# -- writing ----------------------------------------------------------------------------------


class _RecordingProtocol(asyncio.Protocol):
    """A raw server that records the size of every recv and answers each full request."""

    def __init__(self, recvs: list[bytes]) -> None:
        self.recvs = recvs
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.recvs.append(data)
        self.pending += data
        end = self.pending.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.pending[:end].decode().lower()
        length = int(head.split("content-length:")[1].split("\r\n")[0]) if "content" in head else 0
        if len(self.pending) >= end + 4 + length:
            self.pending = self.pending[end + 4 + length :]
            self.transport.write(response(body=b"stored"))


class _CountingTransport:
    """Stands in front of a connection's transport and records each write's size."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes: list[int] = []

    def write(self, data: bytes) -> None:
        self.writes.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def test_small_put_is_one_write_and_arrives_in_one_recv() -> None:
    recvs: list[bytes] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _RecordingProtocol(recvs), "127.0.0.1", 0)
    host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    payload = os.urandom(16 * KiB)
    try:
        async with HttpPool(scheme="http", limit=1) as pool:
            for _ in range(3):
                recvs.clear()
                status, _, body = await fetch(pool, host, "/obj", "PUT", payload)
                assert (status, body) == (200, b"stored")
                # The whole request, head and 16 KiB body, came out of a single recv.
                assert len(recvs) == 1
                assert recvs[0].endswith(b"\r\n\r\n" + payload)

            # The server cannot tell one send from two quick ones (the kernel coalesces
            # them), so count the writes themselves too.
            (conn,) = pool._conns
            counting = _CountingTransport(conn._transport)
            conn._transport = counting  # type: ignore[assignment]
            await fetch(pool, host, "/obj", "PUT", payload)
            await fetch(pool, host, "/obj", "GET")
            big = os.urandom(MiB)
            await fetch(pool, host, "/obj", "PUT", big)
            small_put, get, big_head, big_body = counting.writes
            assert len(payload) < small_put < len(payload) + 200  # head and body together
            assert get < 200
            assert big_head < 200  # a large body follows its own head
            assert big_body == len(big)
    finally:
        server.close()
        await server.wait_closed()


async def test_streaming_upload_from_async_iterable_honours_flow_control() -> None:
    chunk = os.urandom(256 * KiB)
    count = 64  # 16 MiB, more than the socket buffers hold
    pulled = 0
    pulled_before_reading: list[int] = []

    async def source() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(count):
            pulled += 1
            yield chunk

    async def respond(request: Request, reader: asyncio.StreamReader, writer: Any) -> None:
        if request.target == "/big":
            # Read nothing until the client's transport is full and it waits for room
            # (white box: the connection's flow-control flag); it must not pull from its
            # source meanwhile, so the source is not drained when the server starts reading.
            await until(lambda: any(c._writing_paused for c in pool._conns), "client paused")
            pulled_before_reading.append(pulled)
        digest = hashlib.sha256()
        left = int(request.header("content-length") or 0)
        while left:
            data = await reader.read(min(left, 64 * KiB))
            digest.update(data)
            left -= len(data)
        writer.write(response(body=digest.hexdigest().encode()))

    async with Server(respond, read_body=False) as server, HttpPool(scheme="http", limit=1) as pool:
        headers = {"host": server.host, "content-length": str(len(chunk) * count)}
        async with pool.request("PUT", server.host, "/big", headers, source()) as resp:
            assert resp.status == 200
            assert await resp.read() == hashlib.sha256(chunk * count).hexdigest().encode()
        # The source waited for the server to read.
        assert pulled_before_reading[0] < count, pulled_before_reading
        assert (await fetch(pool, server.host, "/after"))[0] == 200
        assert server.connections == 1


async def test_early_answer_while_uploading_is_returned() -> None:
    async def endless() -> AsyncIterator[bytes]:
        block = b"x" * (256 * KiB)
        for _ in range(4096):  # 1 GiB: the server never takes it all
            yield block

    async def respond(request: Request, reader: asyncio.StreamReader, writer: Any) -> bool:
        writer.write(response(413, b"too big", (("Connection", "close"),), "Too Large"))
        await writer.drain()
        writer.write_eof()
        # Keep reading (and dropping) so our close cannot become a reset that loses the
        # answer on the client's side before it reads it.
        while await reader.read(MiB):
            pass
        return False

    async with Server(respond, read_body=False) as server, HttpPool(scheme="http", limit=1) as pool:
        headers = {"host": server.host, "content-length": str(4096 * 256 * KiB)}
        async with pool.request("PUT", server.host, "/big", headers, endless()) as resp:
            assert (resp.status, resp.reason) == (413, "Too Large")
            assert await resp.read() == b"too big"


async def test_upload_the_server_stops_taking_times_out() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        block = b"x" * MiB
        for _ in range(1024):
            pulled += 1
            yield block

    async def respond(request: Request, reader: Any, writer: Any) -> bool:
        await server.stop.wait()  # never reads the body
        return False

    async def upload() -> None:
        async with pool.request("PUT", server.host, "/big", headers, endless()):
            pass

    async with (
        Server(respond, read_body=False) as server,
        HttpPool(scheme="http", limit=1, read_timeout=0.3) as pool,
    ):
        headers = {"host": server.host, "content-length": str(1024 * MiB)}
        error = await outcome(upload())
        # The read timeout ended the stalled upload (not the end of a 1 GiB body).
        assert isinstance(error, TimeoutError), repr(error)
        assert "for 0.3 s" in str(error)
        assert pulled < 1024


async def test_large_bytes_body_is_sent_whole() -> None:
    payload = os.urandom(3 * MiB + 7)

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(response(body=hashlib.md5(request.body).hexdigest().encode()))

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        status, _, body = await fetch(pool, server.host, "/big", "PUT", payload)
        assert (status, body) == (200, hashlib.md5(payload).hexdigest().encode())


async def test_crlf_in_a_header_is_refused() -> None:
    async with HttpPool(scheme="http", limit=1) as pool:
        for headers in ({"host": "h", "x-amz-meta-a": "v\r\nx-evil: 1"}, {"x\nevil": "v"}):
            with pytest.raises(ValueError, match="CR or LF"):
                async with pool.request("GET", "127.0.0.1:1", "/", headers):
                    pass


# -- reading large bodies ------------------------------------------------------------------


async def test_large_download_is_streamed_with_bounded_buffering() -> None:
    block = os.urandom(MiB)
    blocks = 64
    draining = False
    stalled_server = False

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        nonlocal draining
        writer.write(
            response(body=b"", headers=(("Content-Length", str(blocks * MiB)),), length=False)
        )
        for _ in range(blocks):
            writer.write(block)
            draining = True
            await writer.drain()
            draining = False

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        async with pool.request("GET", server.host, "/huge", {"host": server.host}) as resp:
            conn = resp._conn  # white-box: its receive buffer is what flow control bounds
            assert conn is not None
            digest = hashlib.sha256()
            total = 0
            most = 0
            stalled = False
            while data := await resp.read(MiB):
                digest.update(data)
                total += len(data)
                if total >= 8 * MiB and not stalled:
                    stalled = True
                    # A slow consumer: read nothing until the connection has stopped
                    # reading its socket and the server waits for room to write.
                    await until(lambda: conn._reading_paused and draining, "both stopped")
                    stalled_server = True
                most = max(most, len(conn._buf))
        assert total == blocks * MiB
        assert digest.digest() == hashlib.sha256(block * blocks).digest()
        # Never more than the pause threshold plus one socket read (256 KiB) buffered.
        assert most <= 2 * MiB + 256 * KiB
        # And the server felt it: a write stalled while the client did not read.
        assert stalled_server


# -- connections going away ------------------------------------------------------------------


async def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        await ok(request, reader, writer)
        return False  # answers as keep-alive, then closes: an idle timeout

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        assert (await fetch(pool, server.host, "/1"))[0] == 200
        # The FIN arrives while the connection is idle (white box: the connection closed).
        (idle,) = pool._conns
        await asyncio.wait_for(idle.closed(), PATIENCE)
        assert (await fetch(pool, server.host, "/2"))[2] == b"GET /2"
        assert server.connections == 2
        assert len(server.requests) == 2


async def test_stale_reused_connection_is_retried_once_on_a_fresh_one() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        if request.index == 2:
            return False  # took the request, closed without a word
        await ok(request, reader, writer)
        return True

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        assert (await fetch(pool, server.host, "/1"))[0] == 200
        assert (await fetch(pool, server.host, "/2", "PUT", b"body"))[2] == b"PUT /2"
        assert [(r.conn, r.index, r.target) for r in server.requests] == [
            (1, 1, "/1"),
            (1, 2, "/2"),
            (2, 1, "/2"),
        ]
        assert server.requests[-1].body == b"body"


async def test_stale_connection_is_not_retried_with_an_iterable_body() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        if request.index == 2:
            return False
        await ok(request, reader, writer)
        return True

    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        assert (await fetch(pool, server.host, "/1"))[0] == 200
        headers = {"host": server.host, "content-length": "4"}
        with pytest.raises(ServerDisconnectedError):
            async with pool.request("PUT", server.host, "/2", headers, body()):
                pass
        assert server.connections == 1
        # The slot was freed: the pool still works.
        assert (await fetch(pool, server.host, "/3"))[0] == 200
        assert_slots_consistent(pool)


async def test_first_request_on_a_new_connection_is_not_retried() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        return False

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        with pytest.raises(ServerDisconnectedError):
            await fetch(pool, server.host)
        assert server.connections == 1


async def test_server_closing_mid_body_is_a_disconnect() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
        return False

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        for target in ("/length", "/chunked"):
            async with pool.request("GET", server.host, target, {"host": server.host}) as resp:
                assert resp.status == 200
                with pytest.raises(ServerDisconnectedError):
                    await resp.read()
        # And the same when the head itself is cut short.
        server.respond = _cut_head
        with pytest.raises(ServerDisconnectedError):
            await fetch(pool, server.host)


async def _cut_head(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
    return False


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 OK\r\n\r\n",
        b"SPDY/3 200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * KiB) + b"\r\n\r\n",
    ],
    ids=["no-code", "not-http", "garbage", "header", "length", "chunk-size", "huge-head"],
)
async def test_malformed_responses_are_protocol_errors(answer: bytes) -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        with pytest.raises(HttpProtocolError):
            await fetch(pool, server.host)
        # The broken connection was closed and its slot freed.
        server.respond = ok
        assert (await fetch(pool, server.host))[0] == 200
        assert server.connections == 2
        assert_slots_consistent(pool)


# -- timeouts and failures to connect -----------------------------------------------------------


async def test_read_timeout_waiting_for_the_head_and_for_the_body() -> None:
    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await server.stop.wait()
        return False

    async with (
        Server(respond) as server,
        HttpPool(scheme="http", limit=1, read_timeout=0.3) as pool,
    ):
        # Not before the read timeout (a timer never fires early); that it is the read
        # timeout that fired, its message says (a busy machine may fire it late).
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"for 0\.3 s"):
            await fetch(pool, server.host, "/head")
        assert time.monotonic() - started >= 0.25
        async with pool.request("GET", server.host, "/body", {"host": server.host}) as resp:
            assert await resp.read(3) == b"abc"
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=r"for 0\.3 s"):
                await resp.read(3)
            assert time.monotonic() - started >= 0.25


async def test_slow_but_steady_answer_is_not_a_timeout() -> None:
    body = b"trickled, a byte at a time"

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for byte in body:
            await writer.drain()
            # The trickle is the behaviour tested: 1.3 s in all, more than the read timeout,
            # with gaps of 0.05 s, far enough below it for a busy machine.
            await asyncio.sleep(0.05)
            writer.write(bytes([byte]))

    async with (
        Server(respond) as server,
        HttpPool(scheme="http", limit=1, read_timeout=1.0) as pool,
    ):
        assert (await fetch(pool, server.host))[2] == body
        assert (await fetch(pool, server.host))[2] == body


async def test_connect_refused_is_an_os_error() -> None:
    port = free_port()
    async with HttpPool(scheme="http", limit=1) as pool:
        for _ in range(2):  # the failed connect gave its slot back
            with pytest.raises(ConnectionRefusedError):
                await fetch(pool, f"127.0.0.1:{port}")


async def test_connect_timeout_covers_the_tls_handshake() -> None:
    # A TCP server that never speaks TLS: the handshake hangs. No read timeout: only the
    # connect timeout can end the wait.
    async with (
        Server(ok) as server,
        HttpPool(scheme="https", limit=1, connect_timeout=0.3, read_timeout=None) as pool,
    ):
        error = await outcome(fetch(pool, server.host))
        assert isinstance(error, TimeoutError), repr(error)


# -- the pool -------------------------------------------------------------------------------------


async def test_pool_limit_holds_under_concurrency() -> None:
    answer = asyncio.Event()

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        await answer.wait()
        await ok(request, reader, writer)

    async with Server(respond) as server, HttpPool(scheme="http", limit=2) as pool:
        fetches = asyncio.gather(*(fetch(pool, server.host, f"/{i}") for i in range(10)))
        # No answer until every request has reached the server or queued for a slot.
        await until(lambda: len(server.requests) + len(pool._waiters) == 10, "all placed")
        assert server.max_active <= 2
        answer.set()
        results = await fetches
        assert [body for _, _, body in results] == [f"GET /{i}".encode() for i in range(10)]
        assert server.max_active <= 2
        assert server.connections == 2
        assert_slots_consistent(pool)


async def test_callers_beyond_the_limit_are_served_in_order() -> None:
    answer = asyncio.Event()

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        await answer.wait()
        await ok(request, reader, writer)

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        tasks = [asyncio.create_task(fetch(pool, server.host, "/0"))]
        await until(lambda: len(server.requests) == 1, "the first request at the server")
        for i in range(1, 6):
            tasks.append(asyncio.create_task(fetch(pool, server.host, f"/{i}")))
            # Each queues behind the previous ones before the next comes.
            await until(lambda i=i: len(pool._waiters) == i, f"caller {i} queued")
        answer.set()
        await asyncio.gather(*tasks)
        assert [r.target for r in server.requests] == [f"/{i}" for i in range(6)]
        assert server.connections == 1


async def test_idle_connection_to_another_host_makes_room() -> None:
    async with Server() as server, HttpPool(scheme="http", limit=1) as pool:
        other = f"localhost:{server.port}"
        assert (await fetch(pool, server.host, "/a"))[0] == 200
        assert (await fetch(pool, other, "/b"))[0] == 200
        assert (await fetch(pool, server.host, "/c"))[0] == 200
        assert server.connections == 3
        # The others were closed to make room (once the server has seen them close).
        await until(lambda: server.active == 1, "the others closed")


async def test_unread_body_closes_the_connection() -> None:
    payload = b"z" * MiB

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(response(body=payload))

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        async with pool.request("GET", server.host, "/", {"host": server.host}) as resp:
            assert resp.status == 200
            assert len(await resp.read(10)) == 10
        with pytest.raises(HttpConnectionError):
            await resp.read()
        assert (await fetch(pool, server.host))[2] == payload
        assert server.connections == 2


async def test_error_in_the_block_closes_the_connection() -> None:
    async with Server() as server, HttpPool(scheme="http", limit=1) as pool:

        async def read_then_fail() -> None:
            async with pool.request("GET", server.host, "/", {"host": server.host}) as resp:
                await resp.read()
                raise RuntimeError("caller failed")

        with pytest.raises(RuntimeError, match="caller"):
            await read_then_fail()
        assert (await fetch(pool, server.host))[0] == 200
        assert server.connections == 2


async def test_cancellation_frees_the_connection_and_the_slot() -> None:
    slow_arrived = asyncio.Event()
    slow_answer = asyncio.Event()

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/hang":
            await server.stop.wait()
            return False
        if request.target == "/slow":
            slow_arrived.set()
            await slow_answer.wait()
        await ok(request, reader, writer)
        return True

    async with Server(respond) as server, HttpPool(scheme="http", limit=1) as pool:
        # Cancelled while waiting for the answer (that never comes).
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await fetch(pool, server.host, "/hang")
        # The slot was freed: the next request gets it (the guard stops a hang only).
        async with asyncio.timeout(PATIENCE):
            assert (await fetch(pool, server.host, "/next"))[2] == b"GET /next"

        # Cancelled while queued for the only slot, which "/slow" holds.
        slow = asyncio.create_task(fetch(pool, server.host, "/slow"))
        await asyncio.wait_for(slow_arrived.wait(), PATIENCE)
        queued = asyncio.create_task(fetch(pool, server.host, "/queued"))
        await until(lambda: len(pool._waiters) == 1, "/queued waiting for the slot")
        queued.cancel()
        slow_answer.set()
        assert (await slow)[2] == b"GET /slow"
        with pytest.raises(asyncio.CancelledError):
            await queued
        async with asyncio.timeout(PATIENCE):
            assert (await fetch(pool, server.host, "/last"))[2] == b"GET /last"
        assert "/queued" not in [r.target for r in server.requests]
        assert_slots_consistent(pool)


async def test_mixed_hosts_and_random_cancellations_never_leak_slots() -> None:
    rng = random.Random(1234)

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> bool:
        # Random answer times, so the random timeouts cancel requests at every stage: the
        # behaviour tested; any interleaving must leave the pool consistent.
        await asyncio.sleep(int(request.target[1:]) / 1000)
        await ok(request, reader, writer)
        return request.index < 3  # some connections end, as a server's max-requests would

    async with Server(respond) as server, HttpPool(scheme="http", limit=3) as pool:
        hosts = (server.host, f"localhost:{server.port}")

        async def one(i: int) -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rng.choice((0.005, 0.02, 1.0))):
                    await fetch(pool, hosts[i % 2], f"/{rng.randrange(15)}")

        most = 0

        async def sample() -> None:
            # The server cannot count this one: an aborted connection stays "active" there
            # until its handler notices, while the client already reused the slot.
            nonlocal most
            while True:
                most = max(most, pool._open, len(pool._conns))
                await asyncio.sleep(0.001)  # sampling, as often as the loop allows

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one(i) for i in range(120)))
        sampler.cancel()
        assert 0 < most <= 3
        await until(lambda: pool._open == len(pool._conns) and not pool._waiters, "settled")
        assert_slots_consistent(pool)
        for host in hosts:
            assert (await fetch(pool, host, "/0"))[0] == 200


async def test_closed_pool_refuses_requests() -> None:
    async with Server() as server:
        pool = HttpPool(scheme="http", limit=1)
        assert (await fetch(pool, server.host))[0] == 200
        await pool.close()
        with pytest.raises(HttpConnectionError):
            await fetch(pool, server.host)


# -- TLS ------------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, pem


async def test_tls_with_a_trusted_self_signed_certificate() -> None:
    payload = os.urandom(200 * KiB)

    async def respond(request: Request, reader: Any, writer: asyncio.StreamWriter) -> None:
        if request.method == "PUT":
            writer.write(response(body=hashlib.md5(request.body).hexdigest().encode()))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))

    with tempfile.TemporaryDirectory() as directory:
        cert, key, pem = _self_signed(Path(directory))
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cadata=pem.decode())

    async with Server(respond, tls=server_context) as server:
        async with HttpPool(scheme="https", limit=2, ssl_context=client_context) as pool:
            for host in (f"localhost:{server.port}", server.host):
                assert (await fetch(pool, host, "/get"))[2] == payload
                _, _, body = await fetch(pool, host, "/put", "PUT", payload)
                assert body == hashlib.md5(payload).hexdigest().encode()
            assert server.connections == 2  # one per host, each reused

        # Without trusting the certificate the handshake fails, as an OSError.
        async with HttpPool(scheme="https", limit=1) as untrusting:
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                await fetch(untrusting, server.host)
            assert isinstance(caught.value, OSError)


# -- the same on uvloop ---------------------------------------------------------------------------

_ON_BOTH_LOOPS: list[Callable[[], Coroutine[Any, Any, None]]] = [
    test_keep_alive_reuses_one_connection_and_sends_headers_as_given,
    test_unusual_but_valid_header_lines_are_understood,
    test_chunked_body_with_extensions_and_trailers,
    test_body_until_close_without_length,
    test_head_and_204_have_no_body_and_keep_the_connection,
    test_interim_100_continue_is_skipped,
    test_small_put_is_one_write_and_arrives_in_one_recv,
    test_streaming_upload_from_async_iterable_honours_flow_control,
    test_early_answer_while_uploading_is_returned,
    test_upload_the_server_stops_taking_times_out,
    test_large_download_is_streamed_with_bounded_buffering,
    test_idle_connection_closed_by_the_server_is_replaced,
    test_stale_reused_connection_is_retried_once_on_a_fresh_one,
    test_stale_connection_is_not_retried_with_an_iterable_body,
    test_server_closing_mid_body_is_a_disconnect,
    test_read_timeout_waiting_for_the_head_and_for_the_body,
    test_connect_refused_is_an_os_error,
    test_pool_limit_holds_under_concurrency,
    test_unread_body_closes_the_connection,
    test_cancellation_frees_the_connection_and_the_slot,
    test_mixed_hosts_and_random_cancellations_never_leak_slots,
    test_tls_with_a_trusted_self_signed_certificate,
]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("case", _ON_BOTH_LOOPS, ids=lambda case: case.__name__[5:])
def test_on_both_loops(loop: str, case: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        if loop == "uvloop":
            assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(case())
