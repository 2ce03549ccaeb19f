"""The S3 REST format, both ways: the headers objmig sends with an object (SSE-C keys,
user metadata, content headers), and what it reads from the answers (a HEAD's or GET's
headers as a `HeadResult`, a write's as a `WriteResult`, XML result and error documents,
including the `<Error>` a 200 answer may carry). Pure functions over headers and bytes;
`s3http` sends and signs the requests.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote_plus

from defusedxml import ElementTree as SafeET

from objmig.storage.errors import S3ResponseError
from objmig.storage.http1 import HttpResponse
from objmig.storage.restore import parse_restore_header
from objmig.storage.types import (
    ContentHeaders,
    EncryptionInfo,
    HeadResult,
    WriteResult,
    normalise_etag,
    version_or_none,
    whole_seconds,
)

# Characters XML 1.0 cannot carry, raw or as character references: the C0 controls other
# than tab, line feed and carriage return.
_XML_INVALID = re.compile(
    rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|&#(?:[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F])"
    rb"|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));"
)
# Error documents are small; a store that sends more is not sending an error document.
_MAX_ERROR_BODY = 64 * 1024
_XML_NS = re.compile(r"^\{[^}]*\}")
_RESULT_ETAG = re.compile(rb"<ETag>([^<]*)</ETag>")
_RESULT_LAST_MODIFIED = re.compile(rb"<LastModified>([^<]*)</LastModified>")


def sse_c_headers(key: bytes | None, *, copy_source: bool = False) -> dict[str, str]:
    """The three SSE-C headers for a 32-byte customer key (none for None)."""
    if key is None:
        return {}
    prefix = "x-amz-copy-source-" if copy_source else "x-amz-"
    return {
        f"{prefix}server-side-encryption-customer-algorithm": "AES256",
        f"{prefix}server-side-encryption-customer-key": base64.b64encode(key).decode(),
        f"{prefix}server-side-encryption-customer-key-md5": base64.b64encode(
            hashlib.md5(key, usedforsecurity=False).digest()
        ).decode(),
    }


def metadata_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    """User metadata as `x-amz-meta-*` headers."""
    return {f"x-amz-meta-{name.lower()}": value for name, value in metadata.items()}


def content_headers(content: ContentHeaders) -> dict[str, str]:
    """The representation headers of an object, for PUT / CreateMultipartUpload / Copy."""
    pairs = {
        "content-type": content.content_type,
        "cache-control": content.cache_control,
        "content-disposition": content.content_disposition,
        "content-encoding": content.content_encoding,
        "content-language": content.content_language,
        "expires": http_date(content.expires) if content.expires else None,
        "x-amz-website-redirect-location": content.website_redirect_location,
    }
    return {name: value for name, value in pairs.items() if value is not None}


def http_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def total_size(content_range: str | None) -> int | None:
    """The object size from `Content-Range: bytes a-b/total`."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def http_datetime(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def encryption_of(headers: Mapping[str, str]) -> EncryptionInfo:
    bucket_key = headers.get("x-amz-server-side-encryption-bucket-key-enabled")
    return EncryptionInfo(
        algorithm=headers.get("x-amz-server-side-encryption"),
        kms_key_id=headers.get("x-amz-server-side-encryption-aws-kms-key-id"),
        bucket_key_enabled=None if bucket_key is None else bucket_key.lower() == "true",
        customer_algorithm=headers.get("x-amz-server-side-encryption-customer-algorithm"),
        customer_key_md5=headers.get("x-amz-server-side-encryption-customer-key-md5"),
    )


def head_result(headers: Mapping[str, str], size: int) -> HeadResult:
    """What a HEAD (or GET) answer's headers say; `headers` has lower-case names."""
    metadata: dict[str, str] = {}
    checksums: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("x-amz-meta-"):
            # S3 lower-cases user metadata keys; so do we, so comparisons are stable.
            metadata[lower[len("x-amz-meta-") :]] = value
        elif lower.startswith("x-amz-checksum-") and lower != "x-amz-checksum-type":
            checksums[lower[len("x-amz-checksum-") :].upper()] = value
    last_modified = http_datetime(headers.get("last-modified")) or datetime.now(UTC)
    parts = headers.get("x-amz-mp-parts-count")
    return HeadResult(
        etag=normalise_etag(headers.get("etag")),
        size=size,
        last_modified=whole_seconds(last_modified),
        version_id=version_or_none(headers.get("x-amz-version-id")),
        storage_class=headers.get("x-amz-storage-class") or "STANDARD",
        restore=parse_restore_header(headers.get("x-amz-restore")),
        archive_status=headers.get("x-amz-archive-status"),
        metadata=metadata,
        content=ContentHeaders(
            content_type=headers.get("content-type"),
            cache_control=headers.get("cache-control"),
            content_disposition=headers.get("content-disposition"),
            content_encoding=headers.get("content-encoding"),
            content_language=headers.get("content-language"),
            expires=http_datetime(headers.get("expires")),
            website_redirect_location=headers.get("x-amz-website-redirect-location"),
        ),
        parts_count=int(parts) if parts and parts.isdigit() else None,
        checksums=checksums,
        checksum_type=(headers.get("x-amz-checksum-type") or "").upper() or None,
        encryption=encryption_of(headers),
        tag_count=int(headers.get("x-amz-tagging-count") or 0),
        lock_mode=headers.get("x-amz-object-lock-mode") or None,
        lock_retain_until=_iso_datetime(headers.get("x-amz-object-lock-retain-until-date")),
        legal_hold=(headers.get("x-amz-object-lock-legal-hold") or "").upper() == "ON",
    )


def _iso_datetime(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp (Object Lock dates are sent so, not as HTTP dates)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def write_result(
    headers: Mapping[str, str], etag: str | None, last_modified: datetime | None = None
) -> WriteResult:
    return WriteResult(
        etag=normalise_etag(etag),
        version_id=version_or_none(headers.get("x-amz-version-id")),
        encryption=encryption_of(headers),
        last_modified=last_modified,
    )


def without_xml_invalid(data: bytes) -> bytes:
    """`data` without the characters XML 1.0 cannot carry (see `xml_document`)."""
    return _XML_INVALID.sub(b"", data) if _XML_INVALID.search(data) else data


def local_name(tag: str) -> str:
    return _XML_NS.sub("", tag)


def child_text(root: ET.Element, name: str) -> str:
    for element in root.iter():
        if local_name(element.tag) == name:
            return element.text or ""
    return ""


async def xml_body(operation: str, response: HttpResponse, *, listing: bool = False) -> ET.Element:
    """The XML document of a 2xx answer; an `<Error>` document in it is raised.

    `listing`: the answer lists keys objmig reads (asked for URL-encoded, see
    `listed_key`), so it is parsed as sent; other answers may echo a key XML cannot
    carry in an element objmig never reads, which is dropped (see `xml_document`).
    """
    return xml_document(operation, response.status, await response.read(), listing=listing)


def url_encoded(root: ET.Element) -> bool:
    """Whether a listing says its keys are URL-encoded (`<EncodingType>url`): a store that
    ignored `encoding-type=url` sends them as they are."""
    return any(
        local_name(element.tag) == "EncodingType" and (element.text or "").lower() == "url"
        for element in root
    )


def xml_can_carry(key: str) -> bool:
    """Whether a key survives an XML request body unchanged (DeleteObjects lists keys so).

    Control characters cannot be written at all, and an XML parser turns a carriage return
    into a line feed: such keys are sent in a URL instead, one request each.
    """
    return not any(ord(c) < 0x20 or c in "\ufffe\uffff" for c in key)


def listed_key(text: str, *, encoded: bool) -> str:
    """A key as a listing gave it, decoded when the listing URL-encoded it.

    S3 encodes a space as `+` and a `+` as `%2B` (form encoding), which is what the SDKs
    decode too (botocore's `unquote_str`).
    """
    return unquote_plus(text) if encoded else text


async def result_etag(operation: str, response: HttpResponse) -> str:
    """The ETag in a CopyObject / UploadPartCopy result document."""
    return (await copy_result(operation, response))[0]


async def copy_result(operation: str, response: HttpResponse) -> tuple[str, datetime | None]:
    """The ETag and LastModified in a CopyObject / UploadPartCopy result document.

    Every server-side copy reads one of these few hundred bytes, and building a parser
    for them cost more than the rest of the answer's handling. A plain document (no
    declarations, no error, the ETag element unprefixed) gives up its fields to regular
    expressions; anything else is parsed, and an error document raised, as always.
    """
    data = await response.read()
    if b"<!" not in data and b"Error>" not in data:
        found = _RESULT_ETAG.search(data)
        if found is not None:
            modified = _RESULT_LAST_MODIFIED.search(data)
            return (
                html.unescape(found.group(1).decode()),
                iso_datetime(modified.group(1).decode()) if modified else None,
            )
    root = xml_document(operation, response.status, data)
    return child_text(root, "ETag"), iso_datetime(child_text(root, "LastModified"))


def iso_datetime(value: str) -> datetime | None:
    """An XML document's time (`2026-12-02T18:49:03.123Z`); None when absent or unreadable."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def xml_document(operation: str, status: int, data: bytes, *, listing: bool = False) -> ET.Element:
    """Parse an answer; an `<Error>` document is raised as `S3ResponseError`.

    Outside listings, characters XML 1.0 cannot carry are removed first: stores echo an
    object's key in answers (CreateMultipartUpload, CompleteMultipartUpload, errors) and
    some write a control character in it as it is, which no parser accepts. A listing is
    parsed as sent: its keys are read, and must arrive URL-encoded instead.
    """
    if not listing:
        data = without_xml_invalid(data)
    try:
        root = SafeET.fromstring(data)
    except SafeET.ParseError as exc:
        hint = (
            " (a key holds a character XML cannot carry, and the store ignored encoding-type=url)"
            if listing and _XML_INVALID.search(data)
            else ""
        )
        raise S3ResponseError(
            operation, status, "MalformedResponse", f"unparsable XML answer: {exc}{hint}"
        ) from None
    if local_name(root.tag) == "Error":
        raise S3ResponseError(
            operation,
            status,
            child_text(root, "Code") or "InternalError",
            child_text(root, "Message"),
        )
    return root


async def response_error(operation: str, method: str, response: HttpResponse) -> S3ResponseError:
    """The error an unsuccessful answer stands for (HEAD answers carry no document)."""
    code, message = str(response.status), response.reason or ""
    if method != "HEAD":
        data = without_xml_invalid(await response.read(_MAX_ERROR_BODY))
        try:
            root = SafeET.fromstring(data)
        except SafeET.ParseError:
            root = None
        if root is not None and local_name(root.tag) == "Error":
            code = child_text(root, "Code") or code
            message = child_text(root, "Message") or message
    return S3ResponseError(operation, response.status, code, message)
