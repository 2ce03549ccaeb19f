"""The CRDs are generated from the models, stay in sync, and accept what the models accept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from objmig.api.crd import render_crds, write_crds
from objmig.api.loading import load_resources

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _openapi_schema(kind: str) -> dict[str, Any]:
    for text in render_crds().values():
        crd = yaml.safe_load(text)
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind}")


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{index}]"))
    return found


def test_committed_crds_match_the_models(tmp_path: Path) -> None:
    write_crds(tmp_path)
    for generated in sorted(tmp_path.iterdir()):
        committed = ROOT / "crds" / generated.name
        assert committed.exists(), f"crds/{generated.name} is missing; run `make crds`"
        assert committed.read_text() == generated.read_text(), (
            f"crds/{generated.name} drifted from objmig.api; run `make crds` and commit"
        )
    assert {p.name for p in (ROOT / "crds").glob("*.yaml")} == {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("kind", ["ObjectMigration", "MigrationCleanup"])
def test_schema_is_structural(kind: str) -> None:
    for path, node in _walk(_openapi_schema(kind)):
        assert "$ref" not in node, path
        assert "allOf" not in node, path
        assert "oneOf" not in node, path
        if path.endswith("/properties") or path.endswith("/anyOf") or "/anyOf[" in path:
            continue
        if "properties" in node:
            assert node.get("type") == "object", path
        if "anyOf" in node:
            # The only union a structural schema allows here is int-or-string.
            assert node.get("x-kubernetes-int-or-string") is True, path
        elif not path.endswith("/metadata") and "x-kubernetes-validations" not in path:
            assert "type" in node, f"{path} has no type"


@pytest.mark.parametrize("kind", ["ObjectMigration", "MigrationCleanup"])
def test_every_spec_field_has_a_description(kind: str) -> None:
    spec = _openapi_schema(kind)["properties"]["spec"]
    for path, node in _walk(spec):
        if path.endswith("/properties") or "x-kubernetes-validations" in path:
            continue
        if "/properties/" in path and not path.endswith("/items"):
            parent_key = path.rsplit("/", 2)[-2]
            if parent_key == "properties":
                assert node.get("description"), f"spec{path} has no description"


def test_crds_carry_the_cross_field_rules() -> None:
    rules = {
        rule["rule"]
        for text in render_crds().values()
        for _, node in _walk(yaml.safe_load(text))
        for rule in node.get("x-kubernetes-validations", [])
    }
    for rule in (
        "self.mode != 'SSE-KMS' || has(self.kmsKeyId)",
        "self.mode != 'SSE-C' || has(self.customerKeySecretRef)",
        "self.tier != 'Expedited' || !('DEEP_ARCHIVE' in self.storageClasses)",
        "!has(self.approved) || !self.approved || self.policy == 'Manual'",
        "quantity(string(self.minSize)).compareTo(quantity(string(self.maxSize))) <= 0",
        "timestamp(self.modifiedAfter) < timestamp(self.modifiedBefore)",
    ):
        assert any(rule in declared for declared in rules), rule


def test_crds_have_short_names_status_and_printer_columns() -> None:
    crds = {
        yaml.safe_load(t)["spec"]["names"]["kind"]: yaml.safe_load(t)
        for t in render_crds().values()
    }
    migration = crds["ObjectMigration"]["spec"]
    cleanup = crds["MigrationCleanup"]["spec"]
    assert migration["names"]["shortNames"] == ["om"]
    assert cleanup["names"]["shortNames"] == ["mcl"]
    for spec in (migration, cleanup):
        version = spec["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert "objmig" in spec["names"]["categories"]
    columns = {c["name"] for c in migration["versions"][0]["additionalPrinterColumns"]}
    assert {"Phase", "Progress", "CutOver", "Age"} <= columns
    columns = {c["name"] for c in cleanup["versions"][0]["additionalPrinterColumns"]}
    assert {"Phase", "GatesPassed", "Age"} <= columns


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip_through_model_and_crd_schema(example: Path) -> None:
    resources = load_resources(example)
    assert resources, f"{example.name} holds no objmig resource"
    for resource, document in zip(resources, yaml.safe_load_all(example.read_text()), strict=True):
        schema = _openapi_schema(resource.kind)
        # The example as written, and the model's rendering of it, both satisfy the CRD schema.
        jsonschema.validate(document, schema)
        wire = resource.to_wire()
        jsonschema.validate(wire, schema)
        # And the rendering validates back into the same model.
        assert type(resource).model_validate(wire) == resource
