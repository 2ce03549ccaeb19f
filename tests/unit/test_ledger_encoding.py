"""The ledger's byte formats, without a database: digest encoding and report rows."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import struct
from datetime import UTC, datetime

import pytest

from objmig.ledger import DigestBuilder, ObjectState
from objmig.ledger.models import OBJECT_COLUMNS, ObjectRow
from objmig.ledger.report import (
    DIGEST_HEADER,
    REPORT_COLUMNS,
    encode_digest_record,
    encode_report_rows,
    report_header,
)


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_digest_encoding_is_the_documented_one() -> None:
    builder = DigestBuilder()
    builder.add("dir/é.txt", "", 1234, '"abc"', "new/é.txt", '"abc"', None)
    builder.add("dir/z", "v1", 0, "e", None, None, "sha256:00")

    expected = hashlib.sha256(
        b"objmig-verification-v1\n"
        + _field("dir/é.txt".encode())
        + _field(b"")
        + _field(b"1234")
        + _field(b'"abc"')
        + _field("new/é.txt".encode())
        + _field(b'"abc"')
        + _field(b"")
        + _field(b"dir/z")
        + _field(b"v1")
        + _field(b"0")
        + _field(b"e")
        + _field(b"")
        + _field(b"")
        + _field(b"sha256:00")
    ).hexdigest()
    assert builder.hexdigest() == expected
    assert (builder.objects, builder.bytes) == (2, 1234)


def test_digest_fields_cannot_be_confused_by_shifting_bytes() -> None:
    # Without length prefixes, ("ab", "c") and ("a", "bc") would encode alike.
    assert encode_digest_record(["ab", "c"]) != encode_digest_record(["a", "bc"])


def test_empty_digest_is_the_hash_of_the_header() -> None:
    assert DigestBuilder().hexdigest() == hashlib.sha256(DIGEST_HEADER).hexdigest()


def _row(**changes: object) -> dict[str, object]:
    values: dict[str, object] = dict.fromkeys(OBJECT_COLUMNS)
    values |= {
        "id": 1,
        "migration_id": 1,
        "key": 'a,b\n"c"',
        "version_id": "",
        "size": 5,
        "etag": "e",
        "storage_class": "STANDARD",
        "state": ObjectState.FAILED,
        "attempts": 3,
        "updated_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        "last_seen_scan": 1,
        "last_error": "boom",
    }
    values |= changes
    return values


def test_report_rows_round_trip_through_csv_and_jsonl() -> None:
    row = _row()

    text_csv = report_header("csv") + encode_report_rows([row], "csv")
    text_jsonl = encode_report_rows([row], "jsonl")

    (from_csv,) = csv.DictReader(io.StringIO(text_csv))
    (from_json,) = [json.loads(line) for line in text_jsonl.splitlines()]
    assert list(from_csv) == list(REPORT_COLUMNS) == list(from_json)
    assert "migration_id" not in from_csv
    assert from_csv["key"] == from_json["key"] == 'a,b\n"c"'
    assert from_csv["state"] == from_json["state"] == "failed"
    assert from_csv["updated_at"] == from_json["updated_at"] == "2024-05-01T12:00:00+00:00"
    assert from_csv["target_key"] == ""
    assert from_json["target_key"] is None


def test_report_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        encode_report_rows([_row()], "xml")  # type: ignore[arg-type]


def test_object_row_is_built_from_every_column() -> None:
    row = ObjectRow.from_record({**_row(), "state": "verified"})

    assert row.state is ObjectState.VERIFIED
    assert row.key == 'a,b\n"c"'
