"""The per-object S3 requests, signed by us and sent on our lean HTTP/1.1 client.

Why a second client: botocore spends about 1.4 ms of CPU on every request (user-agent
assembly, endpoint rules, event hooks, dateutil, modelled parsing), which made the SDK, not
the network or the store, the ceiling of a copy of small objects: at three to five requests
per object one Python process could not pass ~150 objects/s. The requests made once per
object or part (HEAD, GET, PUT, CopyObject, the multipart calls) go through this module at
about a tenth of that cost (and `http1` sends them at a quarter of what aiohttp's client
costs per request). Everything else (listings, restores, deletes, tagging reads for
manifests, bucket calls) is rare per object and stays on aioboto3 (`sdk.open_client`),
which also resolves the default credential chain for us. Plain listings (the scan, the
batched re-checks) and the few calls every run makes (the access check, the bucket's
versioning) are here too, so that a run needs the SDK only for what only it does.

A request that fails transiently is sent again a couple of times, quickly (`resending.RequestRetry`,
which also says why that is safe for every write objmig makes); what persists is the
engine's to retry, with its backoff and the object's attempts. The client raises
`S3ResponseError` for any non-2xx answer, and for the 200 answers whose body is an
`<Error>` document (CopyObject, UploadPartCopy and CompleteMultipartUpload may fail after
the status line was sent). Requests are signed by `sigv4`.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit

from objmig.storage.endpoint import DEFAULT_REGION, ClientTimeouts, Endpoint
from objmig.storage.errors import S3ResponseError, TruncatedBodyError
from objmig.storage.features import StoreFeatures
from objmig.storage.http1 import HttpPool, HttpResponse
from objmig.storage.resending import (
    LISTING_PATIENCE,
    RequestRetry,
    ResumingBody,
    RetryCount,
    resend,
)
from objmig.storage.s3wire import (
    child_text,
    copy_result,
    head_result,
    listed_key,
    local_name,
    response_error,
    result_etag,
    sse_c_headers,
    total_size,
    url_encoded,
    write_result,
    xml_body,
    xml_document,
)
from objmig.storage.sigv4 import CredentialSource, SigV4Signer, canonical_query, quote_s3
from objmig.storage.tls import ssl_context
from objmig.storage.types import (
    GetResult,
    HeadResult,
    ObjectInfo,
    WriteResult,
    normalise_etag,
    version_or_none,
    whole_seconds,
)

T = TypeVar("T")
#: A GetObjectAttributes answer of 1,000 parts with checksums is about 300 KiB.
_MAX_ATTRIBUTES_BODY = 2 * 1024 * 1024


class S3HttpClient:
    """Signed S3 object requests over one connection pool.

    Open it with `open_http_client`; it is bound to one endpoint and one identity.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        pool: HttpPool,
        credentials: CredentialSource,
        features: StoreFeatures | None = None,
        retry: RequestRetry | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._pool = pool
        #: What this store lacks, as learned this run (shared with its other clients).
        self.features = features or StoreFeatures(store_name(endpoint))
        self._retry = retry or RequestRetry()
        self.retries = RetryCount()
        self._region = endpoint.region or DEFAULT_REGION
        url = endpoint.url or f"https://s3.{self._region}.amazonaws.com"
        parts = urlsplit(url)
        self._host = parts.netloc
        self._base_path = parts.path.rstrip("/")
        self._signer = SigV4Signer(self._region, credentials)
        #: The store answered GetObjectAttributes with something else (see
        #: `object_part_sizes`): it is not asked again.
        self._attributes_unknown = False

    # -- objects ------------------------------------------------------------------------

    async def head(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        part_number: int | None = None,
        sse_c: bytes | None = None,
        checksums: bool = False,
    ) -> HeadResult:
        """HEAD an object (a version of it, or one part with `part_number`).

        With `part_number`, `size` is that part's size and `parts_count` the object's
        part count (absent for single-part objects).
        """
        query = _version_query(version_id)
        if part_number is not None:
            query["partNumber"] = str(part_number)
        headers = sse_c_headers(sse_c)
        if checksums:
            headers["x-amz-checksum-mode"] = "ENABLED"
        return await self._call("HeadObject", "HEAD", bucket, key, query, headers, _head_answer)

    @asynccontextmanager
    async def get(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        if_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
        sse_c: bytes | None = None,
    ) -> AsyncIterator[GetResult]:
        """GET an object (or the inclusive byte range `byte_range`), body streamed.

        `if_match` (an ETag) makes the store answer 412 instead of other bytes when the
        object changed. A body cut short or reset is read on from where it stopped
        (`ResumingBody`). The connections go back to the pool when the block exits.
        """
        headers = sse_c_headers(sse_c)
        if if_match:
            headers["if-match"] = f'"{normalise_etag(if_match)}"'
        if byte_range is not None:
            headers["range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        query = _version_query(version_id)
        async with AsyncExitStack() as stack:

            async def answer(request_headers: Mapping[str, str]) -> HttpResponse:
                return await resend(
                    lambda: stack.enter_async_context(
                        self._request("GetObject", "GET", bucket, key, query, request_headers)
                    ),
                    self._retry,
                    self.retries,
                    replayable=True,
                )

            response = await answer(headers)
            length = int(response.headers.get("content-length", 0))
            size = total_size(response.headers.get("content-range")) or length
            head = head_result(response.headers, size)
            first = byte_range[0] if byte_range is not None else 0

            async def rest(received: int) -> HttpResponse:
                # The rest of the same bytes: pinned to the ETag the first answer had.
                start = first + received
                if not head.etag:
                    raise TruncatedBodyError(
                        f"GET s3://{bucket}/{key}: cut short after {received} bytes, and "
                        "without an ETag the rest cannot be pinned to the same object"
                    )
                again = await answer(
                    {
                        **headers,
                        "if-match": f'"{head.etag}"',
                        "range": f"bytes={start}-{first + length - 1}",
                    }
                )
                answered = again.headers.get("content-range") or ""
                if not answered.startswith(f"bytes {start}-"):
                    raise TruncatedBodyError(
                        f"GET s3://{bucket}/{key}: asked for the rest from byte {start}, "
                        f"answered {answered or 'the whole object'}"
                    )
                return again

            body = ResumingBody(response, length, rest, self._retry, self.retries)
            yield GetResult(head, length, body)

    async def put(
        self,
        bucket: str,
        key: str,
        body: bytes | AsyncIterable[bytes],
        length: int,
        headers: Mapping[str, str],
    ) -> WriteResult:
        """PutObject of `length` bytes; `headers` carry metadata, class, encryption, tags."""
        return await self._write("PutObject", bucket, key, {}, dict(headers), body, length)

    async def copy(
        self,
        source_bucket: str,
        source_key: str,
        bucket: str,
        key: str,
        headers: Mapping[str, str],
        *,
        source_version_id: str | None = None,
    ) -> WriteResult:
        """CopyObject; `headers` carry the directives, conditions and target settings."""
        headers = {
            **headers,
            "x-amz-copy-source": _copy_source(source_bucket, source_key, source_version_id),
        }

        async def written(response: HttpResponse) -> WriteResult:
            etag, last_modified = await copy_result("CopyObject", response)
            return write_result(response.headers, etag, last_modified)

        return await self._call("CopyObject", "PUT", bucket, key, {}, headers, written)

    async def create_multipart_upload(
        self, bucket: str, key: str, headers: Mapping[str, str]
    ) -> str:
        """Start a multipart upload; returns its upload id."""

        async def started(response: HttpResponse) -> str:
            root = await xml_body("CreateMultipartUpload", response)
            upload_id = child_text(root, "UploadId")
            if not upload_id:
                raise S3ResponseError("CreateMultipartUpload", response.status, "NoUploadId", "")
            return upload_id

        # A lost answer leaves an upload nobody knows the id of: the leftovers cleanup
        # of the store's lifecycle rule (AbortIncompleteMultipartUpload) takes it.
        return await self._call(
            "CreateMultipartUpload", "POST", bucket, key, {"uploads": ""}, headers, started
        )

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        body: bytes | AsyncIterable[bytes],
        length: int,
        *,
        sse_c: bytes | None = None,
    ) -> WriteResult:
        query = {"partNumber": str(part_number), "uploadId": upload_id}
        return await self._write(
            "UploadPart", bucket, key, query, sse_c_headers(sse_c), body, length
        )

    async def upload_part_copy(
        self,
        source_bucket: str,
        source_key: str,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        headers: Mapping[str, str],
        *,
        source_version_id: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> str:
        """UploadPartCopy; returns the part's ETag."""
        headers = {
            **headers,
            "x-amz-copy-source": _copy_source(source_bucket, source_key, source_version_id),
        }
        if byte_range is not None:
            headers["x-amz-copy-source-range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        query = {"partNumber": str(part_number), "uploadId": upload_id}

        async def copied(response: HttpResponse) -> str:
            return normalise_etag(await result_etag("UploadPartCopy", response))

        return await self._call("UploadPartCopy", "PUT", bucket, key, query, headers, copied)

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        etags: list[str],
        headers: Mapping[str, str],
    ) -> WriteResult:
        """Complete an upload from its parts' ETags, in part order."""
        parts = "".join(
            f"<Part><PartNumber>{number}</PartNumber><ETag>&quot;{normalise_etag(etag)}&quot;</ETag></Part>"
            for number, etag in enumerate(etags, start=1)
        )
        document = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        all_headers = {**headers, "content-type": "application/xml"}

        async def completed(response: HttpResponse) -> WriteResult:
            root = await xml_body("CompleteMultipartUpload", response)
            return write_result(response.headers, child_text(root, "ETag"))

        return await self._call(
            "CompleteMultipartUpload",
            "POST",
            bucket,
            key,
            {"uploadId": upload_id},
            all_headers,
            completed,
            body=document,
        )

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._call(
            "AbortMultipartUpload", "DELETE", bucket, key, {"uploadId": upload_id}, {}, _nothing
        )

    async def delete_version(self, bucket: str, key: str, version_id: str) -> None:
        """DeleteObject of one version, named by its id (never the key's current object)."""
        await self._call(
            "DeleteObject", "DELETE", bucket, key, {"versionId": version_id}, {}, _nothing
        )

    async def get_tags(
        self, bucket: str, key: str, version_id: str | None = None
    ) -> dict[str, str]:
        """The object's tags (GetObjectTagging)."""
        query = {"tagging": "", **_version_query(version_id)}
        root = await self._call(
            "GetObjectTagging", "GET", bucket, key, query, {}, _xml("GetObjectTagging")
        )
        tags: dict[str, str] = {}
        for tag in root.iter():
            if local_name(tag.tag) == "Tag":
                children = {local_name(child.tag): child.text or "" for child in tag}
                tags[children.get("Key", "")] = children.get("Value", "")
        return tags

    async def object_part_sizes(
        self, bucket: str, key: str, version_id: str | None = None, sse_c: bytes | None = None
    ) -> list[int] | None:
        """Part sizes from GetObjectAttributes(ObjectParts); None when the store lists none.

        A store that does not know `?attributes` may serve the object itself instead
        (Garage): its answer is read no further than an attributes document could be
        long (the connection is dropped), and the store is not asked again.
        """
        if self._attributes_unknown:
            return None
        sizes: list[int] = []
        marker = 0
        while True:
            headers = {
                "x-amz-object-attributes": "ObjectParts",
                "x-amz-max-parts": "1000",
                **sse_c_headers(sse_c),
            }
            if marker:
                headers["x-amz-part-number-marker"] = str(marker)
            query = {"attributes": "", **_version_query(version_id)}
            data = await self._call(
                "GetObjectAttributes",
                "GET",
                bucket,
                key,
                query,
                headers,
                _at_most(_MAX_ATTRIBUTES_BODY),
            )
            try:
                root = None if data is None else xml_document("GetObjectAttributes", 200, data)
            except S3ResponseError as exc:
                if exc.code != "MalformedResponse":
                    raise  # an <Error> document in a 200 answer
                root = None
            if root is None:
                self._attributes_unknown = True
                return None
            parts = [element for element in root.iter() if local_name(element.tag) == "Part"]
            if not parts:
                return None
            for part in parts:
                size = next((c.text for c in part if local_name(c.tag) == "Size"), None)
                if size is None:
                    return None
                sizes.append(int(size))
            if child_text(root, "IsTruncated") != "true":
                return sizes
            marker = int(child_text(root, "NextPartNumberMarker") or 0)
            if not marker:
                return sizes

    async def bucket_versioning(self, bucket: str) -> str:
        """GetBucketVersioning's status: "Enabled", "Suspended", or "" (never enabled)."""
        root = await self._call(
            "GetBucketVersioning",
            "GET",
            bucket,
            "",
            {"versioning": ""},
            {},
            _xml("GetBucketVersioning"),
        )
        return child_text(root, "Status")

    async def list_page(
        self,
        bucket: str,
        prefix: str = "",
        *,
        start_after: str | None = None,
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> tuple[list[ObjectInfo], str | None]:
        """One ListObjectsV2 page: the objects and the token of the next page (None: last)."""
        objects, _, token = await self.list_level(
            bucket,
            prefix,
            start_after=start_after,
            continuation_token=continuation_token,
            max_keys=max_keys,
        )
        return objects, token

    async def list_level(
        self,
        bucket: str,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        continuation_token: str | None = None,
        max_keys: int = 1000,
    ) -> tuple[list[ObjectInfo], list[str], str | None]:
        """One ListObjectsV2 page, with `delimiter` rolling keys up into common prefixes:
        the objects, the common prefixes and the token of the next page (None: last)."""
        # Keys travel URL-encoded: XML 1.0 cannot carry every character a key may hold
        # (control characters; a carriage return would even arrive as a line feed).
        query = {
            "list-type": "2",
            "prefix": prefix,
            "max-keys": str(max_keys),
            "encoding-type": "url",
        }
        if delimiter:
            query["delimiter"] = delimiter
        if start_after:
            query["start-after"] = start_after
        if continuation_token:
            query["continuation-token"] = continuation_token
        root = await self._call(
            "ListObjectsV2", "GET", bucket, "", query, {}, _xml("ListObjectsV2", listing=True)
        )
        encoded = url_encoded(root)
        objects = []
        prefixes = []
        for element in root:
            name = local_name(element.tag)
            if name == "CommonPrefixes":
                prefixes.append(listed_key(child_text(element, "Prefix"), encoded=encoded))
                continue
            if name != "Contents":
                continue
            fields = {local_name(child.tag): child.text or "" for child in element}
            objects.append(
                ObjectInfo(
                    key=listed_key(fields.get("Key", ""), encoded=encoded),
                    version_id=None,
                    size=int(fields.get("Size") or 0),
                    etag=normalise_etag(fields.get("ETag")),
                    last_modified=whole_seconds(datetime.fromisoformat(fields["LastModified"])),
                    storage_class=fields.get("StorageClass") or "STANDARD",
                )
            )
        truncated = child_text(root, "IsTruncated") == "true"
        token = (child_text(root, "NextContinuationToken") or None) if truncated else None
        return objects, prefixes, token

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        start_after: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[ObjectInfo]:
        """Every (latest) object under `prefix` after `start_after`, in key order.

        A page is asked for again, with a longer back-off, after its request's own resends
        failed (`LISTING_PATIENCE`): a scan is one long chain of pages, and one page lost to
        a passing fault would otherwise fail the whole scan.
        """
        token = None
        while True:
            page, token = await resend(
                functools.partial(
                    self.list_page,
                    bucket,
                    prefix,
                    start_after=start_after,
                    continuation_token=token,
                    max_keys=page_size,
                ),
                LISTING_PATIENCE,
                self.retries,
                replayable=True,
            )
            for info in page:
                yield info
            if token is None:
                return

    # -- the wire -----------------------------------------------------------------------

    async def _write(
        self,
        operation: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes | AsyncIterable[bytes],
        length: int,
    ) -> WriteResult:

        async def written(response: HttpResponse) -> WriteResult:
            return write_result(response.headers, response.headers.get("etag"))

        return await self._call(
            operation, "PUT", bucket, key, query, headers, written, body=body, length=length
        )

    async def _call(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        read: Callable[[HttpResponse], Awaitable[T]],
        *,
        body: bytes | AsyncIterable[bytes] | None = None,
        length: int | None = None,
    ) -> T:
        """Send a request and `read` its answer, again after a transient failure.

        A body streamed from elsewhere cannot be sent twice: its failure is the caller's.
        """

        async def once() -> T:
            async with self._request(
                operation, method, bucket, key, query, headers, body=body, length=length
            ) as response:
                return await read(response)

        if body is not None and length is None and isinstance(body, bytes):
            length = len(body)
        return await resend(once, self._retry, self.retries, replayable=not _streamed(body))

    @asynccontextmanager
    async def _request(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        *,
        body: bytes | AsyncIterable[bytes] | None = None,
        length: int | None = None,
    ) -> AsyncIterator[HttpResponse]:
        host, path = self._location(bucket, key)
        query_string = canonical_query(query)
        request_headers = {name.lower(): value for name, value in headers.items()}
        if length is not None:
            request_headers["content-length"] = str(length)
        elif method in ("PUT", "POST"):
            # CopyObject, CreateMultipartUpload: no body, and some stores want to be told.
            request_headers["content-length"] = "0"
        await self._signer.sign(method, host, path, query_string, request_headers)
        target = f"{path}?{query_string}" if query_string else path
        async with self._pool.request(method, host, target, request_headers, body) as response:
            if response.status >= 300:
                raise await response_error(operation, method, response)
            yield response

    async def close(self) -> None:
        await self._pool.close()

    def _location(self, bucket: str, key: str) -> tuple[str, str]:
        """(host, canonical path) for an object of `bucket` (the bucket itself for "")."""
        encoded_key = quote_s3(key, safe="/")
        if self._endpoint.addressing_style == "virtual" and "." not in bucket:
            return f"{bucket}.{self._host}", f"{self._base_path}/{encoded_key}"
        return self._host, f"{self._base_path}/{bucket}/{encoded_key}"


def store_name(endpoint: Endpoint, role: str = "store") -> str:
    """How messages name a store: its role and URL (`target https://minio:9000`)."""
    return f"{role} {endpoint.url or 'AWS S3'}"


@asynccontextmanager
async def open_http_client(
    endpoint: Endpoint,
    max_connections: int = 10,
    timeouts: ClientTimeouts | None = None,
    features: StoreFeatures | None = None,
    retry: RequestRetry | None = None,
) -> AsyncIterator[S3HttpClient]:
    """An `S3HttpClient` for `endpoint` whose pool holds `max_connections` connections;
    `features`: what the store is known to lack (shared by its clients in one run);
    `retry`: how often a request that failed transiently is sent again."""
    timeouts = timeouts or ClientTimeouts()
    client = S3HttpClient(
        endpoint,
        http_pool(endpoint, max_connections, timeouts),
        CredentialSource(endpoint),
        features,
        retry,
    )
    try:
        yield client
    finally:
        await client.close()


def http_pool(endpoint: Endpoint, max_connections: int, timeouts: ClientTimeouts) -> HttpPool:
    """The connection pool for `endpoint` (TLS verified against its CA bundle, or the
    system's store, unless the endpoint says not to verify)."""
    scheme = urlsplit(endpoint.url).scheme if endpoint.url else "https"
    return HttpPool(
        scheme=scheme,
        limit=max(1, max_connections),
        ssl_context=ssl_context(endpoint) if scheme == "https" else None,
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
    )


# -- helpers ------------------------------------------------------------------------------


async def _head_answer(response: HttpResponse) -> HeadResult:
    return head_result(response.headers, int(response.headers.get("content-length", 0)))


async def _nothing(response: HttpResponse) -> None:
    return None


def _xml(
    operation: str, *, listing: bool = False
) -> Callable[[HttpResponse], Awaitable[ET.Element]]:
    async def read(response: HttpResponse) -> ET.Element:
        return await xml_body(operation, response, listing=listing)

    return read


def _streamed(body: bytes | AsyncIterable[bytes] | None) -> bool:
    """Whether a body streams from elsewhere, and so can be sent only once."""
    return body is not None and not isinstance(body, bytes | bytearray | memoryview)


def _version_query(version_id: str | None) -> dict[str, str]:
    version = version_or_none(version_id)
    return {"versionId": version} if version else {}


def _copy_source(bucket: str, key: str, version_id: str | None) -> str:
    source = f"/{bucket}/{quote_s3(key, safe='/')}"
    version = version_or_none(version_id)
    return f"{source}?versionId={quote_s3(version)}" if version else source


def _at_most(limit: int) -> Callable[[HttpResponse], Awaitable[bytes | None]]:
    """Read the whole body, or None (left unread, so the connection is dropped) when it is
    longer than `limit` bytes."""

    async def read(response: HttpResponse) -> bytes | None:
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return None
        data = bytearray()
        while chunk := await response.read(64 * 1024):
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)

    return read
