"""What a copy writes as user metadata: the source's, objmig's additions, and S3's 2 KB."""

from __future__ import annotations

import pytest

from objmig.storage.copy import CopyOptions, MetadataTooLargeError
from objmig.storage.copy.planning import METADATA_LIMIT, fit_metadata, metadata_size


def _filled(size: int) -> dict[str, str]:
    """Metadata of exactly `size` bytes as `metadata_size` counts them (one key)."""
    overhead = metadata_size({"k": ""})
    return {"k": "v" * (size - overhead)}


def test_sizes_are_counted_with_the_header_prefix_as_the_strictest_store_does() -> None:
    assert metadata_size({"ab": "cde"}) == len("x-amz-meta-ab") + 3


def test_the_marker_is_added_where_it_fits() -> None:
    metadata, not_kept = fit_metadata({"a": "1"}, CopyOptions(migration_tag="ns/m"))
    assert metadata == {"a": "1", "objmig-migration": "ns/m"}
    assert not_kept == ()


def test_the_marker_is_left_out_where_it_would_take_the_object_over_the_limit() -> None:
    near = _filled(METADATA_LIMIT - 10)
    metadata, not_kept = fit_metadata(near, CopyOptions(migration_tag="ns/m"))
    assert metadata == near
    assert len(not_kept) == 1
    assert "left out" in not_kept[0]


def test_metadata_over_the_limit_at_the_source_is_copied_as_it_is_without_marker() -> None:
    over = _filled(METADATA_LIMIT + 100)
    metadata, not_kept = fit_metadata(over, CopyOptions(migration_tag="ns/m"))
    assert metadata == over
    assert not_kept


def test_no_marker_asked_for_no_note() -> None:
    near = _filled(METADATA_LIMIT - 10)
    assert fit_metadata(near, CopyOptions()) == (near, ())


def test_a_proof_in_place_that_does_not_fit_is_refused_before_writing() -> None:
    near = _filled(METADATA_LIMIT - 10)
    options = CopyOptions(extra_metadata={"objmig-original-etag": "e" * 32})
    with pytest.raises(MetadataTooLargeError, match="over S3's 2048 bytes"):
        fit_metadata(near, options)


def test_a_proof_in_place_counts_the_marker_it_is_recognised_by() -> None:
    # Fits without the marker, not with it: the marker cannot be left out of a proof.
    extra = {"objmig-original-etag": "e" * 32}
    room = METADATA_LIMIT - metadata_size(extra)
    near = _filled(room - 5)
    options = CopyOptions(migration_tag="ns/m", extra_metadata=extra)
    with pytest.raises(MetadataTooLargeError, match="objmig-migration"):
        fit_metadata(near, options)
