"""Sending a request again after a transient failure: how often, how long to wait, and
what was sent again (for the progress line and the status); and a GET's body read on
after it was cut short (`ResumingBody`).

Used by the lean client (`s3http`); the SDK client is configured the same way
(`sdk.open_client`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from objmig.storage.errors import TruncatedBodyError, describe, worth_resending
from objmig.storage.types import Body

T = TypeVar("T")


@dataclass(frozen=True)
class RequestRetry:
    """How often one request is sent again when it fails transiently (a 5xx, throttling,
    a reset, a timeout, an answer cut short), before the failure is the object's.

    A few quick retries absorb the faults of a healthy store (at 5% of each kind, one
    object in two met one per attempt); what persists reaches the engine's retry policy
    (`spec.retry`), which backs off for minutes and spends the object's attempts.

    Sending again is safe for every request objmig makes once its answer may have been
    lost: reads, UploadPart and UploadPartCopy (the part is replaced), PutObject and
    CopyObject (the same bytes again, or, written create-only, a 412 that sends the copy
    to the existing-target check), AbortMultipartUpload (NoSuchUpload is done), and
    CompleteMultipartUpload, whose NoSuchUpload after a lost answer is checked against the
    target (`copy/multipart.py`). A lost CreateMultipartUpload leaves an upload no one
    knows the id of, for the store's `AbortIncompleteMultipartUpload` lifecycle rule.
    """

    attempts: int = 3
    #: The first delay; each next one is four times longer, all jittered down to half.
    first_delay: float = 0.2

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try `attempt + 1`."""
        longest = self.first_delay * 4 ** (attempt - 1)
        return random.uniform(longest / 2, longest)  # noqa: S311 - jitter, not a secret


#: A listing page asked for again once its own request's resends are spent: a scan is a
#: chain of thousands of pages, so a fault that outlasts a few quick resends must cost a
#: page a pause (up to ~13 s in all), not the whole scan.
LISTING_PATIENCE = RequestRetry(attempts=5, first_delay=0.2)


class RetryCount:
    """Requests sent again by one client, and the last failure that made one."""

    def __init__(self) -> None:
        self.count = 0
        self.last_error: str | None = None

    def note(self, error: BaseException) -> None:
        self.count += 1
        self.last_error = describe(error)


async def resend(
    send: Callable[[], Awaitable[T]],
    policy: RequestRetry,
    retries: RetryCount,
    *,
    replayable: bool,
) -> T:
    """`send()`, up to `policy.attempts` times while it fails transiently.

    What is sent again must be harmless to repeat: reads are, and so is every write
    objmig makes once its answer was lost (see `RequestRetry`). A body streamed from
    elsewhere cannot be sent twice (`replayable=False`): its failure is the caller's.
    """
    attempt = 1
    while True:
        try:
            return await send()
        except Exception as exc:
            if not replayable or attempt >= policy.attempts or not worth_resending(exc):
                raise
            retries.note(exc)
            await asyncio.sleep(policy.delay(attempt))
            attempt += 1


class ResumingBody:
    """A GET's body that, cut short or reset while it streams, is read on from where it
    stopped: `reopen(received)` GETs the rest (a range, pinned to the ETag the first
    answer had), up to `policy.attempts` answers in all.

    The bytes already read have gone on to the upload; without this, a body cut short
    would fail the whole attempt and copy the object again from its first byte.
    """

    def __init__(
        self,
        first: Body,
        length: int,
        reopen: Callable[[int], Awaitable[Body]],
        policy: RequestRetry,
        retries: RetryCount,
    ) -> None:
        self._body = first
        self._length = length
        self._reopen = reopen
        self._policy = policy
        self._retries = retries
        self._answers = 1
        self.received = 0

    async def read(self, n: int = -1) -> bytes:
        while True:
            try:
                chunk = await self._body.read(n)
            except Exception as exc:
                if not worth_resending(exc):
                    raise
                error: Exception = exc
            else:
                if chunk or self.received >= self._length:
                    self.received += len(chunk)
                    return chunk
                error = TruncatedBodyError(
                    f"body ended after {self.received} of {self._length} bytes"
                )
            if self._answers >= self._policy.attempts:
                raise error
            self._retries.note(error)
            await asyncio.sleep(self._policy.delay(self._answers))
            self._answers += 1
            self._body = await self._reopen(self.received)
