"""What went wrong with an S3 call, and what the engine should do about it.

`classify` maps any exception raised by the storage layer (botocore, aiohttp, asyncio or
our own `StorageError`s) onto a small `ErrorClass`: retry it, give up on the object, treat
the object as gone, re-plan because a precondition failed, or wait for a restore. The
engine's retry policy is the only one in force (botocore tries once), so this mapping is
what decides whether a flaky network costs a retry or a failed object.
"""

from __future__ import annotations

import asyncio
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from objmig.storage.tls import CA_HINT, untrusted_certificate

if TYPE_CHECKING:
    import botocore.exceptions as bce

ErrorKind = Literal["retryable", "permanent", "not_found", "precondition", "invalid_state"]


@dataclass(frozen=True)
class ErrorClass:
    """The engine's view of a failure.

    `is_config_error` marks failures no retry or other object can fix (wrong credentials,
    missing bucket, unusable KMS key): a worker seeing one exits with a dedicated code so
    the Job's podFailurePolicy stops the whole migration instead of burning retries.
    AccessDenied is permanent but not a config error: policies deny single keys too.
    """

    kind: ErrorKind
    code: str
    message: str
    is_config_error: bool = False

    @property
    def retryable(self) -> bool:
        return self.kind == "retryable"


class StorageError(Exception):
    """An error raised by objmig's storage layer itself (not by the SDK)."""

    kind: ErrorKind = "permanent"
    code: str = "StorageError"
    is_config_error: bool = False


class S3ResponseError(StorageError):
    """An S3 error answer to a request of our own HTTP client (`s3http`).

    Carries the HTTP status, S3's error code and message and the operation. The message is
    S3's own text only: the rest of an error document (StringToSign, CanonicalRequest) can
    carry the access key id and is dropped.
    """

    def __init__(self, operation: str, status: int, code: str, message: str) -> None:
        self.operation = operation
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{operation}: {code}: {message}" if message else f"{operation}: {code}")


class SourceChangedError(StorageError):
    """The source object no longer matches what was scanned (ETag, size or version)."""

    kind: ErrorKind = "precondition"
    code = "SourceChanged"


class IntegrityError(StorageError):
    """Bytes written differ from bytes read (a part's MD5 differs from its ETag, or the
    final ETag differs from the source's). Retrying re-copies the object."""

    kind: ErrorKind = "retryable"
    code = "IntegrityError"


class TruncatedBodyError(StorageError):
    """A response body ended before its Content-Length."""

    kind: ErrorKind = "retryable"
    code = "IncompleteBody"


class RestoreNotAllowedError(StorageError):
    """A restore request that S3 would refuse (e.g. Expedited for DEEP_ARCHIVE)."""

    kind: ErrorKind = "permanent"
    code = "InvalidRestoreRequest"


class ManifestError(StorageError):
    """A manifest that cannot be parsed (format, schema or checksum)."""

    kind: ErrorKind = "permanent"
    code = "InvalidManifest"


# Error codes S3 and compatible stores use for transient conditions.
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "OperationAborted",
        "XMinioServerNotInitialized",
        "XMinioStorageFull",
        "BadDigest",
        "IncompleteBody",
        "EC2ThrottledException",
        "IDPCommunicationError",
    }
)
# Retryable for the object, not for the request: the same request sent again gets the same
# answer. An upload gone under a copy (aborted by a leftovers sweep, or by the next
# attempt after this one's lease ran out) leaves the object fine: another attempt copies
# it with a new upload.
_ATTEMPT_ONLY_CODES = frozenset({"NoSuchUpload"})

# Codes that mean the spec (credentials, bucket, KMS key) is wrong for every object.
# AccessDenied is deliberately not here: bucket policies, object ownership and object lock
# deny single keys or prefixes, so it fails the object and the failure budget decides
# whether the migration as a whole should stop.
_CONFIG_CODES = frozenset(
    {
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "NoSuchBucket",
        "InvalidBucketName",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "KMS.NotFoundException",
        "KMS.DisabledException",
        "KMS.AccessDeniedException",
        "KMS.KMSInvalidStateException",
        "InvalidStorageClass",
        "NotImplemented",
        "InvalidEncryptionAlgorithmError",
        "NoCredentials",
    }
)

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "NotFound", "404"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_INVALID_STATE_CODES = frozenset(
    {"InvalidObjectState", "ObjectNotInActiveTierError", "RestoreAlreadyInProgress"}
)

# Exceptions from the transport: the request may not have reached the server, or the
# answer did not come back whole. Always worth another attempt. (The SDK's own kinds are
# in `_sdk_error_class`.)
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncio.IncompleteReadError,
    TimeoutError,
)

# Secret-looking material that must never reach a log line, a CR status or the ledger:
# URL userinfo, AWS access keys, signature and credential query parameters, and the
# fields some stores echo back on SignatureDoesNotMatch.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<=://)[^/@\s]+@"), "***@"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "***"),
    (
        re.compile(
            r"(?i)(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|"
            r"AWSAccessKeyId|aws_secret_access_key|SecretAccessKey|SessionToken)=[^&\s]+"
        ),
        r"\1=***",
    ),
    (re.compile(r"(?i)(Credential|Signature)=[^,\s]+"), r"\1=***"),
    # libpq keyword DSNs (a catalog's dsnSecretRef): "host=db password=..."
    (re.compile(r"(?i)\b(password)\s*=\s*[^\s&]+"), r"\1=***"),
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove known secrets and secret-looking material from `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, redacted, for a condition or an event."""
    return f"{type(exc).__name__}: {redact(str(exc))}"


def _client_error_class(exc: bce.ClientError) -> ErrorClass:
    response = exc.response
    error = response.get("Error", {})
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    code = str(error.get("Code") or status or "Unknown")
    return _s3_error_class(
        code, status, str(error.get("Message") or ""), getattr(exc, "operation_name", "")
    )


def _s3_error_class(code: str, status: int, message: str, operation: str) -> ErrorClass:
    """Classify an S3 error answer by its code and HTTP status."""
    # Only S3's own message: the rest of the error document can carry StringToSign and the
    # canonical request, which include the access key id.
    message = redact(message or _STATUS_TEXT.get(status, ""))
    text = f"{operation}: {code}: {message}" if operation else f"{code}: {message}"

    if code in _CONFIG_CODES or (status == 401 and code in ("401", "Unauthorized")):
        return ErrorClass("permanent", code, text, is_config_error=True)
    if code in _PRECONDITION_CODES or status == 412:
        return ErrorClass("precondition", code, text)
    if code in _INVALID_STATE_CODES:
        return ErrorClass("invalid_state", code, text)
    if code in _ATTEMPT_ONLY_CODES:  # a 404, but of the upload: the object is there
        return ErrorClass("retryable", code, text)
    if code in _NOT_FOUND_CODES or status == 404:
        return ErrorClass("not_found", code, text)
    if code in _RETRYABLE_CODES or status in (408, 429) or status >= 500:
        return ErrorClass("retryable", code, text)
    return ErrorClass("permanent", code, text)


_STATUS_TEXT = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    412: "Precondition Failed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def classify(exc: BaseException) -> ErrorClass:
    """Map an exception from an S3 call onto what the engine should do next."""
    refused = untrusted_certificate(exc)
    if refused is not None:
        # One line, no traceback: what the TLS layer said, and what to do about it.
        return ErrorClass(
            "permanent",
            "UntrustedCertificate",
            f"TLS: the server's certificate is not trusted ({refused}): {CA_HINT}",
            is_config_error=True,
        )
    if isinstance(exc, S3ResponseError):
        return _s3_error_class(exc.code, exc.status, exc.message, exc.operation)
    if isinstance(exc, StorageError):
        return ErrorClass(exc.kind, exc.code, redact(str(exc)), exc.is_config_error)
    sdk_class = _sdk_error_class(exc)
    if sdk_class is not None:
        return sdk_class
    if isinstance(exc, _TRANSPORT_ERRORS):
        return _transport_error_class(exc)
    if isinstance(exc, OSError):
        # Other socket-level errors (e.g. EPIPE while streaming a body) are transient too.
        return ErrorClass("retryable", type(exc).__name__, redact(str(exc)))
    return ErrorClass("permanent", type(exc).__name__, redact(str(exc)))


def worth_resending(exc: BaseException) -> bool:
    """Whether the request that raised `exc` may succeed if sent again as it was: a
    transient failure (see `resending.RequestRetry`), not one only another attempt can fix.

    A 501 is not transient: the store does not implement what was asked (a HEAD's 501 has
    no code to say so), and sent again it answers the same; objmig learns from the first
    answer that the store lacks it (`features.unsupported`).
    """
    if isinstance(exc, S3ResponseError) and exc.status == 501:
        return False
    error = classify(exc)
    return error.retryable and error.code not in _ATTEMPT_ONLY_CODES


def _transport_error_class(exc: BaseException) -> ErrorClass:
    name = type(exc).__name__
    detail = redact(str(exc)) or name
    return ErrorClass("retryable", name, f"{name}: {detail}")


def _sdk_error_class(exc: BaseException) -> ErrorClass | None:
    """botocore's and aiohttp's exceptions, or None for any other.

    The SDK is imported only where a call needs it (see `objmig.storage.sdk`), and none of
    its exceptions can exist before that: a module not loaded yet is not loaded here.
    """
    if "botocore" in sys.modules:
        import botocore.exceptions as bce

        if isinstance(exc, bce.ClientError):
            return _client_error_class(exc)
        if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
            return ErrorClass("permanent", "NoCredentials", redact(str(exc)), is_config_error=True)
        if isinstance(exc, bce.ParamValidationError):
            return ErrorClass("permanent", "InvalidParameter", redact(str(exc)))
        if isinstance(
            exc,
            bce.EndpointConnectionError
            | bce.ConnectionClosedError
            | bce.ConnectTimeoutError
            | bce.ReadTimeoutError
            | bce.ResponseStreamingError
            | bce.IncompleteReadError
            | bce.HTTPClientError,
        ):
            return _transport_error_class(exc)
        if isinstance(exc, bce.BotoCoreError):
            return ErrorClass("permanent", type(exc).__name__, redact(str(exc)))
    if "aiohttp" in sys.modules:
        import aiohttp

        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
            return _transport_error_class(exc)
    return None
