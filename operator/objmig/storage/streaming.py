"""Moving bytes from a GET into an upload without holding them: stream bodies and hashing.

`PartStream` is an upload body of known length that pulls its bytes from a source GET as
the HTTP client sends them: memory per stream is one chunk, whatever the part size.

`OrderedHasher` computes the SHA-256 of a whole object whose parts stream concurrently.
SHA-256 cannot be combined from per-part states, so bytes must be hashed in object order:
the first unfinished part is hashed as it streams, later parts' bytes wait in memory until
every part before them is done. `admit` keeps a part from starting until it is within
`window` parts of the front, which bounds that memory by (window - 1) x part size.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

from objmig.storage.errors import TruncatedBodyError
from objmig.storage.objects import STREAM_CHUNK
from objmig.storage.ratelimit import RateLimiter
from objmig.storage.s3http import Body

# Chunks at least this big are hashed off the event loop (below it the thread hop costs
# more than the hashing).
_HASH_OFF_LOOP = 256 * 1024


class OrderedHasher:
    """SHA-256 over parts that arrive concurrently, hashed strictly in part order."""

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self._digest = hashlib.sha256()
        self._front = 0
        self._buffers: dict[int, list[bytes]] = {}
        self._done: set[int] = set()
        self._changed = asyncio.Condition()
        self.buffered = 0
        self.peak_buffered = 0

    async def admit(self, index: int) -> None:
        """Wait until part `index` may start streaming."""
        async with self._changed:
            await self._changed.wait_for(lambda: index < self._front + self.window)

    def feed(self, index: int, chunk: bytes) -> None:
        """Bytes of part `index`, in order within the part."""
        if index == self._front:
            self._digest.update(chunk)
            return
        self._buffers.setdefault(index, []).append(chunk)
        self.buffered += len(chunk)
        self.peak_buffered = max(self.peak_buffered, self.buffered)

    async def finish_part(self, index: int) -> None:
        """Part `index` has delivered all its bytes."""
        self._done.add(index)
        advanced = False
        while self._front in self._done:
            self._done.discard(self._front)
            self._front += 1
            advanced = True
            # The new front's bytes so far go into the digest now; its later bytes will
            # go in directly as they arrive.
            for chunk in self._buffers.pop(self._front, []):
                self._digest.update(chunk)
                self.buffered -= len(chunk)
        if advanced:
            async with self._changed:
                self._changed.notify_all()

    def discard(self, index: int) -> None:
        """Forget a part's buffered bytes (the part failed and the copy is aborting)."""
        for chunk in self._buffers.pop(index, []):
            self.buffered -= len(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


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
