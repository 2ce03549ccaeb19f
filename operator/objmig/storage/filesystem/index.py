"""The index beside a tree: what a file cannot hold of the object it was written from.

`<root>/.objmig/index.jsonl`, one JSON line per file written: its ETag (as computed from
the bytes written, with the source's part boundaries), SHA-256, part sizes, last-modified
time, user metadata, content headers, tags, storage class and version id. A filesystem →
S3 migration reads it back, so the object is written again as it was (same parts, hence
same ETag; same metadata, headers and tags).

An entry describes a file only while the file still has the size and modification time
it recorded: a file changed since (by anyone) has no entry, and is described from its
bytes alone. Lines are only ever appended (O_APPEND, one `write` each), after the file is
in place, by any number of processes; a reader takes the newest entry of a key that still
describes its file, and reads what others appended when it meets a file it does not know.
A line cut short by a crash is skipped. Deletions append a tombstone.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from objmig.storage.types import ContentHeaders

INDEX_NAME = "index.jsonl"
#: Entries kept per key: the newest that still describes the file wins.
_HISTORY = 4


@dataclass(frozen=True)
class IndexEntry:
    """One file as written: what the object it came from was."""

    key: str
    size: int
    mtime_ns: int
    etag: str
    sha256: str
    last_modified: datetime
    parts: tuple[int, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    content: ContentHeaders = field(default_factory=ContentHeaders)
    tags: dict[str, str] = field(default_factory=dict)
    storage_class: str | None = None
    version_id: str | None = None
    migration: str | None = None
    deleted: bool = False

    def describes(self, size: int, mtime_ns: int) -> bool:
        """Whether a file of this size and modification time is the one written."""
        return not self.deleted and self.size == size and self.mtime_ns == mtime_ns

    def to_json(self) -> str:
        content = {k: v for k, v in _content_dict(self.content).items() if v is not None}
        document: dict[str, Any] = {
            "key": self.key,
            "size": self.size,
            "mtimeNs": self.mtime_ns,
            "etag": self.etag,
            "sha256": self.sha256,
            "lastModified": self.last_modified.isoformat(),
            "parts": list(self.parts) or None,
            "metadata": self.metadata or None,
            "content": content or None,
            "tags": self.tags or None,
            "storageClass": self.storage_class,
            "versionId": self.version_id,
            "migration": self.migration,
            "deleted": self.deleted or None,
        }
        return json.dumps({k: v for k, v in document.items() if v is not None})

    @classmethod
    def from_json(cls, line: str) -> IndexEntry:
        raw = json.loads(line)
        content = raw.get("content") or {}
        expires = content.get("expires")
        return cls(
            key=raw["key"],
            size=int(raw.get("size", 0)),
            mtime_ns=int(raw.get("mtimeNs", 0)),
            etag=raw.get("etag", ""),
            sha256=raw.get("sha256", ""),
            last_modified=datetime.fromisoformat(raw.get("lastModified", "1970-01-01T00:00:00Z")),
            parts=tuple(int(p) for p in raw.get("parts") or ()),
            metadata=dict(raw.get("metadata") or {}),
            content=ContentHeaders(
                content_type=content.get("contentType"),
                cache_control=content.get("cacheControl"),
                content_disposition=content.get("contentDisposition"),
                content_encoding=content.get("contentEncoding"),
                content_language=content.get("contentLanguage"),
                expires=datetime.fromisoformat(expires) if expires else None,
                website_redirect_location=content.get("websiteRedirectLocation"),
            ),
            tags=dict(raw.get("tags") or {}),
            storage_class=raw.get("storageClass"),
            version_id=raw.get("versionId"),
            migration=raw.get("migration"),
            deleted=bool(raw.get("deleted", False)),
        )


def tombstone(key: str) -> IndexEntry:
    """The line that says a key's file was deleted."""
    return IndexEntry(
        key=key,
        size=0,
        mtime_ns=0,
        etag="",
        sha256="",
        last_modified=datetime.now(UTC),
        deleted=True,
    )


def _content_dict(content: ContentHeaders) -> dict[str, str | None]:
    return {
        "contentType": content.content_type,
        "cacheControl": content.cache_control,
        "contentDisposition": content.content_disposition,
        "contentEncoding": content.content_encoding,
        "contentLanguage": content.content_language,
        "expires": content.expires.isoformat() if content.expires else None,
        "websiteRedirectLocation": content.website_redirect_location,
    }


class FileIndex:
    """The index of one tree: read lazily, appended to, and synced in groups.

    Safe to use from the event loop and from the threads the tree's I/O runs in.
    """

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, INDEX_NAME)
        self._entries: dict[str, list[IndexEntry]] = {}
        self._offset = 0
        self._lock = threading.Lock()
        self._fd: int | None = None
        # Group commit: one fsync for every line appended while the previous one ran.
        self._sync_running: asyncio.Future[None] | None = None
        self._sync_wanted = False

    def lookup(self, key: str, size: int, mtime_ns: int) -> IndexEntry | None:
        """The entry describing the file of `key` as it is now (its size and mtime), if any."""
        with self._lock:
            found = self._match(key, size, mtime_ns)
            if found is None and self._grew():
                self._read_new()
                found = self._match(key, size, mtime_ns)
        return found

    def _match(self, key: str, size: int, mtime_ns: int) -> IndexEntry | None:
        history = self._entries.get(key)
        if not history or history[-1].deleted:
            return None
        for entry in reversed(history):
            if entry.describes(size, mtime_ns):
                return entry
        return None

    def _grew(self) -> bool:
        try:
            return os.stat(self.path).st_size > self._offset
        except FileNotFoundError:
            return False

    def _read_new(self) -> None:
        """Read what was appended since the last read (by us or any other process)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line still being appended waits for the next read
        for line in data[:end].splitlines():
            try:
                self._remember(IndexEntry.from_json(line.decode("utf-8")))
            except (ValueError, KeyError, TypeError):
                continue  # cut short by a crash
        self._offset += end

    def _remember(self, entry: IndexEntry) -> None:
        history = self._entries.setdefault(entry.key, [])
        history.append(entry)
        del history[:-_HISTORY]

    def append(self, entry: IndexEntry) -> None:
        """Append one entry (one `write`, so lines of concurrent writers never interleave)."""
        line = (entry.to_json() + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
        # Not remembered here: the next lookup reads it back like anyone else's line.
        self._sync_wanted = True

    async def sync(self) -> None:
        """Make every line appended so far durable; concurrent callers share one fsync."""
        while self._sync_wanted:
            running = self._sync_running
            if running is not None and not running.done():
                # Lines appended after this fsync began need the next one.
                await asyncio.shield(running)
                continue
            self._sync_wanted = False
            fd = self._fd
            if fd is None:
                return
            running = asyncio.ensure_future(asyncio.to_thread(os.fsync, fd))
            self._sync_running = running
            await asyncio.shield(running)

    def entries(self) -> dict[str, IndexEntry]:
        """The newest entry of every key not deleted (for the audit)."""
        with self._lock:
            if self._grew():
                self._read_new()
            return {k: h[-1] for k, h in self._entries.items() if h and not h[-1].deleted}

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
