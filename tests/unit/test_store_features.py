"""What a store lacks, and the trust it is given: the pure parts.

Stores are learned about once (`StoreFeatures`), said once, and named in the Degraded
condition; CA bundles come from the spec or the standard variables and are checked before
any request; an untrusted certificate is one line whatever client met it.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest

from objmig.api.conditions import ConditionType, Reason, find_condition
from objmig.api.migration import BucketSpec
from objmig.engine.secrets import (
    ConfigMapNotFound,
    EnvConfigMaps,
    MappingConfigMaps,
    MappingSecrets,
    ca_bundle_of,
    config_map_env_name,
)
from objmig.engine.status_stores import degraded_condition
from objmig.ledger.state import MigrationState, StoreFinding
from objmig.storage.errors import S3ResponseError, classify
from objmig.storage.features import Aspect, StoreFeatures, unsupported
from objmig.storage.tls import InvalidCABundle, check_ca_bundle, untrusted_certificate
from tests.support.pki import generate_server_pki


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> str:
    pki = generate_server_pki(tmp_path_factory.mktemp("pki"), common_name="unit")
    return pki.ca_cert.read_text()


def test_a_missing_aspect_is_said_once_and_handed_out_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    features = StoreFeatures("target https://s3.example")
    features.learn_missing(Aspect.TAGS, "GetObjectTagging: NotImplemented")
    features.learn_missing(Aspect.TAGS, "PutObject ignored x-amz-tagging")

    assert features.lacks(Aspect.TAGS)
    assert not features.lacks(Aspect.PART_SIZES)
    (finding,) = features.unreported()
    assert features.unreported() == [finding], "kept until the ledger has it"
    features.reported([finding])
    assert features.unreported() == []
    assert finding.answer == "GetObjectTagging: NotImplemented", "the first answer stands"
    assert finding.message.startswith("target https://s3.example: no tags (GetObjectTagging")
    assert "copy.preserveTags" in finding.message
    assert [r.getMessage() for r in caplog.records] == [finding.message]


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (501, "NotImplemented", True),
        (400, "NotImplemented", True),
        (405, "MethodNotAllowed", True),
        (503, "SlowDown", False),
        (500, "InternalError", False),
        (403, "AccessDenied", False),
        (404, "NoSuchKey", False),
    ],
)
def test_only_not_implemented_answers_count_as_a_missing_aspect(
    status: int, code: str, expected: bool
) -> None:
    assert unsupported(S3ResponseError("GetObjectTagging", status, code, "")) is expected


def test_the_degraded_condition_names_each_store_and_aspect() -> None:
    clean = degraded_condition(MigrationState())
    assert clean[:3] == (ConditionType.DEGRADED, "False", Reason.ALL_FEATURES_PRESENT)
    findings = {
        "target t/tags": StoreFinding(store="target t", aspect="tags", message="target t: no tags"),
        "source s/partSizes": StoreFinding(
            store="source s", aspect="partSizes", message="source s: no partSizes"
        ),
    }
    degraded = degraded_condition(MigrationState(store_features=findings))
    assert degraded[:3] == (ConditionType.DEGRADED, "True", Reason.STORE_FEATURE_MISSING)
    assert degraded[3] == "source s: no partSizes; target t: no tags"


def test_the_status_carries_the_degraded_condition() -> None:
    from objmig.api.migration import ObjectMigrationSpec, ObjectMigrationStatus
    from objmig.engine.status import StatusInputs, build_status
    from objmig.ledger import Counts

    spec = ObjectMigrationSpec.model_validate(
        {"source": {"bucket": "src-bucket"}, "target": {"bucket": "dst-bucket"}}
    )
    finding = StoreFinding(store="target t", aspect="tags", message="target t: no tags")
    status = build_status(
        StatusInputs(
            spec=spec,
            generation=1,
            counts=Counts(),
            state=MigrationState(store_features={"target t/tags": finding}),
            window=[],
            window_truncated=False,
            now=datetime.now(UTC),
            etag_unproven={"sha256": 3},
        ),
        ObjectMigrationStatus(),
    )
    degraded = find_condition(status.conditions, ConditionType.DEGRADED)
    assert degraded is not None
    assert (degraded.status, degraded.message) == ("True", "target t: no tags")
    assert status.verification.etag_unproven == 3
    assert status.verification.etag_unproven_by == {"sha256": 3}


# -- CA bundles --------------------------------------------------------------------------------


def _bucket(**extra: object) -> BucketSpec:
    return BucketSpec.model_validate(
        {"endpoint": "https://minio.example:9000", "bucket": "b-bucket", **extra}
    )


def test_the_spec_s_ca_bundle_comes_from_a_config_map_or_a_secret(ca_pem: str) -> None:
    by_map = _bucket(caBundle={"configMapKeyRef": {"name": "corp-ca", "key": "ca.crt"}})
    by_secret = _bucket(caBundle={"secretKeyRef": {"name": "corp-ca", "key": "ca.crt"}})
    maps = MappingConfigMaps({"corp-ca": {"ca.crt": ca_pem}})
    secrets = MappingSecrets({("corp-ca", "ca.crt"): ca_pem})
    nothing = MappingSecrets({})

    assert ca_bundle_of("source", by_map, nothing, maps, environ={}) == ca_pem
    assert ca_bundle_of("target", by_secret, secrets, MappingConfigMaps(), environ={}) == ca_pem
    # In a worker pod the ConfigMap key arrives as an environment variable.
    pod = EnvConfigMaps({config_map_env_name("corp-ca", "ca.crt"): ca_pem})
    assert ca_bundle_of("source", by_map, nothing, pod, environ={}) == ca_pem


def test_a_missing_or_empty_ca_bundle_is_refused_before_any_request(ca_pem: str) -> None:
    by_map = _bucket(caBundle={"configMapKeyRef": {"name": "corp-ca", "key": "ca.crt"}})
    nothing = MappingSecrets({})
    with pytest.raises(ConfigMapNotFound, match=r"ConfigMap 'corp-ca' has no key 'ca.crt'"):
        ca_bundle_of("source", by_map, nothing, MappingConfigMaps(), environ={})
    junk = MappingConfigMaps({"corp-ca": {"ca.crt": "not a certificate"}})
    with pytest.raises(InvalidCABundle, match=r"spec.source.caBundle \(ConfigMap 'corp-ca'"):
        ca_bundle_of("source", by_map, nothing, junk, environ={})
    assert check_ca_bundle(ca_pem, "x") == ca_pem


def test_without_a_spec_bundle_the_standard_variables_are_read_in_order(
    ca_pem: str, tmp_path: Path
) -> None:
    aws, openssl = tmp_path / "aws.pem", tmp_path / "openssl.pem"
    aws.write_text(ca_pem)
    other = generate_server_pki(tmp_path / "other", common_name="other").ca_cert.read_text()
    openssl.write_text(other)
    bucket, nothing, maps = _bucket(), MappingSecrets({}), MappingConfigMaps()

    both = {"AWS_CA_BUNDLE": str(aws), "SSL_CERT_FILE": str(openssl)}
    assert ca_bundle_of("source", bucket, nothing, maps, environ=both) == ca_pem
    assert ca_bundle_of("source", bucket, nothing, maps, environ={"SSL_CERT_FILE": str(openssl)})
    assert ca_bundle_of("source", bucket, nothing, maps, environ={}) is None
    plain = BucketSpec.model_validate({"endpoint": "http://minio:9000", "bucket": "b-bucket"})
    assert ca_bundle_of("source", plain, nothing, maps, environ=both) is None, "no TLS, no CA"
    with pytest.raises(ValueError, match="AWS_CA_BUNDLE=/nowhere"):
        ca_bundle_of("source", bucket, nothing, maps, environ={"AWS_CA_BUNDLE": "/nowhere"})


def test_a_ca_bundle_needs_exactly_one_source_and_an_https_endpoint() -> None:
    with pytest.raises(ValueError, match="exactly one of configMapKeyRef and secretKeyRef"):
        _bucket(caBundle={})
    with pytest.raises(ValueError, match="caBundle needs an https:// endpoint"):
        BucketSpec.model_validate(
            {
                "endpoint": "http://minio:9000",
                "bucket": "b-bucket",
                "caBundle": {"secretKeyRef": {"name": "ca", "key": "ca.crt"}},
            }
        )


def test_an_untrusted_certificate_is_a_configuration_error_in_one_line() -> None:
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_message = "self-signed certificate in certificate chain"
    wrapped = ConnectionError("could not connect")
    wrapped.__cause__ = refused

    for exc in (refused, wrapped):
        assert untrusted_certificate(exc) == "self-signed certificate in certificate chain"
        error = classify(exc)
        assert error.is_config_error
        assert error.code == "UntrustedCertificate"
        assert "\n" not in error.message
        assert "caBundle" in error.message
        assert "AWS_CA_BUNDLE" in error.message
    assert untrusted_certificate(ConnectionResetError()) is None
    assert classify(ConnectionResetError()).retryable
