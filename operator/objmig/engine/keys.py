"""Where a source object lands on the target: the key template of ``spec.target``."""

from __future__ import annotations

import posixpath
from datetime import datetime


def relative_key(key: str, source_prefix: str) -> str:
    """The key with the source prefix taken off (the whole key when it lies outside it)."""
    return key[len(source_prefix) :] if key.startswith(source_prefix) else key


def target_key(
    key: str,
    *,
    source_prefix: str,
    target_prefix: str,
    template: str,
    last_modified: datetime,
    etag: str,
) -> str:
    """Render the target key: ``target_prefix`` + ``template`` filled from the source object.

    The placeholder names are validated by the API model, so formatting cannot fail on an
    unknown name here.
    """
    relative = relative_key(key, source_prefix)
    dirname, basename = posixpath.split(relative)
    rendered = template.format(
        key=key,
        relative=relative,
        dirname=dirname,
        basename=basename,
        year=f"{last_modified.year:04d}",
        month=f"{last_modified.month:02d}",
        day=f"{last_modified.day:02d}",
        etag=etag,
    )
    return target_prefix + rendered
