"""The application's per-object hook (`spec.hooks.perObject`): one HTTP POST per object.

After an object is verified (with copy.mode none: after it is looked at), its JSON
document goes to the endpoint. A 2xx answer marks the hook done in the ledger, and it is
never sent again; 5xx, 429, 408, timeouts and connection errors are retried under
`spec.retry`; any other answer fails the object with what the endpoint said. A
``Retry-After`` on a retryable answer (seconds or an HTTP date) sets the least wait before
the next call, up to `spec.retry.backoff.max`, so an endpoint cannot park objects forever.

The endpoint must be idempotent: between its 2xx and the ledger's record of it lies a
moment (a crash, a killed pod, a lost lease) after which the next attempt cannot know the
call was answered, and sends it again. Each call carries an ``Idempotency-Key`` that is
the same for every call about one version of one object, for endpoints that deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from objmig.api.conditions import Reason
from objmig.api.migration import ObjectMigrationSpec, PerObjectHook
from objmig.api.types import parse_duration
from objmig.engine.pipeline.outcomes import ApplicationError
from objmig.ledger import ObjectRow, StepResult
from objmig.storage.errors import ErrorClass, ErrorKind
from objmig.storage.http1 import HttpPool

_FIELD = "spec.hooks.perObject.url"
#: Most of an answer's body kept as the object's error message.
MESSAGE_CHARS = 300
#: Answers that say "later" rather than "no".
_RETRYABLE_STATUS = frozenset({408, 425, 429})


class HookError(Exception):
    """The endpoint did not answer 2xx; `error` says whether to try again, and
    `retry_after` (seconds) how long the endpoint asked to be left alone, if it did."""

    def __init__(self, error: ErrorClass, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header's wait: delay-seconds or an HTTP date (RFC 9110 10.2.3);
    None when absent or unreadable, never negative."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class Endpoint:
    """Where the hook is sent: the URL taken apart for the HTTP client."""

    scheme: str
    host: str  # the authority: name or name:port
    target: str  # path and query
    address: tuple[str, int]  # what a connection goes to

    @classmethod
    def of(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.netloc, target, (parts.hostname or "", port))


def hook_document(
    migration: str, spec: ObjectMigrationSpec, row: ObjectRow, result: StepResult
) -> dict[str, Any]:
    """What the endpoint is told about one verified object."""
    return {
        "migration": migration,
        "source": {
            "bucket": spec.source.bucket,
            "key": row.key,
            "versionId": row.version_id or None,
        },
        "target": {
            "bucket": spec.target.bucket,
            "key": result.target_key or row.target_key or row.key,
            "versionId": result.target_version_id or row.target_version_id,
        },
        "size": row.size,
        "etag": result.target_etag or row.target_etag or row.etag,
        "checksum": result.target_checksum
        or row.target_checksum
        or result.source_checksum
        or row.source_checksum,
    }


def idempotency_key(migration: str, row: ObjectRow) -> str:
    """The same for every call about this version of this object."""
    return f"{migration}/{row.key}/{row.version_id}/{row.etag}"


class HookClient:
    """Sends one migration's per-object hooks; at most ``limit`` connections at once."""

    def __init__(self, hook: PerObjectHook, token: str | None, *, limit: int) -> None:
        self._endpoint = Endpoint.of(hook.url)
        self._timeout = parse_duration(hook.timeout).total_seconds()
        self._token = token
        self._pool = HttpPool(
            scheme=self._endpoint.scheme,
            limit=limit,
            connect_timeout=self._timeout,
            read_timeout=self._timeout,
        )

    async def call(self, document: dict[str, Any], key: str) -> None:
        """POST ``document``; returns on 2xx, raises `HookError` otherwise."""
        body = json.dumps(document, separators=(",", ":")).encode()
        headers = {
            "host": self._endpoint.host,
            "content-type": "application/json",
            "content-length": str(len(body)),
            "idempotency-key": key,
            "user-agent": "objmig",
        }
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._token}"
        try:
            async with asyncio.timeout(self._timeout):
                async with self._pool.request(
                    "POST", self._endpoint.host, self._endpoint.target, headers, body
                ) as response:
                    text = (await response.read(64 * 1024)).decode("utf-8", "replace")
                    # Read to the end, so the connection can serve the next call.
                    while await response.read(64 * 1024):
                        pass
                    status = response.status
                    retry_after = response.headers.get("retry-after")
        except TimeoutError:
            raise HookError(
                ErrorClass("retryable", "HookTimeout", f"no answer within {self._timeout:g}s")
            ) from None
        except OSError as error:
            raise HookError(
                ErrorClass("retryable", "HookUnreachable", f"{type(error).__name__}: {error}")
            ) from None
        if 200 <= status < 300:
            return
        message = f"HTTP {status}: {' '.join(text.split())[:MESSAGE_CHARS]}".rstrip(": ")
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        kind: ErrorKind = "retryable" if retryable else "permanent"
        wait = retry_after_seconds(retry_after, datetime.now(UTC)) if retryable else None
        raise HookError(ErrorClass(kind, f"Hook{status}", message), wait)

    async def close(self) -> None:
        await self._pool.close()


async def check_reachable(hook: PerObjectHook) -> None:
    """Refuse a hook nobody can answer before any object is sent to it.

    A name that does not resolve, or a port where nothing listens, raises
    `ApplicationError` (``HookUnreachable``) naming the field. A timeout proves nothing
    (a busy endpoint): it is left to each object's retries.
    """
    endpoint = Endpoint.of(hook.url)
    host, port = endpoint.address
    timeout = parse_duration(hook.timeout).total_seconds()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return
    except (ConnectionRefusedError, socket.gaierror) as error:
        raise ApplicationError(
            Reason.HOOK_UNREACHABLE,
            f"{_FIELD}: cannot connect to {host}:{port}: {error.strerror or error}",
        ) from None
    except OSError:
        return  # unreachable networks and the like may pass; each object retries
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
