"""classify() on constructed SDK and transport errors, and redaction of secrets."""

from __future__ import annotations

import aiohttp
import botocore.exceptions as bce
import pytest

from objmig.storage.errors import (
    IntegrityError,
    ManifestError,
    S3ResponseError,
    SourceChangedError,
    classify,
    redact,
    worth_resending,
)


def client_error(code: str, status: int, message: str = "msg", **extra: str) -> bce.ClientError:
    return bce.ClientError(
        {
            "Error": {"Code": code, "Message": message, **extra},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "kind", "config"),
    [
        ("SlowDown", 503, "retryable", False),
        ("Throttling", 400, "retryable", False),
        ("RequestTimeout", 400, "retryable", False),
        ("InternalError", 500, "retryable", False),
        ("502", 502, "retryable", False),
        # Access can be denied per key or prefix (bucket policies, object lock), so it
        # fails the object, not the migration.
        ("AccessDenied", 403, "permanent", False),
        ("403", 403, "permanent", False),
        ("InvalidAccessKeyId", 403, "permanent", True),
        ("SignatureDoesNotMatch", 403, "permanent", True),
        ("NoSuchBucket", 404, "permanent", True),
        ("NoSuchKey", 404, "not_found", False),
        ("404", 404, "not_found", False),
        ("NoSuchVersion", 404, "not_found", False),
        ("PreconditionFailed", 412, "precondition", False),
        ("InvalidObjectState", 403, "invalid_state", False),
        ("InvalidArgument", 400, "permanent", False),
        ("EntityTooSmall", 400, "permanent", False),
    ],
)
def test_client_errors(code: str, status: int, kind: str, config: bool) -> None:
    error = classify(client_error(code, status))

    assert (error.kind, error.code, error.is_config_error) == (kind, code, config)
    assert error.retryable is (kind == "retryable")
    assert error.message.startswith(f"GetObject: {code}")


@pytest.mark.parametrize(
    "exc",
    [
        bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        bce.ConnectTimeoutError(endpoint_url="http://x"),
        bce.ReadTimeoutError(endpoint_url="http://x"),
        bce.ConnectionClosedError(endpoint_url="http://x"),
        bce.IncompleteReadError(actual_bytes=1, expected_bytes=2),
        bce.ResponseStreamingError(error="reset"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        BrokenPipeError(32, "EPIPE"),
    ],
)
def test_transport_failures_are_retryable(exc: BaseException) -> None:
    assert classify(exc).kind == "retryable"


def test_own_errors_carry_their_kind() -> None:
    assert classify(SourceChangedError("changed")).kind == "precondition"
    assert classify(IntegrityError("md5")).kind == "retryable"
    assert classify(ManifestError("bad")).kind == "permanent"


def test_missing_credentials_are_a_config_error() -> None:
    error = classify(bce.NoCredentialsError())

    assert error.is_config_error
    assert error.kind == "permanent"


def test_unknown_exceptions_are_permanent() -> None:
    assert classify(ValueError("bug")).kind == "permanent"


def test_messages_never_carry_secrets() -> None:
    exc = client_error(
        "SignatureDoesNotMatch",
        403,
        "bad sig for AKIAABCDEFGHIJKLMNOP at http://user:hunter2@host/x?X-Amz-Signature=abcd",
        StringToSign="AWS4-HMAC-SHA256 ... secret stuff",
    )

    message = classify(exc).message

    assert "AKIAABCDEFGHIJKLMNOP" not in message
    assert "hunter2" not in message
    assert "abcd" not in message
    assert "secret stuff" not in message


def test_redact_removes_passwords_of_both_dsn_forms() -> None:
    text = "connect postgresql://app:hunter2@db/x failed; host=db password = hunter3 user=app"

    cleaned = redact(text)

    assert "hunter2" not in cleaned
    assert "hunter3" not in cleaned
    assert "host=db" in cleaned


def test_redact_removes_given_secrets_and_credential_parameters() -> None:
    text = "key=supersecret Credential=AKIA/2024, Signature=deadbeef token"

    cleaned = redact(text, ("supersecret",))

    assert "supersecret" not in cleaned
    assert "deadbeef" not in cleaned
    assert "Credential=***" in cleaned


@pytest.mark.parametrize(
    ("error", "resent"),
    [
        (S3ResponseError("HeadObject", 503, "503", "Service Unavailable"), True),
        (S3ResponseError("HeadObject", 500, "500", "Internal Server Error"), True),
        # A store that does not implement what was asked answers the same again: a HEAD's
        # 501 carries no code to say so, only its status.
        (S3ResponseError("HeadObject", 501, "501", "Not Implemented"), False),
        (S3ResponseError("GetObjectAttributes", 501, "NotImplemented", "no"), False),
        (S3ResponseError("CompleteMultipartUpload", 404, "NoSuchUpload", "gone"), False),
    ],
)
def test_what_a_request_is_sent_again_for(error: S3ResponseError, resent: bool) -> None:
    assert worth_resending(error) is resent
