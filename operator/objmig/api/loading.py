"""Read resources from YAML and explain validation errors by field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from objmig.api.cleanup import MigrationCleanup
from objmig.api.migration import API_VERSION, ObjectMigration

Resource = ObjectMigration | MigrationCleanup
_KINDS: dict[str, type[ObjectMigration] | type[MigrationCleanup]] = {
    "ObjectMigration": ObjectMigration,
    "MigrationCleanup": MigrationCleanup,
}


class SpecError(ValueError):
    """A resource that does not validate; ``problems`` are ``"field.path: message"`` lines."""

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
    for problem in error.errors(include_url=False):
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
    """Validate one decoded YAML/JSON document as an objmig resource."""
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
        return model.model_validate(document)
    except ValidationError as error:
        raise SpecError(source, explain(error)) from None


def load_resources(path: Path) -> list[Resource]:
    """Every objmig resource in a (multi-document) YAML file."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as error:
        raise SpecError(str(path), [f"(root): not valid YAML: {error}"]) from None
    return [parse_resource(d, f"{path} (document {i + 1})") for i, d in enumerate(documents)]


def load_one(path: Path, kind: type[ObjectMigration] | type[MigrationCleanup]) -> Any:
    """The single resource of ``kind`` in ``path``."""
    matches = [r for r in load_resources(path) if isinstance(r, kind)]
    if len(matches) != 1:
        raise SpecError(
            str(path), [f"(root): expected exactly one {kind.__name__}, found {len(matches)}"]
        )
    return matches[0]
