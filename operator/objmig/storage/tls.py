"""TLS for both clients of a store: the certificate authorities an HTTPS endpoint must
chain to, and what an untrusted certificate is called.

A private CA is given once, as PEM text on the `Endpoint` (from the spec's `caBundle`, or
the standard environment variables: see `objmig.engine.context.ca_bundle_of`), and both
clients trust exactly that: `s3http`'s pool through an `ssl.SSLContext` made from the PEM,
botocore through a file holding it (botocore takes a path, and given `verify=True` it
ignores `AWS_CA_BUNDLE`, which is why version listings, restores and cleanups used to fail
against a private CA while plain copies worked).

An untrusted certificate is a configuration error (no retry or other object can fix it),
told in one line that says what to do (`untrusted_certificate`).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from objmig.storage.endpoint import Endpoint

#: How a user gives the CA, for the error message of an untrusted certificate.
CA_HINT = (
    "give the CA that signed it in spec.source.caBundle / spec.target.caBundle "
    "(objmig run also reads AWS_CA_BUNDLE or SSL_CERT_FILE)"
)


class InvalidCABundle(ValueError):
    """A CA bundle that holds no usable PEM certificate."""


def check_ca_bundle(pem: str, where: str) -> str:
    """`pem` if it holds at least one certificate; else `InvalidCABundle` naming `where`."""
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidCABundle(f"{where} holds no usable PEM certificate ({exc})") from None
    return pem


def ssl_context(endpoint: Endpoint) -> ssl.SSLContext | None:
    """The context `s3http`'s pool uses; None: the default one (the system's store)."""
    if not endpoint.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if endpoint.ca_bundle:
        return ssl.create_default_context(cadata=endpoint.ca_bundle)
    return None


@contextmanager
def sdk_verify(endpoint: Endpoint) -> Iterator[bool | str | None]:
    """botocore's `verify` for `endpoint`, valid inside the block.

    A path to a file holding the endpoint's CA bundle (removed afterwards); False without
    verification; None otherwise, which lets botocore find its own configuration
    (`AWS_CA_BUNDLE`, a profile's `ca_bundle`) as the AWS CLI would.
    """
    if not endpoint.verify_tls:
        yield False
        return
    if not endpoint.ca_bundle:
        yield None
        return
    descriptor, path = tempfile.mkstemp(prefix="objmig-ca-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(endpoint.ca_bundle)
        yield path
    finally:
        os.unlink(path)


def untrusted_certificate(exc: BaseException) -> str | None:
    """Why the server's certificate was refused, when `exc` (or what it wraps) says so.

    `ssl.SSLCertVerificationError` from `s3http`'s pool; botocore's `SSLError` carries
    aiohttp's certificate error in its `error` field, which carries the `ssl` one.
    """
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # aiohttp's certificate error is an SSLCertVerificationError too, without its fields:
        # the one it wraps has them.
        message = getattr(current, "verify_message", None)
        if isinstance(current, ssl.SSLCertVerificationError) and message:
            return str(message)
        kwargs = getattr(current, "kwargs", None)
        wrapped = [
            getattr(current, "certificate_error", None),
            kwargs.get("error") if isinstance(kwargs, dict) else None,
            current.__cause__,
            current.__context__,
        ]
        pending += [w for w in wrapped if isinstance(w, BaseException)]
    return None
