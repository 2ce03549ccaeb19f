"""Encodings of ledger rows: the per-object report (JSONL / CSV) and the verification digest.

Both are pure functions over rows, kept apart from the database code so that their byte
formats can be read, tested and changed deliberately. The digest encoding in particular is a
contract: a ``MigrationCleanup`` approval quotes the digest, so the same verified rows must
always give the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import asyncpg

from objmig.ledger.models import OBJECT_COLUMNS

__all__ = [
    "DIGEST_COLUMNS",
    "DIGEST_HEADER",
    "DIGEST_HEADER_V2",
    "REPORT_COLUMNS",
    "DigestBuilder",
    "ReportFormat",
    "encode_digest_record",
    "encode_report_rows",
    "report_header",
]

ReportFormat = Literal["jsonl", "csv"]
#: A database record or a dict keyed by column name.
Row = asyncpg.Record | Mapping[str, Any]

#: Report columns: every column of ``objects`` except the internal migration id.
REPORT_COLUMNS: tuple[str, ...] = tuple(c for c in OBJECT_COLUMNS if c != "migration_id")

#: The digest's fields, in encoding order.
DIGEST_COLUMNS: tuple[str, ...] = (
    "key",
    "version_id",
    "size",
    "etag",
    "target_key",
    "target_etag",
    "source_checksum",
)

#: Domain separation: the hash input starts with this, so a digest of version 1 can never
#: equal a digest of another encoding, nor a SHA-256 of some unrelated file.
DIGEST_HEADER = b"objmig-verification-v1\n"
#: Version 2 (migrations of several buckets): each record starts with the bucket.
DIGEST_HEADER_V2 = b"objmig-verification-v2\n"


def _text(value: Any) -> str:
    """Render one column value for a report: ISO-8601 times, plain enum values, '' for NULL."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def report_header(fmt: ReportFormat) -> str:
    """What a report starts with: the CSV header line, nothing for JSONL."""
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(REPORT_COLUMNS)
        return buf.getvalue()
    return ""


def encode_report_rows(rows: Iterable[Row], fmt: ReportFormat) -> str:
    """Encode a batch of rows (records or dicts with every report column) as report text.

    JSONL: one JSON object per line with the ``REPORT_COLUMNS`` as keys (NULL is ``null``,
    times are ISO-8601 strings). CSV: RFC 4180 quoting, ``\\n`` line ends, NULL as empty.
    """
    if fmt == "jsonl":
        return "".join(
            json.dumps(
                {c: _json_value(row[c]) for c in REPORT_COLUMNS},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
            for row in rows
        )
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows([_text(row[c]) for c in REPORT_COLUMNS] for row in rows)
        return buf.getvalue()
    raise ValueError(f"unknown report format {fmt!r}: use 'jsonl' or 'csv'")


def _field(value: object) -> bytes:
    data = b"" if value is None else str(value).encode("utf-8")
    return len(data).to_bytes(4, "big") + data


def encode_digest_record(values: Sequence[object]) -> bytes:
    """Encode one verified row for the digest (see ``DigestBuilder`` for the format)."""
    return b"".join(_field(v) for v in values)


class DigestBuilder:
    """Incremental verification digest.

    Byte encoding (version 1), fed to SHA-256::

        DIGEST_HEADER = b"objmig-verification-v1\\n"
        input  = DIGEST_HEADER || record(row_1) || record(row_2) || ...
        record = field(key) || field(version_id) || field(size) || field(etag)
                 || field(target_key) || field(target_etag) || field(source_checksum)
        field(v) = uint32_big_endian(len(b)) || b,
                   where b = UTF-8 of v; size as decimal ASCII digits; NULL as b"" (length 0)

    Rows are the ``verified`` rows of one migration in ascending (key, version_id) order,
    comparing the UTF-8 bytes (PostgreSQL's "C" collation; equivalently Python's ``str``
    ordering by code point). The length prefix makes the encoding unambiguous whatever
    characters keys contain. The result is the lowercase hex SHA-256.

    Version 2 (``version=2``, migrations of several buckets): the header
    ``DIGEST_HEADER_V2``, rows in (bucket, key, version_id) order, and each record
    preceded by ``field(bucket)``.
    """

    def __init__(self, *, version: int = 1) -> None:
        if version not in (1, 2):
            raise ValueError(f"no digest encoding version {version}")
        self.version = version
        self._hash = hashlib.sha256(DIGEST_HEADER if version == 1 else DIGEST_HEADER_V2)
        self.objects = 0
        self.bytes = 0

    def add(
        self,
        key: str,
        version_id: str,
        size: int,
        etag: str | None,
        target_key: str | None,
        target_etag: str | None,
        source_checksum: str | None,
        *,
        bucket: str = "",
    ) -> None:
        """Feed one verified row (in order)."""
        if self.version == 2:
            self._hash.update(_field(bucket))
        self._hash.update(
            encode_digest_record(
                (key, version_id, size, etag, target_key, target_etag, source_checksum)
            )
        )
        self.objects += 1
        self.bytes += size

    def hexdigest(self) -> str:
        """The lowercase hex SHA-256 of everything added so far."""
        return self._hash.hexdigest()
