"""The x-amz-restore header, which storage classes need a restore, and refused requests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from objmig.storage.errors import RestoreNotAllowedError
from objmig.storage.restore import needs_restore, parse_restore_header, validate_restore
from objmig.storage.types import RestoreStatus


def test_ongoing_restore_header() -> None:
    assert parse_restore_header('ongoing-request="true"') == RestoreStatus(ongoing=True)


def test_finished_restore_header_has_an_expiry() -> None:
    status = parse_restore_header(
        'ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'
    )

    assert status == RestoreStatus(ongoing=False, expiry=datetime(2012, 12, 21, tzinfo=UTC))
    assert status.available


@pytest.mark.parametrize("value", [None, "", "garbage"])
def test_absent_or_unintelligible_header(value: str | None) -> None:
    assert parse_restore_header(value) is None


def test_bad_expiry_date_is_tolerated() -> None:
    status = parse_restore_header('ongoing-request="false", expiry-date="not a date"')

    assert status == RestoreStatus(ongoing=False, expiry=None)


@pytest.mark.parametrize(
    ("storage_class", "restore", "archive_status", "expected"),
    [
        ("STANDARD", None, None, False),
        (None, None, None, False),
        ("GLACIER_IR", None, None, False),
        ("GLACIER", None, None, True),
        ("DEEP_ARCHIVE", None, None, True),
        ("GLACIER", RestoreStatus(ongoing=True), None, True),
        ("GLACIER", RestoreStatus(ongoing=False), None, False),
        ("INTELLIGENT_TIERING", None, None, False),
        ("INTELLIGENT_TIERING", None, "ARCHIVE_ACCESS", True),
        ("INTELLIGENT_TIERING", RestoreStatus(ongoing=False), "DEEP_ARCHIVE_ACCESS", False),
    ],
)
def test_needs_restore(storage_class, restore, archive_status, expected) -> None:
    assert needs_restore(storage_class, restore, archive_status) is expected


def test_expedited_deep_archive_is_refused() -> None:
    with pytest.raises(RestoreNotAllowedError, match="Expedited"):
        validate_restore("DEEP_ARCHIVE", "Expedited", 1)
    validate_restore("GLACIER", "Expedited", 1)
    validate_restore("DEEP_ARCHIVE", "Bulk", 1)


def test_restore_days_must_be_positive() -> None:
    with pytest.raises(RestoreNotAllowedError, match="days"):
        validate_restore("GLACIER", "Bulk", 0)
