"""objmig's own S3 client (`storage.s3http`) without a server: its SigV4 signatures equal
botocore's for the same request at the same moment, response headers become `HeadResult`s,
Content-Range gives the object size, and error documents become `S3ResponseError`s that
carry S3's code and message and nothing else."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import botocore.auth
import botocore.credentials
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.utils import percent_encode
from defusedxml.common import DefusedXmlException

from objmig.storage.endpoint import DEFAULT_REGION, ClientTimeouts, Credentials, Endpoint
from objmig.storage.errors import S3ResponseError, classify
from objmig.storage.s3http import S3HttpClient, http_pool
from objmig.storage.s3wire import (
    content_headers,
    head_result,
    metadata_headers,
    response_error,
    result_etag,
    sse_c_headers,
    total_size,
    xml_body,
)
from objmig.storage.sigv4 import (
    UNSIGNED_PAYLOAD,
    CredentialSource,
    SigV4Signer,
    canonical_query,
)
from objmig.storage.types import ContentHeaders

# A moment whose day differs from its neighbours' (signing keys are per day) and a leap day.
MOMENT = datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC)
CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SESSION = Credentials(
    "ASIAEXAMPLE",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "FwoGZXIvYXdzEB0aD+token/with+slashes==",
)

KEYS = [
    "plain",
    "with space/and more  spaces",
    "unicode/ü/ñ/日本語/😀",
    "a+b=c~d",
    "dir/sub/",
    "double//slash",
    "literal%41percent",
    "punct!$&'()*,;:@[]",
]

QUERIES: list[dict[str, str]] = [
    {},
    {"versionId": "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"},
    {"partNumber": "7"},
    {"partNumber": "2", "uploadId": "VXBsb2FkIElE+for/6aWZ-test=="},
    {"uploads": ""},
    {"tagging": "", "versionId": "null-ish~version"},
    {"attributes": ""},
]


def _headers() -> dict[str, str]:
    """Headers of the kinds the client sends, with values SigV4 must normalise."""
    return {
        "range": "bytes=0-1023",
        "if-match": '"0123456789abcdef0123456789abcdef"',
        "x-amz-meta-owner": "team   a",  # runs of spaces collapse in the canonical form
        "content-type": "application/octet-stream",
        "content-length": "1024",
        "x-amz-copy-source": "/src/a%20b/%C3%BC",
        "x-amz-storage-class": "STANDARD_IA",
    }


@asynccontextmanager
async def _client(endpoint: Endpoint) -> AsyncIterator[S3HttpClient]:
    client = S3HttpClient(
        endpoint, http_pool(endpoint, 1, ClientTimeouts()), CredentialSource(endpoint)
    )
    try:
        yield client
    finally:
        await client.close()


async def _ours(
    endpoint: Endpoint,
    method: str,
    bucket: str,
    key: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
) -> dict[str, str]:
    """The headers `S3HttpClient` would send at MOMENT."""
    async with _client(endpoint) as client:
        host, path = client._location(bucket, key)
        query_string = canonical_query(query)
        signed = dict(headers)
        signer = SigV4Signer(endpoint.region or DEFAULT_REGION, CredentialSource(endpoint))
        await signer.sign(
            method, host, path, query_string, signed, now=time.gmtime(MOMENT.timestamp())
        )
    return signed


def _botocore(
    url: str,
    region: str,
    credentials: Credentials,
    method: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Headers botocore's S3 signer adds at MOMENT, payload unsigned (as the client's)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: MOMENT.replace(tzinfo=None))
    request = AWSRequest(method=method, url=url, headers=dict(headers), params=dict(query))
    request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    signer = botocore.auth.S3SigV4Auth(
        botocore.credentials.Credentials(
            credentials.access_key_id, credentials.secret_access_key, credentials.session_token
        ),
        "s3",
        region,
    )
    signer.add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


def _signature_headers(headers: Mapping[str, str]) -> dict[str, str | None]:
    names = ("authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token")
    return {name: headers.get(name) for name in names}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("query", QUERIES, ids=lambda q: "+".join(q) or "none")
async def test_path_style_signature_equals_botocores(
    key: str, query: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = Endpoint(url="http://127.0.0.1:9000", credentials=CREDENTIALS)
    method = "PUT" if "partNumber" in query else "GET"

    ours = await _ours(endpoint, method, "my-bucket", key, query, _headers())
    theirs = _botocore(
        f"http://127.0.0.1:9000/my-bucket/{percent_encode(key, safe='/~')}",
        "us-east-1",
        CREDENTIALS,
        method,
        query,
        _headers(),
        monkeypatch,
    )

    assert _signature_headers(ours) == _signature_headers(theirs)
    assert ours["x-amz-date"] == "20240229T235958Z"
    assert ours["x-amz-content-sha256"] == UNSIGNED_PAYLOAD
    assert ours["host"] == "127.0.0.1:9000"  # signed and sent as is


@pytest.mark.parametrize("key", ["a b/ü+c=d~e", "x"])
async def test_virtual_host_signature_with_a_session_token_equals_botocores(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = Endpoint(
        url="https://s3.eu-central-1.amazonaws.com",
        region="eu-central-1",
        addressing_style="virtual",
        credentials=SESSION,
    )
    query = {"versionId": "v+1/2=", "partNumber": "1"}

    ours = await _ours(endpoint, "HEAD", "bucket-1", key, query, {})
    theirs = _botocore(
        f"https://bucket-1.s3.eu-central-1.amazonaws.com/{percent_encode(key, safe='/~')}",
        "eu-central-1",
        SESSION,
        "HEAD",
        query,
        {},
        monkeypatch,
    )

    assert _signature_headers(ours) == _signature_headers(theirs)
    assert ours["x-amz-security-token"] == SESSION.session_token
    assert (
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
        in (ours["authorization"])
    )


async def test_dotted_buckets_stay_path_style_and_aws_default_url_is_regional() -> None:
    virtual = Endpoint(region="ap-south-1", addressing_style="virtual", credentials=CREDENTIALS)

    async with _client(virtual) as client:
        assert client._location("plain", "k") == ("plain.s3.ap-south-1.amazonaws.com", "/k")
        # A dotted name breaks the wildcard certificate of virtual hosts.
        assert client._location("my.bucket", "a b") == (
            "s3.ap-south-1.amazonaws.com",
            "/my.bucket/a%20b",
        )
    async with _client(Endpoint(url="http://gw:8080/s3/", credentials=CREDENTIALS)) as client:
        assert client._location("b", "k/ü") == ("gw:8080", "/s3/b/k/%C3%BC")


def test_canonical_query_encodes_names_and_values_and_sorts_them() -> None:
    assert canonical_query({}) == ""
    assert canonical_query({"uploads": ""}) == "uploads="
    assert (
        canonical_query({"versionId": "a+b/c=", "partNumber": "3", "attributes": ""})
        == "attributes=&partNumber=3&versionId=a%2Bb%2Fc%3D"
    )


# ------------------------------------------------------------------------ header parsing


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers as the HTTP client hands them over: lower-case names."""
    return {name.lower(): value for name, value in headers.items()}


def test_head_result_from_a_full_set_of_headers() -> None:
    headers = _lower(
        {
            "ETag": '"0123456789abcdef0123456789abcdef-3"',
            "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
            "x-amz-version-id": "v42",
            "x-amz-storage-class": "GLACIER",
            "x-amz-restore": 'ongoing-request="false", expiry-date="Fri, 23 Dec 2012 00:00:00 GMT"',
            "x-amz-archive-status": "ARCHIVE_ACCESS",
            "x-amz-meta-Owner": "team-a",
            "X-Amz-Meta-storage-version": "2",
            "Content-Type": "text/csv",
            "Cache-Control": "max-age=60",
            "Content-Disposition": 'attachment; filename="x.csv"',
            "Content-Encoding": "gzip",
            "Content-Language": "de-CH",
            "Expires": "Thu, 01 Dec 2094 16:00:00 GMT",
            "x-amz-website-redirect-location": "/other",
            "x-amz-mp-parts-count": "3",
            "x-amz-checksum-crc32": "AAAAAA==",
            "x-amz-checksum-sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "x-amz-checksum-type": "COMPOSITE",
            "x-amz-server-side-encryption": "aws:kms",
            "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:eu-central-1:1:key/k",
            "x-amz-server-side-encryption-bucket-key-enabled": "true",
            "x-amz-tagging-count": "2",
        }
    )

    head = head_result(headers, 1234)

    assert head.etag == "0123456789abcdef0123456789abcdef-3"
    assert head.is_multipart
    assert head.size == 1234
    assert head.last_modified == datetime(2015, 10, 21, 7, 28, tzinfo=UTC)
    assert head.version_id == "v42"
    assert head.storage_class == "GLACIER"
    assert head.restore is not None
    assert not head.restore.ongoing
    assert head.restore.expiry == datetime(2012, 12, 23, tzinfo=UTC)
    assert head.archive_status == "ARCHIVE_ACCESS"
    assert head.metadata == {"owner": "team-a", "storage-version": "2"}
    assert head.content == ContentHeaders(
        content_type="text/csv",
        cache_control="max-age=60",
        content_disposition='attachment; filename="x.csv"',
        content_encoding="gzip",
        content_language="de-CH",
        expires=datetime(2094, 12, 1, 16, tzinfo=UTC),
        website_redirect_location="/other",
    )
    assert head.parts_count == 3
    assert head.checksums == {
        "CRC32": "AAAAAA==",
        "SHA256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    }
    assert head.checksum_type == "COMPOSITE"
    # A checksum of the parts' checksums says nothing about an object cut otherwise.
    assert head.whole_checksums() == {}
    assert head.encryption.mode == "SSE-KMS"
    assert head.encryption.kms_key_id == "arn:aws:kms:eu-central-1:1:key/k"
    assert head.encryption.bucket_key_enabled is True
    assert head.tag_count == 2


def test_head_result_defaults_for_a_bare_answer() -> None:
    headers = _lower(
        {
            "ETag": '"abc"',
            "Last-Modified": "Wed, 21 Oct 2015 07:28:00.123 GMT",  # not an HTTP date
            "x-amz-version-id": "null",
            "Expires": "not a date",
            "x-amz-mp-parts-count": "many",
            "x-amz-server-side-encryption-customer-algorithm": "AES256",
            "x-amz-server-side-encryption-customer-key-md5": "bWQ1",
        }
    )
    before = datetime.now(UTC).replace(microsecond=0)

    head = head_result(headers, 0)

    assert head.etag == "abc"
    assert not head.is_multipart
    assert head.version_id is None  # unversioned buckets say "null"
    assert head.storage_class == "STANDARD"
    assert head.restore is None
    assert head.metadata == {}
    assert head.content.expires is None
    assert head.parts_count is None
    assert head.checksums == {}
    assert head.encryption.mode == "SSE-C"
    assert head.encryption.customer_key_md5 == "bWQ1"
    assert head.encryption.bucket_key_enabled is None
    assert head.tag_count == 0
    # An unreadable Last-Modified is "now", in whole seconds like every other date.
    assert head.last_modified >= before
    assert head.last_modified.microsecond == 0


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (None, None),
        ("", None),
        ("bytes 0-9/100", 100),
        ("bytes 90-99/100", 100),
        ("bytes */100", 100),
        ("bytes 0-9/*", None),
        ("bytes 0-9", None),
        ("bytes 0-9/ 5368709120", 5368709120),
    ],
)
def test_total_size_from_content_range(value: str | None, size: int | None) -> None:
    assert total_size(value) == size


def test_request_header_helpers() -> None:
    key = bytes(range(32))

    assert sse_c_headers(None) == {}
    assert sse_c_headers(key, copy_source=True) == {
        "x-amz-copy-source-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-copy-source-server-side-encryption-customer-key": base64.b64encode(key).decode(),
        "x-amz-copy-source-server-side-encryption-customer-key-md5": base64.b64encode(
            hashlib.md5(key).digest()
        ).decode(),
    }
    assert metadata_headers({"Owner": "x"}) == {"x-amz-meta-owner": "x"}
    assert content_headers(
        ContentHeaders(content_type="text/plain", expires=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    ) == {"content-type": "text/plain", "expires": "Wed, 02 Jan 2030 03:04:05 GMT"}


# ------------------------------------------------------------------------ error documents


class _Answer:
    """The parts of an `HttpResponse` the error parsing reads."""

    def __init__(self, status: int, body: bytes, method: str = "GET", reason: str = "") -> None:
        self.status = status
        self.method = method
        self.reason = reason
        self._body = body

    async def read(self, n: int = -1) -> bytes:
        data, self._body = (self._body, b"") if n < 0 else (self._body[:n], self._body[n:])
        return data


def _document(code: str, message: str, **extra: str) -> bytes:
    fields = "".join(f"<{name}>{value}</{name}>" for name, value in extra.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{fields}</Error>"
    ).encode()


async def _parse_error(answer: _Answer, operation: str = "GetObject") -> S3ResponseError:
    return await response_error(operation, answer.method, answer)  # type: ignore[arg-type]


async def test_error_document_gives_code_and_message_only() -> None:
    body = _document(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match",
        AWSAccessKeyId="AKIAIOSFODNN7EXAMPLE",
        StringToSign="AWS4-HMAC-SHA256\n20240229T235958Z\n...",
        CanonicalRequest="GET\n/b/k\n\nhost:x\n",
    )

    error = await _parse_error(_Answer(403, body, reason="Forbidden"))

    assert (error.operation, error.status, error.code) == (
        "GetObject",
        403,
        "SignatureDoesNotMatch",
    )
    assert error.message == "The request signature we calculated does not match"
    for leaked in ("AKIAIOSFODNN7EXAMPLE", "StringToSign", "CanonicalRequest", "20240229"):
        assert leaked not in str(error)
    assert classify(error).is_config_error


async def test_head_errors_and_non_s3_bodies_fall_back_to_the_status() -> None:
    head = await _parse_error(_Answer(404, b"", method="HEAD", reason="Not Found"), "HeadObject")
    html = await _parse_error(_Answer(502, b"<html><body>Bad Gateway</body></html>", reason="Bad"))
    garbage = await _parse_error(_Answer(503, b"\x00\xff not xml", reason="Service Unavailable"))

    assert (head.code, head.message, classify(head).kind) == ("404", "Not Found", "not_found")
    assert (html.code, html.message, classify(html).kind) == ("502", "Bad", "retryable")
    assert (garbage.code, classify(garbage).kind) == ("503", "retryable")


async def test_precondition_failed_document_is_classified_precondition() -> None:
    error = await _parse_error(
        _Answer(412, _document("PreconditionFailed", "At least one of the pre-conditions"))
    )

    assert (error.status, error.code) == (412, "PreconditionFailed")
    assert classify(error).kind == "precondition"


async def test_a_200_answer_carrying_an_error_document_is_an_error() -> None:
    # CopyObject, UploadPartCopy and CompleteMultipartUpload may fail after sending 200.
    failed = _Answer(200, _document("InternalError", "We encountered an internal error"))
    with pytest.raises(S3ResponseError) as raised:
        await xml_body("CompleteMultipartUpload", failed)  # type: ignore[arg-type]
    assert (raised.value.status, raised.value.code) == (200, "InternalError")
    assert classify(raised.value).kind == "retryable"

    with pytest.raises(S3ResponseError) as malformed:
        await xml_body("CopyObject", _Answer(200, b"<CopyObjectResult>"))  # type: ignore[arg-type]
    assert malformed.value.code == "MalformedResponse"

    ok = _Answer(
        200,
        b'<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<ETag>&quot;abc&quot;</ETag></CopyObjectResult>",
    )
    root = await xml_body("CopyObject", ok)  # type: ignore[arg-type]
    assert root.tag.endswith("CopyObjectResult")


async def test_xml_documents_with_entities_are_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><Error><Code>&b;</Code></Error>'
    )
    with pytest.raises(DefusedXmlException):
        await xml_body("CopyObject", _Answer(200, bomb))  # type: ignore[arg-type]


async def test_copy_result_etag_takes_the_short_way_only_for_plain_documents() -> None:
    plain = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<CopyObjectResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<LastModified>2026-11-22T02:00:00.000Z</LastModified>"
        b"<ETag>&quot;0123abc&quot;</ETag></CopyObjectResult>"
    )
    prefixed = (
        b'<s3:CopyPartResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/">'
        b"<s3:ETag>&quot;def&quot;</s3:ETag></s3:CopyPartResult>"
    )
    failed = _document("SlowDown", "Please reduce your request rate")
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaaaaaaaa">]>'
        b"<CopyObjectResult><ETag>&a;</ETag></CopyObjectResult>"
    )

    assert await result_etag("CopyObject", _Answer(200, plain)) == '"0123abc"'  # type: ignore[arg-type]
    assert await result_etag("UploadPartCopy", _Answer(200, prefixed)) == '"def"'  # type: ignore[arg-type]
    with pytest.raises(S3ResponseError) as raised:
        await result_etag("CopyObject", _Answer(200, failed))  # type: ignore[arg-type]
    assert raised.value.code == "SlowDown"
    with pytest.raises(DefusedXmlException):
        await result_etag("CopyObject", _Answer(200, bomb))  # type: ignore[arg-type]


def test_whole_object_checksums_are_labelled_like_objmigs_own_sha256() -> None:
    full = head_result(
        _lower(
            {
                "ETag": '"abc"',
                "x-amz-checksum-crc32": "AAAAAA==",
                "x-amz-checksum-sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                "x-amz-checksum-type": "FULL_OBJECT",
            }
        ),
        0,
    )
    # Without a type, a "-N" suffix still marks a composite value.
    untyped = head_result(_lower({"ETag": '"abc-2"', "x-amz-checksum-crc32c": "AAAAAA==-2"}), 0)

    # The SHA-256 of b"", in the hex objmig records for the SHA-256 it computes itself.
    assert full.whole_checksums() == {
        "CRC32": "crc32:00000000",
        "SHA256": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    }
    assert untyped.whole_checksums() == {}
