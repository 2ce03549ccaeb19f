"""Whatever file a user hands ``objmig validate``, ``run -f`` or ``cleanup -f``: one line naming
the file and the problem (and the field, where there is one), exit code 1, never a
traceback, and never a Secret's value.

The commands are called in-process through the CLI's entry point, as the console script
calls it; a bad file is refused while it is read, before any ledger or store is touched.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objmig.api.loading import SpecError, parse_resource
from objmig.cli.main import main

SECRET_VALUE = "do-not-print-me-7c1e"

MIGRATION: dict[str, Any] = {
    "apiVersion": "objmig.dev/v1alpha1",
    "kind": "ObjectMigration",
    "metadata": {"name": "photos", "namespace": "default"},
    "spec": {
        "source": {"bucket": "photos-src", "credentialsSecretRef": {"name": "s3"}},
        "target": {"bucket": "photos-dst", "endpoint": "http://127.0.0.1:9"},
        "copy": {"concurrency": 16, "partConcurrency": 4, "mode": "auto"},
        "verify": {"mode": "etag"},
        "dryRun": False,
        "selection": {"include": ["a/**"], "maxSize": "1Gi"},
    },
}
CLEANUP: dict[str, Any] = {
    "apiVersion": "objmig.dev/v1alpha1",
    "kind": "MigrationCleanup",
    "metadata": {"name": "photos-cleanup", "namespace": "default"},
    "spec": {"migrationRef": {"name": "photos"}, "what": "source", "gracePeriod": "1h"},
}
COMMANDS = {
    "validate": ["validate", "-f"],
    "run": ["run", "--database-url", "postgresql://127.0.0.1:9/none", "-f"],
    "cleanup": ["cleanup", "--database-url", "postgresql://127.0.0.1:9/none", "-f"],
}


def invoke(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> tuple[int, str]:
    """Run ``objmig ARGV`` through the console script's entry point: (exit code, output)."""
    monkeypatch.setattr(sys, "argv", ["objmig", *argv])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_refused(code: int, output: str, path: Path) -> None:
    assert code == 1, output
    assert "Traceback" not in output, output
    assert str(path) in output, output
    assert SECRET_VALUE not in output, output


# -- files that are not YAML resources at all -----------------------------------------------

BAD_FILES: dict[str, bytes] = {
    "binary": bytes(range(256)) * 4,
    "latin-1": "spec: café".encode("latin-1"),
    "empty": b"",
    "comment-only": b"# nothing here\n---\n# nor here\n",
    "a list": b"- apiVersion: objmig.dev/v1alpha1\n  kind: ObjectMigration\n",
    "a scalar": b"42\n",
    "tabs": b"kind:\tObjectMigration\n\tspec: {}\n",
    "unclosed": b"kind: ObjectMigration\nspec: {source: [\n",
    "duplicate keys": b"apiVersion: objmig.dev/v1alpha1\nkind: ObjectMigration\nkind: Secret\n",
    "unknown kind": b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
    "too large": b"# " + b"x" * (5 * 1024 * 1024) + b"\n",
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", BAD_FILES)
def test_a_file_that_is_not_a_resource_is_one_line_and_exit_1(
    command: str,
    name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(BAD_FILES[name])

    code, output = invoke(capsys, monkeypatch, [*COMMANDS[command], str(path)])

    assert_refused(code, output, path)


def test_duplicate_keys_name_the_key_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(MIGRATION) + "dryRun: true\ndryRun: false\n")

    code, output = invoke(capsys, monkeypatch, ["validate", "-f", str(path)])

    assert_refused(code, output, path)
    assert "duplicate key 'dryRun'" in output


# -- a Secret in a broken file is never echoed ------------------------------------------------

BROKEN_SECRETS = [
    # The guide's layout: a Secret and an ObjectMigration in one file, the Secret broken.
    f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s3}}\nstringData:\n"
    f"  secretAccessKey: {SECRET_VALUE}: oops\n---\n" + yaml.safe_dump(MIGRATION),
    f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s3}}\nstringData:\n"
    f'  secretAccessKey: "{SECRET_VALUE}\n',
    f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s3}}\nstringData:\n"
    f"\tsecretAccessKey: {SECRET_VALUE}\n",
    f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s3}}\ndata:\n"
    f"  secretAccessKey: {SECRET_VALUE}\n"
    "---\n" + yaml.safe_dump(MIGRATION),
    f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s3}}\nstringData:\n"
    f"  secretAccessKey: [{SECRET_VALUE}]\n---\n" + yaml.safe_dump(MIGRATION),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("text", BROKEN_SECRETS, ids=range(len(BROKEN_SECRETS)))
def test_a_broken_secret_is_reported_without_its_value(
    command: str,
    text: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "with-secret.yaml"
    path.write_text(text)

    code, output = invoke(capsys, monkeypatch, [*COMMANDS[command], str(path)])

    assert_refused(code, output, path)


@pytest.mark.parametrize("text", BROKEN_SECRETS, ids=range(len(BROKEN_SECRETS)))
def test_a_broken_secrets_file_is_reported_without_its_value(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    migration = tmp_path / "migration.yaml"
    migration.write_text(yaml.safe_dump(MIGRATION))
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(text.split("---")[0])
    argv = [*COMMANDS["run"], str(migration), "--secrets", str(secrets)]

    code, output = invoke(capsys, monkeypatch, argv)

    assert_refused(code, output, secrets)


# -- as strict as the API server ------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"copy": {"concurrency": "16"}}, "spec.copy.concurrency"),
        ({"copy": {"concurrency": True}}, "spec.copy.concurrency"),
        ({"dryRun": "yes"}, "spec.dryRun"),
        ({"dry_run": True}, "spec.dry_run"),
        ({"copy": {"part_concurrency": 2}}, "spec.copy.part_concurrency"),
    ],
)
def test_the_cli_refuses_what_the_api_server_refuses(change: dict[str, Any], field: str) -> None:
    document = copy.deepcopy(MIGRATION)
    for key, value in change.items():
        if isinstance(value, dict):
            document["spec"][key] = {**document["spec"].get(key, {}), **value}
        else:
            document["spec"][key] = value

    with pytest.raises(SpecError) as refused:
        parse_resource(document)

    assert any(problem.startswith(field) for problem in refused.value.problems), refused.value


def test_a_run_file_may_carry_the_secrets_and_config_maps_it_refers_to(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3"},
        "stringData": {"accessKeyId": "a", "secretAccessKey": SECRET_VALUE},
    }
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump_all([secret, config_map, MIGRATION]))

    code, output = invoke(capsys, monkeypatch, ["validate", "-f", str(path)])

    assert code == 0, output
    assert "ObjectMigration/photos is valid" in output


# -- generated: hundreds of damaged resources -----------------------------------------------

_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def damaged(draw: st.DrawFn) -> dict[str, Any]:
    """A valid resource with one to three things broken: a value replaced, a key dropped,
    an unknown key added."""
    document = copy.deepcopy(draw(st.sampled_from([MIGRATION, CLEANUP])))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        *parents, last = path
        holder = document
        for part in parents:
            holder = holder[part]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            holder[last] = draw(_JSON)
        elif action == "drop" and isinstance(holder, dict):
            del holder[last]
        elif isinstance(holder, dict):
            holder[draw(st.text(min_size=1, max_size=8))] = draw(_JSON)
    return document


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=damaged(), command=st.sampled_from(sorted(COMMANDS)))
def test_a_damaged_resource_is_refused_by_field_or_accepted_never_a_traceback(
    document: dict[str, Any],
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        parse_resource(document)
    except SpecError as error:
        problems = error.problems
    else:
        return  # the damage left a valid resource: nothing to refuse
    path = tmp_path / "damaged.yaml"
    path.write_text(yaml.safe_dump(document))

    code, output = invoke(capsys, monkeypatch, [*COMMANDS[command], str(path)])

    if command != "validate" and any(p.startswith("kind:") for p in problems):
        # run -f wants an ObjectMigration, cleanup -f a MigrationCleanup: the other kind
        # (or none) is one line naming the file too.
        assert_refused(code, output, path)
        return
    assert_refused(code, output, path)
    fields = [p.split(":")[0] for p in problems]
    assert any(f in output for f in fields), (fields, output)
