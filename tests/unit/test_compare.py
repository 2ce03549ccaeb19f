"""What counts as the same object (objmig.storage.compare), without a store."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from objmig.storage.compare import (
    Seen,
    changes,
    checksum_pair,
    checksums_known,
    etag_is_content_md5,
    etags_comparable,
    first_kept_algorithm,
    label_algorithm,
    looks_identical,
    looks_like_md5,
    metadata_difference,
    multipart_etag,
    proves_by_checksum,
    same_answers,
    same_media_type,
    tags_difference,
    target_checksums_trusted,
    without_objmig_keys,
)
from objmig.storage.types import ContentHeaders, EncryptionInfo, HeadResult

MD5 = "0" * 32
KMS = EncryptionInfo(algorithm="aws:kms")
SSE_C = EncryptionInfo(customer_algorithm="AES256")
SSE_S3 = EncryptionInfo(algorithm="AES256")
SHA = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
SHA_LABEL = "sha256:" + hashlib.sha256(b"x").hexdigest()


def _head(**fields: object) -> HeadResult:
    base = HeadResult(
        etag=MD5, size=10, last_modified=datetime(2026, 1, 1, tzinfo=UTC), version_id=None
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "md5"), [("none", True), ("SSE-S3", True), ("SSE-KMS", False), ("SSE-C", False)]
)
def test_etags_are_content_md5s_only_without_kms_or_customer_keys(mode: str, md5: bool) -> None:
    assert etag_is_content_md5(mode) is md5


def test_etags_compare_only_when_neither_side_is_opaque() -> None:
    assert etags_comparable(_head(), _head(encryption=SSE_S3))
    assert not etags_comparable(_head(encryption=KMS), _head())
    assert not etags_comparable(_head(), _head(encryption=SSE_C))


def test_an_md5_shaped_etag_has_32_characters() -> None:
    assert looks_like_md5(MD5)
    assert not looks_like_md5(MD5 + "-3")
    assert not looks_like_md5("abc")


def test_identical_needs_equal_size_and_comparable_equal_etags() -> None:
    assert looks_identical(_head(), _head())
    assert not looks_identical(_head(), _head(size=11))
    assert not looks_identical(_head(), _head(etag="1" * 32))
    # Opaque ETags say nothing, even equal ones: copy again rather than hash both sides.
    assert not looks_identical(_head(encryption=KMS), _head(encryption=KMS))


def test_objmig_keys_are_not_user_metadata() -> None:
    assert without_objmig_keys(
        {"a": "1", "objmig-migration": "m", "objmig-original-etag": "e"}
    ) == {"a": "1"}


def test_metadata_difference_ignores_objmig_keys_on_both_sides_and_names_what_differs() -> None:
    # The source is itself a copy of an earlier migration (a chain, a return): its
    # marker is not the copy's, and neither side's counts.
    source = _head(
        metadata={"a": "1", "objmig-migration": "earlier"},
        content=ContentHeaders(content_type="text/plain"),
    )
    same = _head(
        metadata={"a": "1", "objmig-migration": "m"},
        content=ContentHeaders(content_type="text/plain"),
    )
    assert metadata_difference(source, same) is None
    assert metadata_difference(source, replace(same, metadata={"a": "2"})) == (
        "user metadata 'a': expected '1', found '2'"
    )
    assert metadata_difference(source, replace(same, metadata={})) == (
        "user metadata 'a': expected '1', found nothing"
    )
    assert metadata_difference(source, replace(same, metadata={"a": "1", "b": "x"})) == (
        "user metadata 'b': expected nothing, found 'x'"
    )
    assert metadata_difference(source, replace(same, content=ContentHeaders())) == (
        "Content-Type: expected 'text/plain', found nothing"
    )
    cached = replace(same, content=ContentHeaders("text/plain", cache_control="max-age=60"))
    assert metadata_difference(source, cached) == (
        "Cache-Control: expected nothing, found 'max-age=60'"
    )


def test_content_types_a_store_normalises_are_equivalent_unless_exact_is_asked_for() -> None:
    def typed(value: str) -> HeadResult:
        return _head(content=ContentHeaders(content_type=value))

    sent = typed("text/plain; charset=utf-8")
    normalised = typed("Text/Plain;Charset=UTF-8")
    assert metadata_difference(sent, normalised) is None
    assert metadata_difference(sent, normalised, content_type="Exact") == (
        "Content-Type: expected 'text/plain; charset=utf-8', found 'Text/Plain;Charset=UTF-8'"
    )
    assert same_media_type(
        'text/plain; charset="utf-8"; format=flowed', "text/plain; format=flowed;charset=UTF-8"
    )
    # Other parameter values are case-sensitive, and a parameter more is a difference.
    assert not same_media_type("multipart/mixed; boundary=Ab", "multipart/mixed; boundary=ab")
    assert not same_media_type("text/plain", "text/plain; charset=utf-8")
    assert not same_media_type("text/plain", "text/html")


def test_tags_difference_names_the_tag_and_both_values() -> None:
    assert tags_difference({"a": "1"}, {"a": "1"}) is None
    assert tags_difference({"a": "1", "b": "2"}, {"a": "1"}) == (
        "tag 'b': expected '2', found nothing"
    )
    assert tags_difference({}, {"z": ""}) == "tag 'z': expected nothing, found ''"


def test_multipart_etag_is_the_md5_of_the_parts_md5s() -> None:
    first, second = hashlib.md5(b"one").hexdigest(), hashlib.md5(b"two").hexdigest()
    joined = hashlib.md5(bytes.fromhex(first) + bytes.fromhex(second)).hexdigest()
    assert multipart_etag([first, f'"{second}"']) == f"{joined}-2"
    assert multipart_etag(["not-an-md5"]) is None


def test_changes_name_each_difference_in_order() -> None:
    recorded = Seen("e1", 10, "v1", 100)
    assert changes(recorded, recorded) == []
    assert changes(recorded, Seen("e2", 11, "v2", 101)) == [
        "ETag e1 -> e2",
        "size 10 -> 11",
        "version v1 -> v2",
        "last-modified moved",
    ]


def test_an_unknown_version_or_time_is_not_a_change_unless_the_version_must_match() -> None:
    recorded = Seen("e", 10, "v1", 100)
    assert changes(recorded, Seen("e", 10, None, None)) == []
    assert changes(recorded, Seen("e", 10, None, None), version_must_match=True) == [
        "version v1 -> None"
    ]
    # A record without a version compares none.
    assert changes(Seen("e", 10), Seen("e", 10, "v9"), version_must_match=True) == []


def test_same_answers_need_etag_size_version_and_the_same_second() -> None:
    head = _head(version_id="v1")
    assert same_answers(
        head, replace(head, last_modified=head.last_modified.replace(microsecond=5))
    )
    assert not same_answers(head, replace(head, etag="1" * 32))
    assert not same_answers(head, replace(head, size=11))
    assert not same_answers(head, replace(head, version_id=None))
    assert not same_answers(
        head, replace(head, last_modified=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    )


def test_checksum_labels_name_their_algorithm() -> None:
    assert label_algorithm("crc32c:abcd") == "CRC32C"


def test_the_strongest_kept_whole_object_checksum_comes_first() -> None:
    head = _head(checksums={"CRC32": "AAAAAA==", "SHA256": SHA})
    assert first_kept_algorithm(head) == "SHA256"
    assert first_kept_algorithm(_head(checksums={"SHA256": SHA}, checksum_type="COMPOSITE")) is None
    assert first_kept_algorithm(_head()) is None


@pytest.mark.parametrize(
    ("mode", "layout_kept", "opaque", "source_mode", "by_checksum"),
    [
        ("checksum", True, False, None, True),
        ("full", True, False, None, False),
        ("etag", True, False, None, False),
        ("etag", False, False, None, True),
        ("etag", True, True, None, True),
        ("etag", True, False, "SSE-KMS", True),
        ("etag", True, False, "SSE-S3", False),
    ],
)
def test_which_copies_checksums_prove(
    mode: str, layout_kept: bool, opaque: bool, source_mode: str | None, by_checksum: bool
) -> None:
    assert (
        proves_by_checksum(
            mode, layout_kept=layout_kept, etags_opaque=opaque, source_encryption_mode=source_mode
        )
        is by_checksum
    )


def test_known_source_checksums_include_the_pinned_original_and_the_streamed_sha256() -> None:
    known = checksums_known(
        _head(checksums={"CRC32": "AAAAAA=="}), original="crc32c:00", streamed_sha256="ff"
    )
    assert known == {"CRC32": "crc32:00000000", "CRC32C": "crc32c:00", "SHA256": "sha256:ff"}


def test_of_a_copy_just_written_only_the_checksum_its_store_computed_is_trusted() -> None:
    target = _head(checksums={"SHA256": SHA, "CRC32": "AAAAAA=="})
    assert target_checksums_trusted(target, "CRC32", written=True) == {"CRC32": "crc32:00000000"}
    assert target_checksums_trusted(target, None, written=True) == {}
    assert set(target_checksums_trusted(target, None, written=False)) == {"SHA256", "CRC32"}


def test_checksum_pair_prefers_a_shared_algorithm_then_sha256_then_nothing() -> None:
    mine = {"CRC32": "crc32:1", "SHA256": SHA_LABEL}
    assert checksum_pair(mine, {"CRC32": "crc32:2"}) == ("crc32:1", "crc32:2")
    assert checksum_pair(mine, {"CRC32C": "crc32c:2"}) == (SHA_LABEL, None)
    assert checksum_pair({}, {"SHA256": SHA_LABEL}) == (None, SHA_LABEL)
    assert checksum_pair({"CRC32": "crc32:1"}, {"CRC32C": "crc32c:2"}) is None
