"""HTTP/1.1 on the wire, for `http1`'s client: request heads out, response heads in.

Pure functions over text and bytes (no sockets): building a request head that cannot
smuggle a header, parsing a status line and header fields (the fast path for the common
well-formed head, a careful one for repeats and folded lines), and deciding from them how
the body is framed (Content-Length, chunked, until close, none) and whether the
connection may be kept alive. The errors the client raises are defined here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

VERSIONS: Final = frozenset({"HTTP/1.1", "HTTP/1.0"})

# Body framing of the response being read on a connection.
DONE: Final = 0
LENGTH: Final = 1
CHUNKED: Final = 2
UNTIL_CLOSE: Final = 3


class HttpConnectionError(ConnectionError):
    """A connection-level failure: the request may be retried on another connection."""


class ServerDisconnectedError(HttpConnectionError):
    """The server closed (or reset) the connection before the response was complete."""


class HttpProtocolError(HttpConnectionError):
    """The server sent something that is not a valid HTTP/1.x response."""


class ResponseHead(NamedTuple):
    """A final response head: status, headers, and how its body is framed.

    `mode` is one of the framings above; `length` the Content-Length (for LENGTH);
    `keep_alive`: what the server allows (the request's own `Connection: close` aside).
    """

    status: int
    reason: str
    headers: dict[str, str]
    mode: int
    length: int
    keep_alive: bool


def parse_response_head(text: str, host: str, head_request: bool) -> ResponseHead | None:
    """A final response head (status line and header fields, without the blank line);
    None for an interim (1xx) one, which is skipped.

    `host` names the server in errors; `head_request`: the answer to a HEAD has no body
    whatever its Content-Length says.
    """
    lines = text.split("\r\n")
    status_line = lines[0]
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in VERSIONS or len(code) != 3 or not code.isdigit() or not code.isascii():
        raise HttpProtocolError(f"malformed status line from {host}: {status_line[:80]!r}")
    status = int(code)
    if status < 200:
        if status == 101:
            raise HttpProtocolError(f"{host} switched protocols without being asked")
        return None
    del lines[0]
    # The common case in one cheap pass: every line "name: value", no name repeated.
    # Anything else (no colon, a repeat, a folded line, space before a colon) is
    # re-parsed carefully; the substring tests are C-speed scans of a short head.
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            headers = parse_fields(lines, host)
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
            headers = parse_fields(lines, host)

    keep_alive = True
    connection = headers.get("connection")
    if connection is not None:
        tokens = [token.strip() for token in connection.lower().split(",")]
        if "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens):
            keep_alive = False
    elif version == "HTTP/1.0":
        keep_alive = False

    transfer_encoding = headers.get("transfer-encoding")
    if head_request or status == 204 or status == 304:
        mode, length = DONE, 0
    elif transfer_encoding is not None:
        if "content-length" in headers:
            # Both framings present: trust the chunked one, but never reuse a
            # connection whose framing a middlebox may have read differently.
            keep_alive = False
        if transfer_encoding.rsplit(",", 1)[-1].strip().lower() == "chunked":
            mode, length = CHUNKED, 0
        else:
            mode, length = UNTIL_CLOSE, 0
            keep_alive = False
    else:
        length_text = headers.get("content-length")
        if length_text is None:
            mode, length = UNTIL_CLOSE, 0
            keep_alive = False
        else:
            parsed = content_length(length_text)
            if parsed is None:
                raise HttpProtocolError(f"invalid content-length from {host}: {length_text[:40]!r}")
            mode, length = (LENGTH if parsed else DONE), parsed
    return ResponseHead(status, reason, headers, mode, length, keep_alive)


def parse_fields(lines: list[str], host: str) -> dict[str, str]:
    """Header lines the fast path declined: repeats joined, obs-fold unfolded."""
    headers: dict[str, str] = {}
    name = ""
    for line in lines:
        field, colon, value = line.partition(":")
        if line[:1] in (" ", "\t"):
            if not name:
                raise HttpProtocolError(f"header continuation first from {host}")
            # obs-fold: a continuation of the previous header (RFC 9112 5.2).
            headers[name] = f"{headers[name]} {line.strip()}".strip()
            continue
        if not colon or not field.strip():
            raise HttpProtocolError(f"malformed header line from {host}: {line[:80]!r}")
        name = field.strip().lower()
        if name in headers:
            headers[name] = f"{headers[name]}, {value.strip()}"
        else:
            headers[name] = value.strip()
    return headers


def content_length(text: str) -> int | None:
    if text.isdigit() and text.isascii():
        return int(text)
    # A repeated header was joined with ", "; identical values are acceptable (RFC 9110 8.6).
    values = {value.strip() for value in text.split(",")}
    if len(values) == 1:
        (value,) = values
        if value.isdigit() and value.isascii():
            return int(value)
    return None


def build_head(method: str, target: str, headers: Mapping[str, str]) -> bytes:
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
