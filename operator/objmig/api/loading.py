"""Read resource files as ``kubectl apply -f`` would, and explain what is wrong by field path.

A file holds YAML documents: objmig resources, and the Secrets and ConfigMaps they refer to
(the guide keeps them in one file). It is read as strictly as the API server reads it: UTF-8
text, no duplicate keys, and every objmig resource checked against its schema as JSON (so
``"16"`` is not a number, ``true`` is not ``1``, and ``dry_run`` is not ``dryRun``). Every
problem is a :class:`SpecError` naming the file and the field; none echoes the file's text,
which may hold a secret.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from objmig.api.migration import API_VERSION, ObjectMigration
from objmig.api.migration_cleanup import MigrationCleanup

Resource = ObjectMigration | MigrationCleanup
_KINDS: dict[str, type[ObjectMigration] | type[MigrationCleanup]] = {
    "ObjectMigration": ObjectMigration,
    "MigrationCleanup": MigrationCleanup,
}
#: Kinds a file may carry besides objmig's own: what the resources refer to.
_REFERENCED_KINDS = ("Secret", "ConfigMap")
#: No resource file is anywhere near this; etcd refuses objects past ~1.5 MiB.
MAX_FILE_BYTES = 4 * 1024 * 1024


class SpecError(ValueError):
    """A file or resource that cannot be used; ``problems`` are ``"field.path: message"``."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source} is not valid:\n" + "\n".join(f"  {p}" for p in problems))


def field_path(location: tuple[int | str, ...]) -> str:
    """``("spec", "copy", "concurrency")`` -> ``spec.copy.concurrency``; list indexes in []."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(root)"


def explain(error: ValidationError) -> list[str]:
    """One line per problem, naming the field path the way ``kubectl explain`` does."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        # Tagged-union and function-validator frames add noise to the path; drop them.
        location = tuple(
            part
            for part in problem["loc"]
            if not (isinstance(part, str) and ("[" in part or part.startswith("function-")))
        )
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{field_path(location)}: {message}")
    return lines


def parse_resource(document: Any, source: str = "<input>") -> Resource:
    """Validate one decoded YAML/JSON document as an objmig resource, as the API server would.

    The document is checked as the JSON the API server receives: strict types, wire names
    only.
    """
    if not isinstance(document, dict):
        raise SpecError(source, ["(root): expected a mapping with apiVersion, kind and spec"])
    kind = document.get("kind")
    model = _KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise SpecError(source, [f"kind: expected one of {sorted(_KINDS)}, got {kind!r}"])
    if document.get("apiVersion") != API_VERSION:
        raise SpecError(
            source, [f"apiVersion: expected {API_VERSION}, got {document.get('apiVersion')!r}"]
        )
    try:
        return model.model_validate_json(
            json.dumps(document, default=_json_scalar), strict=True, by_alias=True, by_name=False
        )
    except ValidationError as error:
        raise SpecError(source, explain(error)) from None


@dataclass
class Bundle:
    """What one or more files hold: objmig resources, and the Secrets and ConfigMaps."""

    resources: list[Resource] = field(default_factory=list)
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)

    def one(self, kind: type[ObjectMigration] | type[MigrationCleanup], source: str) -> Any:
        """The single resource of ``kind``."""
        matches = [r for r in self.resources if isinstance(r, kind)]
        if len(matches) != 1:
            raise SpecError(
                source, [f"(root): expected exactly one {kind.__name__}, found {len(matches)}"]
            )
        return matches[0]


def load_bundle(path: Path, *, objmig_kinds: bool = True) -> Bundle:
    """Every document of ``path``: objmig resources (when ``objmig_kinds``), Secrets, ConfigMaps.

    A file of only Secrets or ConfigMaps (``--secrets``, ``--config-maps``) is read with
    ``objmig_kinds=False``. Raises :class:`SpecError` for anything else in the file.
    """
    bundle = Bundle()
    allowed = (*_KINDS, *_REFERENCED_KINDS) if objmig_kinds else _REFERENCED_KINDS
    documents = read_documents(path)
    for index, document in enumerate(documents, start=1):
        where = f"{path} (document {index})" if len(documents) > 1 else str(path)
        kind = document.get("kind")
        if kind not in allowed:
            raise SpecError(where, [f"kind: expected one of {sorted(allowed)}, got {kind!r}"])
        if kind == "Secret":
            name, values = _secret(document, where)
            bundle.secrets.update({(name, key): value for key, value in values.items()})
        elif kind == "ConfigMap":
            name, data = _config_map(document, where)
            bundle.config_maps[name] = data
        else:
            bundle.resources.append(parse_resource(document, where))
    return bundle


def load_resources(path: Path) -> list[Resource]:
    """Every objmig resource in a (multi-document) YAML file; at least one must be there."""
    resources = load_bundle(path).resources
    if not resources:
        raise SpecError(str(path), ["(root): no ObjectMigration or MigrationCleanup in the file"])
    return resources


def read_documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of a file, each a mapping; empty documents are left out.

    Never quotes the file: a Secret's value may stand on the line a YAML error points at.
    """
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(
                source,
                [f"(root): {size} bytes, more than a resource file may be ({MAX_FILE_BYTES})"],
            )
        raw = path.read_bytes()
    except OSError as error:
        raise SpecError(source, [f"(root): cannot read the file: {error.strerror}"]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(
            source,
            [f"(root): not UTF-8 text (byte {raw[error.start]:#04x} at offset {error.start})"],
        ) from None
    try:
        documents = [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as error:
        raise SpecError(source, [f"(root): not valid YAML: {_describe(error)}"]) from None
    for index, document in enumerate(documents, start=1):
        if not isinstance(document, dict):
            where = f"{source} (document {index})" if len(documents) > 1 else source
            found = type(document).__name__
            raise SpecError(
                where, [f"(root): expected a mapping with apiVersion and kind, got {found}"]
            )
    return documents


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the API server does)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Hashable] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, Hashable) and key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                problem=f"duplicate key {key!r} at line {line}",
                problem_mark=key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _describe(error: yaml.YAMLError) -> str:
    """The parser's problem and where it is, without the excerpt of the file it would print."""
    if isinstance(error, yaml.MarkedYAMLError):
        parts = [p for p in (error.context, error.problem) if p]
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return "; ".join(parts) + where
    return type(error).__name__


def _json_scalar(value: Any) -> str:
    # YAML reads unquoted timestamps as dates; the API server gets them as RFC 3339 strings.
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _name(document: dict[str, Any], where: str) -> str:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        raise SpecError(where, ["metadata.name: required"])
    return name


def _secret(document: dict[str, Any], where: str) -> tuple[str, dict[str, str]]:
    """A Secret's name and its values; errors name keys, never values."""
    name = _name(document, where)
    values: dict[str, str] = {}
    for section in ("data", "stringData"):
        entries = document.get(section) or {}
        if not isinstance(entries, dict):
            raise SpecError(where, [f"{section}: expected a mapping of keys to values"])
        for key, value in entries.items():
            if not isinstance(value, str):
                raise SpecError(where, [f"{section}.{key}: expected a string"])
            if section == "data":
                try:
                    value = base64.b64decode(value, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    raise SpecError(where, [f"data.{key}: not base64 of UTF-8 text"]) from None
            values[str(key)] = value
    return name, values


def _config_map(document: dict[str, Any], where: str) -> tuple[str, dict[str, str]]:
    name = _name(document, where)
    data = document.get("data") or {}
    if not isinstance(data, dict):
        raise SpecError(where, ["data: expected a mapping of keys to values"])
    return name, {str(k): str(v) for k, v in data.items()}
