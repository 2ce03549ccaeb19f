"""Every YAML block a user can copy from the docs means what the docs say it means.

A block holding whole resources is read the way `objmig run -f` reads a file (strict, with
the Secrets and ConfigMaps beside the resources). A block that is a piece of a spec (the
guide shows a section at a time) is put into the guide's first ObjectMigration, as a user
would paste it, and that whole resource must still be valid. Other blocks (Argo CD's
ConfigMap, Prometheus rules) must name things that exist.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from objmig.api.loading import load_bundle, parse_resource
from objmig.api.migration import ObjectMigration
from objmig.controller import metrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = _blocks()
WHOLE = [
    (where, text)
    for where, text in BLOCKS
    if re.search(r"^kind: (ObjectMigration|MigrationCleanup)$", text, re.MULTILINE)
]
SPEC_PIECES = [(where, text) for where, text in BLOCKS if text.startswith("  ")]


def _merged(base: dict[str, Any], piece: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in piece.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _guide_migration() -> dict[str, Any]:
    guide = next(text for where, text in WHOLE if where.startswith("docs/guide.md"))
    return next(d for d in yaml.safe_load_all(guide) if d["kind"] == "ObjectMigration")


def test_the_docs_have_blocks_of_each_kind() -> None:
    assert WHOLE, BLOCKS
    assert len(SPEC_PIECES) >= 5, SPEC_PIECES


@pytest.mark.parametrize(("where", "text"), WHOLE, ids=[w for w, _ in WHOLE])
def test_a_block_of_whole_resources_loads_as_objmig_run_reads_it(
    where: str, text: str, tmp_path: Path
) -> None:
    path = tmp_path / "block.yaml"
    path.write_text(text)
    bundle = load_bundle(path)
    assert bundle.resources, where
    # A Secret the block defines is one its resources name (the rest the user supplies).
    referenced = set().union(*(_secret_names(r.to_wire()) for r in bundle.resources))
    assert {name for name, _ in bundle.secrets} <= referenced, where


def _secret_names(node: Any) -> set[str]:
    if isinstance(node, dict):
        names = {ref["name"] for key, ref in node.items() if key.endswith("SecretRef")}
        return names.union(*(_secret_names(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_secret_names(value) for value in node))
    return set()


@pytest.mark.parametrize(("where", "text"), SPEC_PIECES, ids=[w for w, _ in SPEC_PIECES])
def test_a_piece_of_a_spec_pasted_into_the_guides_migration_is_valid(where: str, text: str) -> None:
    piece = yaml.safe_load(text)
    document = _guide_migration()
    spec = _merged(document["spec"], piece)
    if spec.get("copy", {}).get("mode") == "none" and "target" not in piece:
        # A look-only migration leaves the target out: it is the source (the guide says so).
        del spec["target"]
    resource = parse_resource({**document, "spec": spec}, where)
    assert isinstance(resource, ObjectMigration)
    wire = resource.to_wire()["spec"]
    for key, value in piece.items():
        assert key in wire, (where, key)
        if isinstance(value, dict):
            assert set(value) <= set(wire[key]), (where, key, value, wire[key])


def test_the_alert_rules_use_metrics_the_operator_exports() -> None:
    (rules_text,) = [text for where, text in BLOCKS if "alert:" in text]
    exported = {
        family.name
        for collector in vars(metrics).values()
        if isinstance(collector, MetricWrapperBase)
        for family in collector.describe()
    }
    used = set(re.findall(r"\b(objmig_[a-z_]+)\b", rules_text))
    assert used, rules_text
    assert used <= exported, used - exported
    for rule in yaml.safe_load(rules_text)["groups"][0]["rules"]:
        labels = set(re.findall(r"\$labels\.(\w+)", rule["annotations"]["summary"]))
        assert labels <= set(metrics.LABELS), (rule["alert"], labels)


def test_the_argocd_block_names_health_scripts_that_exist() -> None:
    (argocd,) = [text for where, text in BLOCKS if "argocd-cm" in text]
    scripts = re.findall(r"contents of (docs/argocd-health/\S+\.lua)", argocd)
    assert scripts, argocd
    for script in scripts:
        assert (ROOT / script).is_file(), script
