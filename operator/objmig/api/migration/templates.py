"""Key templates: the placeholders a target key (and a group, and a manifest key) is made of.

`{key}`, `{relative}`, `{dirname}`, `{basename}`, `{year}`/`{month}`/`{day}`, `{etag}`,
`{bucket}` and `{group}` describe the source object and are known when it is listed;
`{sha256}` is its content, known once it has been read (a content-addressed layout), and
takes an optional length: `{sha256:2}` is its first two hex digits, for a prefix split such
as `objects/{sha256:2}/{sha256}`. The engine renders them (`objmig.engine.keys`).
"""

from __future__ import annotations

from collections.abc import Iterable
from string import Formatter

from objmig.api.migration.common import CONTENT_TEMPLATE_FIELDS


def placeholders(template: str) -> list[tuple[str, str]]:
    """(name, length spec) of every placeholder in `template`, in order."""
    try:
        parsed = [
            (name, spec or "", conversion)
            for _, name, spec, conversion in Formatter().parse(template)
            if name is not None
        ]
    except ValueError as error:
        raise ValueError(f"template {template!r} is malformed: {error}") from None
    found = []
    for name, spec, conversion in parsed:
        if conversion:
            raise ValueError(f"template {template!r}: placeholders take no !{conversion}")
        found.append((name, spec))
    return found


def check_template(template: str, allowed: Iterable[str], what: str) -> str:
    """`template` if every placeholder is `allowed` and well-formed, else ValueError."""
    known = frozenset(allowed)
    for name, spec in placeholders(template):
        if not name or name not in known:
            raise ValueError(f"{what} uses unknown placeholder {{{name}}}; known: {sorted(known)}")
        if spec and (name not in CONTENT_TEMPLATE_FIELDS or not _length(spec)):
            raise ValueError(
                f"{what}: {{{name}:{spec}}} is not a placeholder; only {{sha256:N}} takes a "
                "length (1-64 hex digits)"
            )
    return template


def _length(spec: str) -> bool:
    return spec.isdigit() and 1 <= int(spec) <= 64


def content_addressed(template: str) -> bool:
    """Whether keys made by `template` depend on the content (they name it by its hash)."""
    return any(name in CONTENT_TEMPLATE_FIELDS for name, _ in placeholders(template))


def uses(template: str, name: str) -> bool:
    """Whether `template` has the placeholder `name`."""
    return any(found == name for found, _ in placeholders(template))
