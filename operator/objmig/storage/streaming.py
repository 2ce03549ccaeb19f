"""Moving bytes from a GET into an upload: stream bodies and the read-ahead budget.

`PartStream` is an upload body of known length that pulls its bytes from a source GET as
the HTTP client sends them: memory per stream is one chunk, whatever the part size.

`ReadAhead` is the memory a process lets its streamed copies fill with parts read ahead of
their upload, so that one GET per object can feed several part uploads at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

from objmig.storage.errors import TruncatedBodyError
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.types import STREAM_CHUNK, Body

# Chunks at least this big are hashed off the event loop (below it the thread hop costs
# more than the hashing).
_HASH_OFF_LOOP = 256 * 1024


class ReadAhead:
    """Bytes of parts held in memory between their GET and their upload, per process.

    Taking never waits: a copy that finds no room streams its next part straight from the
    GET instead, so the budget bounds memory without ever stalling a copy on another.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0

    def try_take(self, nbytes: int) -> bool:
        if self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        self.peak = max(self.peak, self.held)
        return True

    def give(self, nbytes: int) -> None:
        self.held -= nbytes


class PartStream:
    """An upload body of known length fed from a source GET body.

    The HTTP client sends async iterables chunk by chunk (the request is signed with an
    unsigned payload, see `s3http`). A source failure mid-stream is kept in `error`, because
    the upload reports it as its own failure; the copy re-raises the real cause.
    """

    def __init__(
        self,
        source: Body,
        length: int,
        *,
        on_chunk: Callable[[bytes], None] | None = None,
        limiter: RateLimiter | None = None,
        on_progress: Callable[[int], None] | None = None,
        md5: bool = True,
        describe: str = "source",
    ) -> None:
        self._source = source
        self.length = length
        self._on_chunk = on_chunk
        self._limiter = limiter
        self._on_progress = on_progress
        self._describe = describe
        # The MD5 of the bytes sent, to compare with the ETag the store returns; not needed
        # when the object's final ETag is compared with the source's anyway.
        self.md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self.sent = 0
        self.error: BaseException | None = None
        self._started = False

    def __len__(self) -> int:
        return self.length

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._started:
            # A resend (e.g. after a redirect) would need the source bytes again.
            raise RuntimeError("PartStream can only be sent once")
        self._started = True
        return self._chunks()

    async def collect(self) -> bytes:
        """All the bytes at once, with the same accounting: for objects small enough that
        one buffer costs less than streaming (one write instead of a chunked body)."""
        chunks = [chunk async for chunk in self.__aiter__()]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while self.sent < self.length:
                chunk = await self._source.read(min(STREAM_CHUNK, self.length - self.sent))
                if not chunk:
                    raise TruncatedBodyError(
                        f"{self._describe}: body ended after {self.sent} of {self.length} bytes"
                    )
                if self._limiter is not None:
                    await self._limiter.acquire(len(chunk))
                if self.md5 is not None:
                    if len(chunk) >= _HASH_OFF_LOOP:
                        # hashlib releases the GIL: hash big chunks on a thread, so the
                        # event loop keeps other transfers moving meanwhile.
                        await asyncio.to_thread(self.md5.update, chunk)
                    else:
                        self.md5.update(chunk)
                if self._on_chunk is not None:
                    self._on_chunk(chunk)
                self.sent += len(chunk)
                if self._on_progress is not None:
                    self._on_progress(len(chunk))
                yield chunk
        except Exception as exc:
            # Not BaseException: GeneratorExit (the client closing the body early because the
            # server answered already) and cancellation are not source failures.
            self.error = exc
            raise
