"""Where a source object lands on the target, and which group it belongs to: the key
templates of ``spec.target.keyTemplate`` and ``spec.groups`` (placeholders in
`objmig.api.migration.templates`)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from string import Formatter


def relative_key(key: str, source_prefix: str) -> str:
    """The key with the source prefix taken off (the whole key when it lies outside it)."""
    return key[len(source_prefix) :] if key.startswith(source_prefix) else key


@dataclass(frozen=True)
class Facts:
    """What the placeholders of a template are filled from."""

    key: str
    relative: str
    last_modified: datetime
    etag: str
    bucket: str = ""
    sha256: str | None = None
    group: str | None = None

    def value(self, name: str, spec: str) -> str:
        """The value of one placeholder. The names were validated by the API model."""
        if name == "sha256":
            if self.sha256 is None:
                raise ValueError("{sha256} is known only once the content has been read")
            return self.sha256[: int(spec)] if spec else self.sha256
        dirname, basename = posixpath.split(self.relative)
        moment = self.last_modified
        values = {
            "key": self.key,
            "relative": self.relative,
            "dirname": dirname,
            "basename": basename,
            # The rendered spec.groups.by in a manifest key; else the first path segment.
            "group": self.group if self.group is not None else self.relative.split("/", 1)[0],
            "year": f"{moment.year:04d}",
            "month": f"{moment.month:02d}",
            "day": f"{moment.day:02d}",
            "etag": self.etag,
            "bucket": self.bucket,
        }
        return values[name]


def render(template: str, facts: Facts) -> str:
    """`template` with its placeholders filled in."""
    parts: list[str] = []
    for literal, name, spec, _ in Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(facts.value(name, spec or ""))
    return "".join(parts)


def target_key(
    key: str,
    *,
    source_prefix: str,
    target_prefix: str,
    template: str,
    last_modified: datetime,
    etag: str,
    bucket: str = "",
    sha256: str | None = None,
) -> str:
    """Render the target key: ``target_prefix`` + ``template`` filled from the source object."""
    facts = Facts(key, relative_key(key, source_prefix), last_modified, etag, bucket, sha256)
    return target_prefix + render(template, facts)
