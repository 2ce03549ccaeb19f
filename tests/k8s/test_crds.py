"""Proof that the generated CRDs work on a real kube-apiserver (issue 4).

The CRDs in ``crds/`` are generated from the pydantic models; these tests show that the API
server accepts them, accepts every example, rejects malformed objects with a message naming the
field (schema checks and every CEL rule, including the update-only immutability rules), that
what it stores still validates with the models, that ``kubectl explain`` shows the models'
descriptions and that the printer columns read the status the operator writes.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from objmig.api.loading import SpecError, parse_resource
from objmig.api.migration import CatalogAction, CopySpec, ObjectMigrationStatus
from objmig.api.migration_cleanup import ApprovalSpec, MigrationCleanupStatus
from tests.support.cluster import ControlPlane, wait_until

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CRD_NAMES = ("objectmigrations.objmig.dev", "migrationcleanups.objmig.dev")

DELETE = object()  # sentinel: remove the key instead of setting it


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


def _established(cluster: ControlPlane) -> bool:
    for name in CRD_NAMES:
        crd = cluster.kubectl_json("get", "crd", name)
        conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
        if conditions.get("Established") != "True" or conditions.get("NamesAccepted") != "True":
            return False
    return True


@pytest.fixture(scope="module")
def crds(k8s_cluster: ControlPlane) -> ControlPlane:
    """The cluster with our CRDs installed (server-side apply) and Established."""
    k8s_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=objmig-crds",
        "-f",
        str(CRDS),
    )
    wait_until(lambda: _established(k8s_cluster), timeout=30, what="CRDs Established")
    return k8s_cluster


@pytest.fixture(scope="module")
def shared_ns(crds: ControlPlane) -> Iterator[str]:
    """One namespace for the many server-side dry-run rejections (nothing is persisted)."""
    name = f"crd-proof-{secrets.token_hex(3)}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set (or, with ``DELETE``, remove) a dotted path such as ``spec.copy.concurrency``."""
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def _mutated(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for path, value in changes.items():
        _set(doc, path, value)
    return doc


def _base_migration(name: str = "proof") -> dict[str, Any]:
    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": name},
        "spec": {
            "source": {"bucket": "src-bucket", "credentialsSecretRef": {"name": "src-creds"}},
            "target": {"bucket": "dst-bucket", "prefix": "copy/"},
        },
    }


def _base_cleanup(name: str = "proof-cleanup") -> dict[str, Any]:
    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "MigrationCleanup",
        "metadata": {"name": name},
        "spec": {"migrationRef": {"name": "proof"}},
    }


def _create(
    cluster: ControlPlane, namespace: str, doc: dict[str, Any], *, dry_run: bool = True
) -> subprocess.CompletedProcess[str]:
    """``kubectl create`` with strict (server-side) field validation; never raises."""
    args = ["create", "-n", namespace, "--validate=strict", "-f", "-"]
    if dry_run:
        args.insert(1, "--dry-run=server")
    return cluster.kubectl(*args, input=json.dumps(doc), check=False)


def _pydantic_problems(doc: dict[str, Any]) -> list[str]:
    """The CLI's verdict on the same document: ``[]`` when valid, else ``path: message`` lines."""
    named = copy.deepcopy(doc)
    named["metadata"].setdefault("namespace", "default")
    try:
        parse_resource(named)
    except SpecError as error:
        return error.problems
    return []


def _flat(text: str) -> str:
    """Whitespace-insensitive text (kubectl wraps long descriptions)."""
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------
# 1. The CRDs apply, become Established, and re-applying changes nothing
# --------------------------------------------------------------------------------------------


def test_crds_apply_are_established_and_reapply_is_idempotent(crds: ControlPlane) -> None:
    before = {name: crds.kubectl_json("get", "crd", name)["metadata"] for name in CRD_NAMES}
    for name in CRD_NAMES:
        crd = crds.kubectl_json("get", "crd", name)
        conditions = {c["type"]: c for c in crd["status"]["conditions"]}
        assert conditions["Established"]["status"] == "True", conditions
        assert conditions["NamesAccepted"]["status"] == "True", conditions
        # The server kept every CEL rule (none were dropped or rejected).
        committed = yaml.safe_load((CRDS / f"{name}.yaml").read_text())
        assert json.dumps(crd["spec"]["versions"][0]["schema"], sort_keys=True).count(
            "x-kubernetes-validations"
        ) == json.dumps(committed["spec"]["versions"][0]["schema"], sort_keys=True).count(
            "x-kubernetes-validations"
        )

    out = crds.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=objmig-crds",
        "-f",
        str(CRDS),
    ).stdout
    assert out.count("serverside-applied") == len(CRD_NAMES), out
    # A dry-run apply of the same files reports nothing to change either.
    crds.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=objmig-crds", "-f", str(CRDS)
    )
    for name in CRD_NAMES:
        after = crds.kubectl_json("get", "crd", name)["metadata"]
        assert after["resourceVersion"] == before[name]["resourceVersion"], name
        assert after["generation"] == before[name]["generation"], name

    # Short names and the category resolve.
    resources = crds.kubectl("api-resources", "--api-group=objmig.dev", "-o", "wide").stdout
    words = _flat(resources).split()
    for plural, short in (("objectmigrations", "om"), ("migrationcleanups", "mcl")):
        assert plural in words, resources
        assert short in words, resources


# --------------------------------------------------------------------------------------------
# 2. Every example is accepted, and what the server stores round-trips through the models
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_accepted_and_round_trips(
    crds: ControlPlane, k8s_namespace: str, example: Path
) -> None:
    documents = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert documents, example
    for original in documents:
        doc = copy.deepcopy(original)
        doc["metadata"]["namespace"] = k8s_namespace
        text = yaml.safe_dump(doc)
        kind, name = doc["kind"].lower(), doc["metadata"]["name"]

        dry = crds.kubectl(
            "apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text
        ).stdout
        assert "(server dry run)" in dry, dry
        crds.kubectl("apply", "--validate=strict", "-f", "-", input=text)

        stored = crds.kubectl_json("get", kind, name, "-n", k8s_namespace)
        # The server applied the schema's defaults ...
        spec = stored["spec"]
        if kind == "objectmigration":
            assert spec["source"]["addressingStyle"] == "auto"
            # copy.mode none may leave the target out (it is then the source).
            assert spec.get("target", {"keyTemplate": "{relative}"})["keyTemplate"]
            assert spec["dryRun"] is False
        else:
            assert spec["gracePeriod"]
            assert spec["minAge"]
        # ... and the result is still valid for the models, meaning the same thing as the
        # example did: every server default equals the pydantic default.
        from_server = parse_resource(stored, f"stored {example.name}")
        from_file = parse_resource(doc, str(example))
        assert from_server.spec == from_file.spec
        assert from_server.metadata.name == name
        assert from_server.metadata.namespace == k8s_namespace


# --------------------------------------------------------------------------------------------
# 3. Malformed objects are rejected, naming the field
# --------------------------------------------------------------------------------------------

OM, MCL = "ObjectMigration", "MigrationCleanup"

# (id, kind, changes to the base object, field path the server names, message text)
# fmt: off
REJECTED: list[tuple[str, str, dict[str, Any], str, str]] = [
    # wrong types
    ("concurrency-not-int", OM, {"spec.copy.concurrency": "many"}, "spec.copy.concurrency",
     "must be of type integer"),
    ("suspend-not-bool", OM, {"spec.suspend": "yes"}, "spec.suspend", "must be of type boolean"),
    ("include-not-list", OM, {"spec.selection.include": "*.jpg"}, "spec.selection.include",
     "must be of type array"),
    # unknown enum values
    ("overwrite-enum", OM, {"spec.copy.overwrite": "sometimes"}, "spec.copy.overwrite",
     'Unsupported value: "sometimes"'),
    ("verify-mode-enum", OM, {"spec.verify.mode": "md5"}, "spec.verify.mode",
     'Unsupported value: "md5"'),
    ("copy-mode-enum", OM, {"spec.copy.mode": "rsync"}, "spec.copy.mode",
     'Unsupported value: "rsync"'),
    ("encryption-enum", OM, {"spec.target.encryption.mode": "AES"},
     "spec.target.encryption.mode", 'Unsupported value: "AES"'),
    ("storage-class-enum", OM, {"spec.target.storageClass": "COLD"}, "spec.target.storageClass",
     'Unsupported value: "COLD"'),
    ("cleanup-what-enum", MCL, {"spec.what": "everything"}, "spec.what",
     'Unsupported value: "everything"'),
    # out-of-range numbers
    ("concurrency-zero", OM, {"spec.copy.concurrency": 0}, "spec.copy.concurrency",
     "greater than or equal to 1"),
    ("parallelism-too-big", OM, {"spec.workers.parallelism": 1000}, "spec.workers.parallelism",
     "less than or equal to 256"),
    ("restore-days-too-big", OM, {"spec.restore.days": 400}, "spec.restore.days",
     "less than or equal to 365"),
    ("failure-ratio-above-one", OM, {"spec.failurePolicy.maxFailureRatio": 1.5},
     "spec.failurePolicy.maxFailureRatio", "less than or equal to 1"),
    ("cleanup-limit-zero", MCL, {"spec.limit": 0}, "spec.limit", "greater than or equal to 1"),
    ("negative-size", OM, {"spec.selection.minSize": -1}, "spec.selection.minSize",
     "greater than or equal to 0"),
    # patterns: bucket, duration, quantity, digest
    ("bucket-pattern", OM, {"spec.target.bucket": "Bad_Bucket"}, "spec.target.bucket",
     "should match"),
    ("bucket-too-short", OM, {"spec.source.bucket": "ab"}, "spec.source.bucket", "should match"),
    ("duration-pattern", OM, {"spec.restore.pollInterval": "15 minutes"},
     "spec.restore.pollInterval", "should match"),
    ("cleanup-duration-pattern", MCL, {"spec.gracePeriod": "3d"}, "spec.gracePeriod",
     "should match"),
    ("quantity-pattern", OM, {"spec.copy.partSize": "16MB"}, "spec.copy.partSize",
     "should match"),
    ("resource-quantity-pattern", OM, {"spec.workers.resources.requests.memory": "lots"},
     "spec.workers.resources.requests.memory", "should match"),
    ("approval-digest-pattern", MCL, {"spec.approval.digest": "sha256:abc"},
     "spec.approval.digest", "should match"),
    # missing required fields
    ("missing-source", OM, {"spec.source": DELETE}, "spec.source", "Required value"),
    ("missing-source-bucket", OM, {"spec.source.bucket": DELETE}, "spec.source",
     "set exactly one of bucket, buckets or filesystem"),
    ("missing-migration-ref", MCL, {"spec.migrationRef": DELETE}, "spec.migrationRef",
     "Required value"),
    ("missing-catalog-table", OM,
     {"spec.cutover.catalog": {"dsnSecretRef": {"name": "db", "key": "dsn"},
                               "keyColumn": "k", "locationColumn": "loc"}},
     "spec.cutover.catalog.table", "Required value"),
    # unknown fields (strict field validation)
    ("unknown-field", OM, {"spec.copy.concurency": 16}, "spec.copy.concurency",
     "unknown field"),
    ("unknown-cleanup-field", MCL, {"spec.force": True}, "spec.force", "unknown field"),
    # every CEL rule
    ("cel-sse-kms-needs-key", OM, {"spec.target.encryption.mode": "SSE-KMS"},
     "spec.target.encryption.kmsKeyId", "SSE-KMS needs kmsKeyId"),
    ("cel-sse-c-needs-secret", OM, {"spec.target.encryption.mode": "SSE-C"},
     "spec.target.encryption.customerKeySecretRef", "SSE-C needs customerKeySecretRef"),
    ("cel-kms-key-only-with-kms", OM,
     {"spec.target.encryption": {"mode": "SSE-S3", "kmsKeyId": "alias/k"}},
     "spec.target.encryption.kmsKeyId", "kmsKeyId is only valid with mode SSE-KMS"),
    ("cel-kms-key-with-default-mode", OM, {"spec.target.encryption": {"kmsKeyId": "alias/k"}},
     "spec.target.encryption.kmsKeyId", "kmsKeyId is only valid with mode SSE-KMS"),
    ("cel-expedited-deep-archive", OM,
     {"spec.restore": {"tier": "Expedited", "storageClasses": ["GLACIER", "DEEP_ARCHIVE"]}},
     "spec.restore.tier", "Expedited retrieval is not available for DEEP_ARCHIVE"),
    ("cel-expedited-default-classes", OM, {"spec.restore": {"tier": "Expedited"}},
     "spec.restore.tier", "Expedited retrieval is not available for DEEP_ARCHIVE"),
    ("cel-approved-needs-manual", OM, {"spec.cutover": {"policy": "Automatic", "approved": True}},
     "spec.cutover.approved", "approved is only meaningful with policy Manual"),
    ("cel-min-size-above-max", OM, {"spec.selection": {"minSize": "2Mi", "maxSize": "1Ki"}},
     "spec.selection.minSize", "minSize must not exceed maxSize"),
    ("cel-min-size-int-above-max", OM, {"spec.selection": {"minSize": 2048, "maxSize": "1Ki"}},
     "spec.selection.minSize", "minSize must not exceed maxSize"),
    ("cel-modified-after-not-before", OM,
     {"spec.selection": {"modifiedAfter": "2025-02-01T00:00:00Z",
                         "modifiedBefore": "2025-01-01T00:00:00Z"}},
     "spec.selection.modifiedAfter", "modifiedAfter must be before modifiedBefore"),
    ("cel-modified-after-equal-before", OM,
     {"spec.selection": {"modifiedAfter": "2025-01-01T01:00:00+01:00",
                         "modifiedBefore": "2025-01-01T00:00:00Z"}},
     "spec.selection.modifiedAfter", "modifiedAfter must be before modifiedBefore"),
    ("cel-exists-with-values", OM,
     {"spec.selection.metadata": [{"key": "k", "operator": "Exists", "values": ["x"]}]},
     "spec.selection.metadata[0]", "Exists and DoesNotExist take no values"),
    ("cel-in-without-values", OM,
     {"spec.selection.metadata": [{"key": "k", "operator": "In"}]},
     "spec.selection.metadata[0]", "In and NotIn need at least one value"),
    ("cel-lt-non-integer", OM,
     {"spec.selection.metadata": [{"key": "storage-version", "operator": "Lt",
                                   "values": ["three"]}]},
     "spec.selection.metadata[0]", "Lt and Gt need exactly one integer value"),
    ("cel-gt-two-values", OM,
     {"spec.selection.metadata": [{"key": "v", "operator": "Gt", "values": ["1", "2"]}]},
     "spec.selection.metadata[0]", "Lt and Gt need exactly one integer value"),
    ("cel-lt-default-non-integer", OM,
     {"spec.selection.metadata": [{"key": "v", "operator": "Lt", "values": ["3"],
                                   "default": "none"}]},
     "spec.selection.metadata[0].default", "with Lt and Gt, default must be an integer"),
    ("cel-exists-with-default", OM,
     {"spec.selection.metadata": [{"key": "v", "operator": "DoesNotExist", "default": "0"}]},
     "spec.selection.metadata[0].default", "Exists and DoesNotExist ask whether it is there"),
    ("cel-manifest-two-sources", OM,
     {"spec.selection.manifest": {"path": "/keys.txt",
                                  "configMapRef": {"name": "keys", "key": "list"}}},
     "spec.selection.manifest", "set exactly one of configMapRef, object, path or sql"),
    ("cel-manifest-no-source", OM, {"spec.selection.manifest": {"format": "csv"}},
     "spec.selection.manifest", "set exactly one of configMapRef, object, path or sql"),
    ("cel-in-place-default-overwrite", OM, {"spec.target": {"bucket": "src-bucket"}},
     "spec.copy.overwrite", "needs copy.overwrite: always"),
    ("cel-in-place-if-different", OM,
     {"spec.target": {"bucket": "src-bucket"}, "spec.copy": {"overwrite": "ifDifferent"}},
     "spec.copy.overwrite", "needs copy.overwrite: always"),
    ("cel-in-place-without-marker", OM,
     {"spec.target": {"bucket": "src-bucket"},
      "spec.copy": {"overwrite": "always", "migrationMarker": False}},
     "spec.copy.migrationMarker", "copy.migrationMarker must stay true"),
    ("cel-one-bucket-target-above-source", OM,
     {"spec.source.prefix": "data/", "spec.target": {"bucket": "src-bucket"}},
     "spec.target.prefix", "write the copies under a prefix of their own"),
    ("cel-one-bucket-same-prefix-new-layout", OM,
     {"spec.target": {"bucket": "src-bucket", "keyTemplate": "{year}/{basename}"}},
     "spec.target.prefix", "write the copies under a prefix of their own"),
    ("target-required-when-copying", OM, {"spec.target": DELETE, "spec.copy": {"mode": "stream"}},
     "spec.target", "target is required"),
    ("cel-look-only-elsewhere", OM, {"spec.copy": {"mode": "none"}},
     "spec.target", "copy.mode none writes no object"),
    ("cel-metadata-set-and-removed", OM,
     {"spec.target.metadata": {"set": {"storage-version": "3"}, "remove": ["storage-version"]}},
     "spec.target.metadata.remove", "a key cannot be both set and removed"),
    ("cel-metadata-objmig-key", OM,
     {"spec.target.metadata": {"set": {"objmig-migration": "mine"}}},
     "spec.target.metadata", "keys starting with objmig- are objmig's own"),
    ("cel-backfill-without-columns", OM,
     {"spec.backfill": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "table": "files",
                        "keyColumn": "id", "columns": {}}},
     "spec.backfill.columns", "name at least one column to write"),
    ("cel-backfill-id-without-sql", OM,
     {"spec.backfill": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "table": "files",
                        "keyColumn": "id", "match": "id", "columns": {"hash": "hash"}}},
     "spec.backfill.match", "backfill.match id matches the id column of a SQL worklist"),
    ("cel-sql-worklist-with-format", OM,
     {"spec.selection.manifest": {"format": "csv",
                                  "sql": {"dsnSecretRef": {"name": "db", "key": "dsn"},
                                          "query": "SELECT key FROM files"}}},
     "spec.selection.manifest.format", "format describes a file"),
    ("cel-ca-bundle-two-sources", OM,
     {"spec.target.endpoint": "https://minio.example:9000",
      "spec.target.caBundle": {"configMapKeyRef": {"name": "ca", "key": "ca.crt"},
                               "secretKeyRef": {"name": "ca", "key": "ca.crt"}}},
     "spec.target.caBundle", "set exactly one of configMapKeyRef and secretKeyRef"),
    ("cel-ca-bundle-plain-http", OM,
     {"spec.target.endpoint": "http://minio.example:9000",
      "spec.target.caBundle": {"configMapKeyRef": {"name": "ca", "key": "ca.crt"}}},
     "spec.target.caBundle", "caBundle needs an https:// endpoint"),
    ("cel-inventory-from-a-config-map", OM,
     {"spec.selection.manifest": {"format": "s3-inventory",
                                  "configMapRef": {"name": "keys", "key": "list"}}},
     "spec.selection.manifest.format", "format s3-inventory reads an S3 Inventory manifest.json"),
    # names that end up in Jobs and pods (issue 24.1): refused here, not by the Job's 422
    ("name-too-long", OM, {"metadata.name": "m" * 64}, "metadata.name", "63"),
    ("cleanup-name-too-long", MCL, {"metadata.name": "c" * 64}, "metadata.name", "63"),
    ("name-not-a-dns-label", OM, {"metadata.name": "photos.v2"}, "metadata.name",
     "should match"),
    ("service-account-invalid", OM, {"spec.workers.serviceAccountName": "Not_Valid!"},
     "spec.workers.serviceAccountName", "should match"),
    ("image-with-space", OM, {"spec.workers.image": "objmig latest"}, "spec.workers.image",
     "should match"),
    ("node-selector-key", OM, {"spec.workers.nodeSelector": {"disk type": "ssd"}},
     "spec.workers.nodeSelector", "keys must match"),
    ("node-selector-value", OM, {"spec.workers.nodeSelector": {"disk": "s" * 64}},
     "spec.workers.nodeSelector.disk", "63"),
    ("resource-name", OM, {"spec.workers.resources.limits": {"big memory": "1Gi"}},
     "spec.workers.resources.limits", "keys must match"),
    ("toleration-seconds-negative", OM,
     {"spec.workers.tolerations": [{"key": "k", "effect": "NoExecute",
                                    "tolerationSeconds": -1}]},
     "spec.workers.tolerations[0].tolerationSeconds", "greater than or equal to 0"),
    ("secret-key-pattern", OM,
     {"spec.source.customerKeySecretRef": {"name": "ssec", "key": "the key"}},
     "spec.source.customerKeySecretRef.key", "should match"),
    ("secret-name-pattern", OM, {"spec.source.credentialsSecretRef": {"name": "a..b"}},
     "spec.source.credentialsSecretRef.name", "should match"),
    ("config-map-data-key", OM,
     {"spec.cutover.configMapRef": {"name": "app", "data": {"S3 BUCKET": "x"}}},
     "spec.cutover.configMapRef.data", "keys must match"),
    ("cleanup-migration-ref-subdomain", MCL, {"spec.migrationRef.name": "photos.v2"},
     "spec.migrationRef.name", "should match"),
    # bounds on every number (issue 23.4)
    ("selection-limit-too-big", OM, {"spec.selection.limit": 10**13}, "spec.selection.limit",
     "less than or equal to"),
    ("cleanup-limit-too-big", MCL, {"spec.limit": 10**13}, "spec.limit",
     "less than or equal to"),
    ("cel-part-size-zero", OM,
     {"spec.copy": {"preservePartBoundaries": False, "partSize": 0}}, "spec.copy.partSize",
     "must be between 5Mi and 5Gi: S3 refuses parts under 5 MiB"),
    ("cel-part-size-below-s3-minimum", OM, {"spec.copy.partSize": "1Ki"}, "spec.copy.partSize",
     "must be between 5Mi and 5Gi"),
    ("cel-part-size-above-s3-maximum", OM, {"spec.copy.partSize": "6Gi"}, "spec.copy.partSize",
     "must be between 5Mi and 5Gi"),
    ("cel-bandwidth-limit-zero", OM, {"spec.copy.bandwidthLimit": 0},
     "spec.copy.bandwidthLimit", "leave it out for no limit"),
    ("cel-object-timeout-zero", OM, {"spec.retry.objectTimeout": "0s"},
     "spec.retry.objectTimeout", "must be between 1s and 168h"),
    ("cel-backoff-initial-over-max", OM,
     {"spec.retry.backoff": {"initial": "10m", "max": "1m"}}, "spec.retry.backoff.initial",
     "initial must not exceed max"),
    ("cel-poll-interval-too-long", OM, {"spec.restore": {"pollInterval": "25h"}},
     "spec.restore.pollInterval", "must be between 100ms and 24h"),
    ("cel-grace-period-too-long", MCL, {"spec.gracePeriod": "9000h"}, "spec.gracePeriod",
     "must be between 0s and 8760h"),
    ("cel-size-filter-too-big", OM, {"spec.selection.maxSize": "2Pi"},
     "spec.selection.maxSize", "must be between 0 and 1Pi"),
    ("cel-toleration-exists-with-value", OM,
     {"spec.workers.tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
     "spec.workers.tolerations[0].value", "operator Exists takes no value"),
    ("cel-toleration-every-key-needs-exists", OM,
     {"spec.workers.tolerations": [{"value": "v"}]},
     "spec.workers.tolerations[0].operator", "an empty key (every taint) needs operator Exists"),
    ("cel-toleration-seconds-without-no-execute", OM,
     {"spec.workers.tolerations": [{"key": "k", "effect": "NoSchedule",
                                    "tolerationSeconds": 5}]},
     "spec.workers.tolerations[0].tolerationSeconds",
     "tolerationSeconds applies to effect NoExecute only"),
    ("cel-request-over-limit", OM,
     {"spec.workers.resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
     "spec.workers.resources.requests",
     "a request must not exceed the limit of the same resource"),
    # directories, several buckets, content-addressed layouts
    ("cel-source-bucket-and-directory", OM, {"spec.source.filesystem": {"path": "/data"}},
     "spec.source", "set exactly one of bucket, buckets or filesystem"),
    ("cel-source-bucket-and-buckets", OM, {"spec.source.buckets": {"exclude": ["logs"]}},
     "spec.source", "set exactly one of bucket, buckets or filesystem"),
    ("cel-target-bucket-and-directory", OM, {"spec.target.filesystem": {"path": "/backup"}},
     "spec.target", "set exactly one of bucket or filesystem"),
    ("directory-relative-path", OM, {"spec.target": {"filesystem": {"path": "backup"}}},
     "spec.target.filesystem.path", "should match"),
    ("cel-directory-dotdot", OM, {"spec.target": {"filesystem": {"path": "/backup/../etc"}}},
     "spec.target.filesystem.path", "path must not have '..' segments"),
    ("cel-directory-placeholder-in-a-name", OM,
     {"spec.source": {"buckets": {}}, "spec.target": {"filesystem": {"path": "/b/x-{bucket}"}}},
     "spec.target.filesystem.path", "the only placeholder a path takes is {bucket}"),
    ("cel-directory-encrypted", OM,
     {"spec.target": {"filesystem": {"path": "/backup"}, "encryption": {"mode": "SSE-S3"}}},
     "spec.target", "a directory has no storage class or server-side encryption"),
    ("cel-bucket-placeholder-needs-buckets", OM,
     {"spec.target.keyTemplate": "{bucket}/{relative}"},
     "spec.target.keyTemplate", "{bucket} names the source bucket: it needs source.buckets"),
    ("cel-buckets-kept-apart", OM, {"spec.source": {"buckets": {"include": ["a-*"]}}},
     "spec.target.keyTemplate", "needs {bucket} to keep them apart"),
    ("cel-content-never-rewritten", OM,
     {"spec.target.keyTemplate": "objects/{sha256:2}/{sha256}",
      "spec.copy": {"overwrite": "always"}},
     "spec.copy.overwrite", "a content-addressed layout ({sha256}) never rewrites"),
    ("cel-directory-not-server-side", OM,
     {"spec.target": {"filesystem": {"path": "/backup"}}, "spec.copy": {"mode": "serverSide"}},
     "spec.copy.mode", "a directory cannot take part in a server-side copy"),
    ("cel-directory-source-versions", OM,
     {"spec.source": {"filesystem": {"path": "/data"}},
      "spec.selection": {"allVersions": True}},
     "spec.source", "a directory source has no versions"),
    ("cel-buckets-and-worklist", OM,
     {"spec.source": {"buckets": {}}, "spec.target.keyTemplate": "{bucket}/{key}",
      "spec.selection.manifest": {"configMapRef": {"name": "keys", "key": "list"}}},
     "spec.selection.manifest", "source.buckets lists the buckets itself"),
    ("cleanup-bucket-pattern", MCL, {"spec.bucket": "Not_A_Bucket"}, "spec.bucket",
     "should match"),
    ("cel-stalled-after-too-short", OM, {"spec.health.stalledAfter": "10s"},
     "spec.health.stalledAfter", "must be between 1m and 168h"),
]
# fmt: on


@pytest.mark.parametrize(
    ("case_id", "kind", "changes", "path", "message"),
    [pytest.param(*case, id=case[0]) for case in REJECTED],
)
def test_malformed_object_is_rejected_naming_the_field(
    crds: ControlPlane,
    shared_ns: str,
    case_id: str,
    kind: str,
    changes: dict[str, Any],
    path: str,
    message: str,
) -> None:
    doc = _mutated(_base_migration() if kind == OM else _base_cleanup(), changes)
    proc = _create(crds, shared_ns, doc)
    error = proc.stderr
    assert proc.returncode != 0, f"the API server accepted {changes}: {proc.stdout}"
    assert "Error from server" in error or "is invalid" in error, error
    assert path in error, f"{path!r} not named in: {error}"
    assert message in error, f"{message!r} not in: {error}"
    # A CEL rule is evaluated, not crashed on (no "no such key", no runtime cost error).
    assert "evaluating rule" not in error, error
    assert "no such key" not in error, error

    # The CLI (pydantic, strict as the API server) rejects the same document at the same place
    # (or names the map key within it); a CEL rule's pydantic twin says the same words.
    problems = _pydantic_problems(doc)
    assert problems, f"pydantic accepted what the API server rejected: {changes}"
    paths = [p.split(": ", 1)[0] for p in problems]
    assert any(path.startswith(p) or p.startswith(f"{path}.") for p in paths), (path, problems)
    if case_id.startswith("cel-"):
        assert any(message in p for p in problems), (message, problems)


# Near misses: each CEL rule must not reject the valid neighbour of what it rejects.
# fmt: off
ACCEPTED: list[tuple[str, str, dict[str, Any]]] = [
    ("sse-kms-with-key", OM, {"spec.target.encryption": {"mode": "SSE-KMS", "kmsKeyId": "k"}}),
    ("sse-c-with-secret", OM,
     {"spec.target.encryption": {"mode": "SSE-C",
                                 "customerKeySecretRef": {"name": "ssec", "key": "key"}}}),
    ("expedited-glacier-only", OM,
     {"spec.restore": {"tier": "Expedited", "storageClasses": ["GLACIER"]}}),
    ("approved-manual", OM, {"spec.cutover": {"policy": "Manual", "approved": True}}),
    ("sizes-equal-mixed-forms", OM, {"spec.selection": {"minSize": 1024, "maxSize": "1Ki"}}),
    ("dates-ordered-offsets", OM,
     {"spec.selection": {"modifiedAfter": "2025-01-01T00:00:00+01:00",
                         "modifiedBefore": "2025-01-01T00:00:00.5Z"}}),
    ("metadata-rules", OM,
     {"spec.selection.metadata": [{"key": "v", "operator": "Lt", "values": ["-3"]},
                                  {"key": "w", "operator": "Exists"},
                                  {"key": "x", "operator": "In", "values": ["a", "b"]}]}),
    ("manifest-config-map", OM,
     {"spec.selection.manifest": {"configMapRef": {"name": "keys", "key": "list"}}}),
    ("manifest-inventory-object", OM,
     {"spec.selection.manifest": {"format": "s3-inventory",
                                  "object": {"bucket": "inv", "key": "x/manifest.json"}}}),
    ("worker-resources", OM,
     {"spec.workers.resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                                 "limits": {"cpu": 2, "memory": "1Gi"}}}),
    ("in-place-overwrite-always", OM,
     {"spec.target": {"bucket": "src-bucket", "encryption": {"mode": "SSE-S3"}},
      "spec.copy": {"overwrite": "always"}}),
    ("no-marker-lock-and-acl", OM,
     {"spec.copy": {"migrationMarker": False, "preserveObjectLock": False,
                    "preserveAcl": True}}),
    ("same-bucket-other-prefix", OM, {"spec.target": {"bucket": "src-bucket", "prefix": "v2/"}}),
    ("look-only-over-the-source", OM,
     {"spec.target": {"bucket": "src-bucket"}, "spec.copy": {"mode": "none",
                                                             "missingObjects": "Fail"}}),
    ("look-only-without-a-target", OM, {"spec.target": DELETE, "spec.copy": {"mode": "none"}}),
    ("missing-objects-fail-while-copying", OM,
     {"spec.copy": {"mode": "stream", "missingObjects": "Fail"}}),
    ("storage-version-stamp", OM,
     {"spec.target": {"bucket": "src-bucket", "encryption": {"mode": "SSE-S3"},
                      "metadata": {"set": {"storage-version": "3"}, "remove": ["legacy"]}},
      "spec.copy": {"overwrite": "always"},
      "spec.selection.metadata": [{"key": "storage-version", "operator": "Lt",
                                   "values": ["3"]}]}),
    ("backfill-by-worklist-id-with-a-hook", OM,
     {"spec.target": {"bucket": "src-bucket"}, "spec.copy": {"mode": "none"},
      "spec.selection.manifest": {"sql": {"dsnSecretRef": {"name": "db", "key": "dsn"},
                                          "query": "SELECT location_key AS key, id FROM files"}},
      "spec.backfill": {"dsnSecretRef": {"name": "db", "key": "dsn"}, "table": "public.files",
                        "keyColumn": "id", "match": "id",
                        "columns": {"hash": "hash", "lastModified": "last_modified"}},
      "spec.hooks": {"perObject": {"url": "https://hooks.example/objects",
                                   "bearerTokenSecretRef": {"name": "hook", "key": "token"}}}}),
    ("ca-bundle-from-a-secret", OM,
     {"spec.target.endpoint": "https://minio.example:9000",
      "spec.target.caBundle": {"secretKeyRef": {"name": "ca", "key": "ca.crt"}}}),
    ("directory-target", OM,
     {"spec.target": {"filesystem": {"path": "/backup", "claimName": "backup-pvc",
                                     "minFreeSpace": "5Gi"}}}),
    ("directory-source", OM, {"spec.source": {"filesystem": {"path": "/data"}}}),
    ("buckets-to-a-directory-per-bucket", OM,
     {"spec.source": {"buckets": {"exclude": ["logs-*"]}},
      "spec.target": {"filesystem": {"path": "/backup/{bucket}"}}}),
    ("buckets-with-a-bucket-placeholder", OM,
     {"spec.source": {"buckets": {}}, "spec.target.keyTemplate": "{bucket}/{relative}"}),
    ("content-addressed-with-groups", OM,
     {"spec.target.keyTemplate": "objects/{sha256:2}/{sha256}",
      "spec.groups": {"by": "{group}", "manifestKey": "packages/{group}.json"},
      "spec.health": {"degradedErrorRate": 0.1, "stalledAfter": "30m",
                      "minThroughput": "1Mi"}}),
    ("cleanup-of-one-bucket", MCL, {"spec.bucket": "photos-2019"}),
    ("cleanup-approved", MCL,
     {"spec.approval.digest": "sha256:" + "ab" * 32, "spec.what": "leftovers"}),
    ("name-of-63-characters", OM, {"metadata.name": "m" * 63}),
    ("cleanup-name-of-63-characters", MCL, {"metadata.name": "c" * 63}),
    ("service-account-subdomain", OM, {"spec.workers.serviceAccountName": "objmig-worker.v2"}),
    ("workers-placement", OM,
     {"spec.workers.nodeSelector": {"kubernetes.io/os": "linux", "disk": ""},
      "spec.workers.tolerations": [{"operator": "Exists"},
                                   {"key": "dedicated", "value": "objmig",
                                    "effect": "NoExecute", "tolerationSeconds": 60}]}),
    ("part-size-s3-minimum", OM, {"spec.copy": {"preservePartBoundaries": False,
                                                "partSize": 5 * 1024 * 1024}}),
    ("bounds-at-their-edges", OM,
     {"spec.copy.bandwidthLimit": "1Ki", "spec.retry.objectTimeout": "1s",
      "spec.retry.backoff": {"initial": "1m", "max": "1m"},
      "spec.restore": {"pollInterval": "100ms"}, "spec.selection.maxSize": "1Pi"}),
    ("cleanup-waits-a-year", MCL, {"spec.gracePeriod": "8760h", "spec.minAge": "0s"}),
]
# fmt: on


@pytest.mark.parametrize(
    ("kind", "changes"), [pytest.param(*case[1:], id=case[0]) for case in ACCEPTED]
)
def test_valid_neighbour_is_accepted(
    crds: ControlPlane, shared_ns: str, kind: str, changes: dict[str, Any]
) -> None:
    doc = _mutated(_base_migration() if kind == OM else _base_cleanup(), changes)
    proc = _create(crds, shared_ns, doc)
    assert proc.returncode == 0, proc.stderr
    assert _pydantic_problems(doc) == []


# Immutability: transition rules only run on update.
# fmt: off
UPDATES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("source-bucket", OM, {"spec.source.bucket": "other-bucket"}, "spec.source",
     "source is immutable"),
    ("source-prefix", OM, {"spec.source.prefix": "elsewhere/"}, "spec.source",
     "source is immutable"),
    ("target-bucket", OM, {"spec.target.bucket": "other-bucket"}, "spec.target",
     "target endpoint, bucket, directory path, prefix and keyTemplate"),
    ("target-key-template", OM, {"spec.target.keyTemplate": "{key}"}, "spec.target",
     "target endpoint, bucket, directory path, prefix and keyTemplate"),
    ("cleanup-migration-ref", MCL, {"spec.migrationRef.name": "another"}, "spec.migrationRef",
     "migrationRef is immutable"),
    ("cleanup-what", MCL, {"spec.what": "leftovers"}, "spec.what", "what is immutable"),
]
# fmt: on


@pytest.mark.parametrize(
    ("kind", "changes", "path", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in UPDATES],
)
def test_immutable_fields_cannot_change(
    crds: ControlPlane,
    k8s_namespace: str,
    kind: str,
    changes: dict[str, Any],
    path: str,
    message: str,
) -> None:
    base = _base_migration() if kind == OM else _base_cleanup()
    created = _create(crds, k8s_namespace, base, dry_run=False)
    assert created.returncode == 0, created.stderr
    changed = _mutated(base, changes)
    proc = crds.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=kubectl-create",
        "-n",
        k8s_namespace,
        "-f",
        "-",
        input=json.dumps(changed),
        check=False,
    )
    assert proc.returncode != 0, f"the API server accepted the update {changes}"
    assert path in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr
    # The model itself is fine with the new value: only the change is refused.
    assert _pydantic_problems(changed) == []


def test_mutable_fields_can_change(crds: ControlPlane, k8s_namespace: str) -> None:
    base = _base_migration()
    assert _create(crds, k8s_namespace, base, dry_run=False).returncode == 0
    changed = _mutated(
        base,
        {
            "spec.copy.concurrency": 64,
            "spec.target.storageClass": "STANDARD_IA",
            "spec.cutover": {"policy": "Manual", "approved": True},
            "spec.suspend": True,
        },
    )
    crds.kubectl(
        "replace",
        "-n",
        k8s_namespace,
        "--validate=strict",
        "-f",
        "-",
        input=json.dumps(_with_resource_version(crds, k8s_namespace, "objectmigration", changed)),
    )
    stored = crds.kubectl_json("get", "om", "proof", "-n", k8s_namespace)
    assert stored["spec"]["copy"]["concurrency"] == 64
    assert stored["metadata"]["generation"] == 2


def _with_resource_version(
    cluster: ControlPlane, namespace: str, kind: str, doc: dict[str, Any]
) -> dict[str, Any]:
    current = cluster.kubectl_json("get", kind, doc["metadata"]["name"], "-n", namespace)
    out = copy.deepcopy(doc)
    out["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    return out


# --------------------------------------------------------------------------------------------
# 4. kubectl explain shows the models' descriptions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "model"),
    [
        ("objectmigration.spec.copy", CopySpec),
        ("objectmigration.spec.cutover.catalog", CatalogAction),
        ("migrationcleanup.spec.approval", ApprovalSpec),
    ],
)
def test_kubectl_explain_shows_field_descriptions(
    crds: ControlPlane, resource: str, model: type[BaseModel]
) -> None:
    # The OpenAPI document is published shortly after the CRD is Established.
    out = wait_until(
        lambda: crds.kubectl("explain", resource).stdout,
        timeout=30,
        what=f"kubectl explain {resource}",
    )
    flat = _flat(out)
    assert "GROUP: objmig.dev" in flat, out
    assert "VERSION: v1alpha1" in flat, out
    for name, field in model.model_fields.items():
        alias = field.alias or name
        assert field.description, f"{model.__name__}.{name} has no description"
        assert re.search(rf"^\s+{alias}\s+<", out, re.MULTILINE), f"no {alias} in:\n{out}"
        assert _flat(field.description) in flat, f"description of {alias} not shown:\n{out}"


def test_kubectl_explain_of_a_single_field(crds: ControlPlane) -> None:
    out = wait_until(lambda: crds.kubectl("explain", "om.spec.copy.overwrite").stdout, timeout=30)
    assert _flat(CopySpec.model_fields["overwrite"].description or "") in _flat(out)
    assert "ENUM" in out, out
    assert "ifDifferent" in out, out


# --------------------------------------------------------------------------------------------
# 5. Printer columns read the status the operator writes
# --------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _table(text: str) -> list[dict[str, str]]:
    """``kubectl get`` output as rows keyed by header; columns are cut at the header offsets,
    so empty cells (no status yet) come back as ``""``."""
    header, *lines = text.rstrip("\n").splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [
        {name: line[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)}
        for line in lines
    ]


def test_printer_columns_show_phase_progress_and_cutover(
    crds: ControlPlane, k8s_namespace: str
) -> None:
    ns = k8s_namespace
    assert _create(crds, ns, _base_migration(), dry_run=False).returncode == 0
    rows = _table(crds.kubectl("get", "om", "-n", ns).stdout)
    assert list(rows[0]) == [
        "NAME", "PHASE", "PROGRESS", "OBJECTS", "ETA", "CUTOVER", "HEALTH", "AGE",
    ]  # fmt: skip
    assert rows[0]["NAME"] == "proof"
    assert rows[0]["PHASE"] == rows[0]["CUTOVER"] == ""  # no status yet

    status: dict[str, Any] = {
        "observedGeneration": 1,
        "phase": "Copying",
        "progress": {
            "percent": 42,
            "objectsDone": "503/1200",
            "objects": {"total": 1200, "succeeded": 500, "failed": 3, "pending": 697},
            "bytes": {"total": 10_000_000, "succeeded": 4_200_000},
            "eta": "12m",
        },
        "health": {"summary": "Degraded,Stalled"},
        "conditions": [
            {
                "type": "Copied",
                "status": "False",
                "reason": "InProgress",
                "message": "500 of 1200 objects copied",
                "lastTransitionTime": _now(),
                "observedGeneration": 1,
            },
            {
                "type": "CutOver",
                "status": "False",
                "reason": "GatesNotMet",
                "message": "copying",
                "lastTransitionTime": _now(),
            },
        ],
    }
    ObjectMigrationStatus.model_validate(status)  # what we patch is what the operator may write
    crds.kubectl(
        "patch",
        "om",
        "proof",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    rows = _table(crds.kubectl("get", "om", "-n", ns).stdout)
    assert rows[0]["PHASE"] == "Copying"
    assert rows[0]["PROGRESS"] == "42"
    assert rows[0]["OBJECTS"] == "503/1200"
    assert rows[0]["ETA"] == "12m"
    assert rows[0]["CUTOVER"] == "False"
    assert rows[0]["HEALTH"] == "Degraded,Stalled"
    wide = _table(crds.kubectl("get", "om", "-n", ns, "-o", "wide").stdout)
    assert wide[0]["FAILED"] == "3"
    # The category lists it too.
    assert "objectmigration.objmig.dev/proof" in crds.kubectl("get", "objmig", "-n", ns).stdout

    # The status the server stored validates with the model, and `kubectl wait` works.
    stored = crds.kubectl_json("get", "om", "proof", "-n", ns)
    assert parse_resource(stored).status is not None
    status["phase"] = "CutOver"
    status["progress"]["percent"] = 100
    status["conditions"][1] = {
        "type": "CutOver",
        "status": "True",
        "reason": "Switched",
        "message": "ConfigMap patched",
        "lastTransitionTime": _now(),
    }
    ObjectMigrationStatus.model_validate(status)
    crds.kubectl(
        "patch",
        "om",
        "proof",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "CutOver",
                    "progress": status["progress"],
                    "conditions": status["conditions"],
                }
            }
        ),
    )
    crds.kubectl(
        "wait", "-n", ns, "--for=condition=CutOver", "om/proof", "--timeout=20s", timeout=30
    )
    rows = _table(crds.kubectl("get", "om", "-n", ns).stdout)
    assert (rows[0]["PHASE"], rows[0]["PROGRESS"], rows[0]["CUTOVER"]) == ("CutOver", "100", "True")

    # A status outside the schema is refused by the status subresource, too.
    bad = crds.kubectl(
        "patch",
        "om",
        "proof",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Exploded"}}),
        check=False,
    )
    assert bad.returncode != 0
    assert "status.phase" in bad.stderr, bad.stderr
    # ... and a status patch never changes the spec's generation.
    assert crds.kubectl_json("get", "om", "proof", "-n", ns)["metadata"]["generation"] == 1


def test_cleanup_printer_columns(crds: ControlPlane, k8s_namespace: str) -> None:
    ns = k8s_namespace
    assert _create(crds, ns, _base_cleanup(), dry_run=False).returncode == 0
    status = {
        "phase": "Blocked",
        "conditions": [
            {
                "type": "GatesPassed",
                "status": "False",
                "reason": "GracePeriodNotElapsed",
                "message": "71h left",
                "lastTransitionTime": _now(),
            }
        ],
        "unmetGates": [
            {"gate": "GracePeriod", "reason": "GracePeriodNotElapsed", "message": "71h left"}
        ],
        "counts": {"planned": 10, "deleted": 0},
    }
    MigrationCleanupStatus.model_validate(status)
    crds.kubectl(
        "patch",
        "mcl",
        "proof-cleanup",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    rows = _table(crds.kubectl("get", "mcl", "-n", ns).stdout)
    assert list(rows[0]) == ["NAME", "MIGRATION", "WHAT", "PHASE", "GATESPASSED", "DELETED", "AGE"]
    assert (rows[0]["MIGRATION"], rows[0]["WHAT"], rows[0]["PHASE"]) == (
        "proof",
        "source",
        "Blocked",
    )
    assert (rows[0]["GATESPASSED"], rows[0]["DELETED"]) == ("False", "0")
    assert parse_resource(crds.kubectl_json("get", "mcl", "proof-cleanup", "-n", ns)).status
