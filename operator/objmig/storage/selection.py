"""Which objects a migration takes: key globs, dates, sizes, storage classes, metadata.

Pure functions over listing data; no I/O. The engine applies `Selection.matches` to every
listed object and, only when metadata rules exist, HEADs the survivors and applies
`metadata_matches` (a listing carries no user metadata).

Globs follow rclone's filter rules (rclone `fs/filter/glob.go`, docs "Filtering"), applied
to the key *relative to the selection prefix* (the "root of the remote"), `/` being the
only separator:

- a pattern that starts with `/` is anchored at the prefix: `/file.jpg` matches
  `file.jpg` only; one that does not matches at the end of the key, from a `/` or the
  start: `file.jpg` matches `file.jpg` and `dir/file.jpg`, not `afile.jpg`; `*.tmp`
  matches `x.tmp` and `logs/x.tmp`;
- `*` matches any run of characters except `/`; `**` any run including `/` (three stars
  are an error); `?` one character except `/`;
- `[abc]`, `[a-z]`, `[!abc]` (never `/`) character classes; `{jpg,png}` alternatives
  (they may nest); `\\` escapes the next character;
- a pattern ending in `/` is a directory: it matches everything under it (`cache/`
  matches `cache/a` and `x/cache/b/c`);
- rclone's `{{regexp}}` sections are not supported.

Before, a pattern was anchored at the prefix whether it started with `/` or not, and `**/`
also matched zero directories. `compile_earlier_glob` keeps that meaning for one purpose:
a scan counts the objects the spec's globs select differently now (`Selection.changed`),
so that a spec written for it does not change what it selects without a loud warning.

An empty `include` means "everything"; `exclude` wins over `include`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal, Protocol


class Listed(Protocol):
    """What selection needs from a listed object (`objmig.storage.types.ObjectInfo`)."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def last_modified(self) -> datetime: ...
    @property
    def storage_class(self) -> str: ...


class GlobError(ValueError):
    """A glob pattern that cannot be compiled."""


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile one glob (rclone's filter rules, see the module docstring) to a regex that
    must match a relative key from its start (`re.match`) to its end."""
    anchored = pattern.startswith("/")
    body = pattern[1:] if anchored else pattern
    if body.endswith("/"):
        body += "**"
    # Unanchored: "(^|/)" in rclone, here a run of whole directories matched from the start.
    start = "" if anchored else "(?:.*/)?"
    return _compiled(pattern, start + _translate(pattern, body, earlier=False))


@functools.lru_cache(maxsize=1024)
def compile_earlier_glob(pattern: str) -> re.Pattern[str]:
    """A glob as objmig read it before it followed rclone: anchored at the prefix, a
    leading `/` ignored, `**/` also matching zero directories."""
    return _compiled(pattern, _translate(pattern, pattern.removeprefix("/"), earlier=True))


def _compiled(pattern: str, regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex + r"\Z", re.DOTALL)
    except re.error as exc:  # e.g. a bad range like [z-a]
        raise GlobError(f"pattern {pattern!r}: {exc}") from exc


def _translate(pattern: str, body: str, *, earlier: bool) -> str:
    """The regex of a glob's body (no anchoring: see the callers)."""
    out: list[str] = []
    i, n = 0, len(body)
    braces = 0
    while i < n:
        c = body[i]
        if c == "\\":
            if i + 1 >= n:
                raise GlobError(f"pattern {pattern!r} ends with a lone backslash")
            out.append(re.escape(body[i + 1]))
            i += 2
            continue
        if c == "*":
            j = i
            while j < n and body[j] == "*":
                j += 1
            stars = j - i
            if stars == 1:
                out.append("[^/]*")
            elif stars > 2 and not earlier:
                raise GlobError(f"pattern {pattern!r} has too many stars together")
            elif earlier and (i == 0 or body[i - 1] == "/") and j < n and body[j] == "/":
                # `**/` at a segment start: zero or more whole directories.
                out.append("(?:.*/)?")
                j += 1
            else:
                out.append(".*")
            i = j
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and body[j] in "!^":
                j += 1
            if j < n and body[j] == "]":
                j += 1
            while j < n and body[j] != "]":
                j += 1
            if j >= n:
                raise GlobError(f"pattern {pattern!r} has an unclosed '['")
            inside = body[i + 1 : j]
            negate = inside[:1] in ("!", "^")
            if negate:
                inside = inside[1:]
            inside = inside.replace("\\", "\\\\")
            # A negated class must not swallow the separator either.
            out.append(f"[^/{inside}]" if negate else f"[{inside}]")
            i = j
        elif c == "{" and not earlier and body.startswith("{{", i):
            raise GlobError(f"pattern {pattern!r}: {{{{regexp}}}} sections are not supported")
        elif c == "{" and (braces == 0 or not earlier):
            braces += 1
            out.append("(?:")
        elif c == "," and braces:
            out.append("|")
        elif c == "}" and braces:
            braces -= 1
            out.append(")")
        else:
            out.append(re.escape(c))
        i += 1
    if braces:
        raise GlobError(f"pattern {pattern!r} has an unclosed '{{'")
    return "".join(out)


def glob_match(pattern: str, relative_key: str) -> bool:
    """True when `relative_key` matches `pattern` as a whole."""
    return compile_glob(pattern).match(relative_key) is not None


@dataclass(frozen=True)
class Selection:
    """The listing-level filters of `spec.selection`.

    `modified_after` / `modified_before` are exclusive bounds on LastModified;
    `min_size` / `max_size` inclusive bounds in bytes; `storage_classes` empty = any.
    `written_prefix`: keys the migration itself writes (its target prefix, in the
    source's bucket), never selected.
    """

    prefix: str = ""
    written_prefix: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    min_size: int | None = None
    max_size: int | None = None
    storage_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Compile now so a bad pattern fails when the spec is loaded, not mid-scan.
        for pattern in (*self.include, *self.exclude):
            compile_glob(pattern)
        for name in ("modified_after", "modified_before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware")

    def relative_key(self, key: str) -> str | None:
        """The key relative to the prefix, or None when the key is outside it."""
        if not key.startswith(self.prefix):
            return None
        return key[len(self.prefix) :]

    def explain(self, info: Listed, *, earlier: bool = False) -> str | None:
        """None when `info` is selected, otherwise why not (for plans and reports).

        `earlier`: as the globs selected before they followed rclone (see
        `compile_earlier_glob`).
        """
        relative = self.relative_key(info.key)
        if relative is None:
            return f"outside prefix {self.prefix!r}"
        if self.written_prefix is not None and info.key.startswith(self.written_prefix):
            return f"under the target prefix {self.written_prefix!r}, where copies are written"
        compiled = compile_earlier_glob if earlier else compile_glob
        for pattern in self.exclude:
            if compiled(pattern).match(relative):
                return f"excluded by {pattern!r}"
        if self.include and not any(compiled(p).match(relative) for p in self.include):
            return "matches no include pattern"
        if self.modified_after is not None and not info.last_modified > self.modified_after:
            return f"not modified after {self.modified_after.isoformat()}"
        if self.modified_before is not None and not info.last_modified < self.modified_before:
            return f"not modified before {self.modified_before.isoformat()}"
        if self.min_size is not None and info.size < self.min_size:
            return f"smaller than {self.min_size} bytes"
        if self.max_size is not None and info.size > self.max_size:
            return f"larger than {self.max_size} bytes"
        if self.storage_classes and (info.storage_class or "STANDARD") not in self.storage_classes:
            return f"storage class {info.storage_class} not selected"
        return None

    def matches(self, info: Listed) -> bool:
        """True when the listed object is selected."""
        return self.explain(info) is None

    def changed(self, info: Listed) -> bool:
        """Whether the globs select `info` otherwise than before they followed rclone."""
        if not (self.include or self.exclude):
            return False
        return (self.explain(info) is None) != (self.explain(info, earlier=True) is None)


MetadataOperator = Literal[
    "Eq", "NotEq", "In", "NotIn", "Exists", "DoesNotExist", "Lt", "Le", "Gt", "Ge"
]

_OPERATOR_ALIASES: Mapping[str, MetadataOperator] = {
    "eq": "Eq",
    "equals": "Eq",
    "noteq": "NotEq",
    "ne": "NotEq",
    "in": "In",
    "notin": "NotIn",
    "exists": "Exists",
    "doesnotexist": "DoesNotExist",
    "notexists": "DoesNotExist",
    "lt": "Lt",
    "le": "Le",
    "lte": "Le",
    "gt": "Gt",
    "ge": "Ge",
    "gte": "Ge",
}


@dataclass(frozen=True)
class MetadataRule:
    """One condition on user metadata (`x-amz-meta-<key>`; keys are case-insensitive).

    Operators: `Eq`, `NotEq`, `In`, `NotIn` (against `values`), `Exists`, `DoesNotExist`,
    and `Lt`, `Le`, `Gt`, `Ge` (against `values[0]`). Comparisons are numeric when both
    sides parse as numbers (`"10" > "9"`, `"1.0" Eq "1"`), otherwise plain string
    comparisons. As with Kubernetes selectors, a missing key satisfies only `NotEq`,
    `NotIn` and `DoesNotExist` — unless `default` says what a missing key counts as
    (objects written before a key existed: `storage-version Lt 3, default 0`).
    """

    key: str
    operator: MetadataOperator
    values: tuple[str, ...] = ()
    default: str | None = None

    def __post_init__(self) -> None:
        needs_values = self.operator not in ("Exists", "DoesNotExist")
        if needs_values and not self.values:
            raise ValueError(f"metadata rule on {self.key!r}: {self.operator} needs a value")
        if self.operator in ("Lt", "Le", "Gt", "Ge", "Eq", "NotEq") and len(self.values) > 1:
            raise ValueError(
                f"metadata rule on {self.key!r}: {self.operator} takes exactly one value"
            )
        if self.default is not None and not needs_values:
            raise ValueError(f"metadata rule on {self.key!r}: {self.operator} takes no default")

    @classmethod
    def parse(
        cls,
        key: str,
        operator: str,
        value: str | None = None,
        values: Iterable[str] = (),
        default: str | None = None,
    ) -> MetadataRule:
        """Build a rule from spec-like input, accepting operator aliases (`lte`, `NotExists`)."""
        op = _OPERATOR_ALIASES.get(operator.replace("_", "").replace("-", "").lower())
        if op is None:
            raise ValueError(f"unknown metadata operator {operator!r}")
        all_values = tuple(values) + ((value,) if value is not None else ())
        return cls(key=key, operator=op, values=tuple(str(v) for v in all_values), default=default)


def _number(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _compare(actual: str, expected: str) -> int:
    a, b = _number(actual), _number(expected)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    return (actual > expected) - (actual < expected)


def rule_matches(metadata: Mapping[str, str], rule: MetadataRule) -> bool:
    """True when `metadata` (user metadata, any key case) satisfies `rule`."""
    lowered = {k.lower(): v for k, v in metadata.items()}
    actual = lowered.get(rule.key.lower(), rule.default)
    op = rule.operator
    if op == "Exists":
        return actual is not None
    if op == "DoesNotExist":
        return actual is None
    if actual is None:
        return op in ("NotEq", "NotIn")
    if op == "Eq":
        return _compare(actual, rule.values[0]) == 0
    if op == "NotEq":
        return _compare(actual, rule.values[0]) != 0
    if op == "In":
        return any(_compare(actual, v) == 0 for v in rule.values)
    if op == "NotIn":
        return all(_compare(actual, v) != 0 for v in rule.values)
    cmp = _compare(actual, rule.values[0])
    return {"Lt": cmp < 0, "Le": cmp <= 0, "Gt": cmp > 0, "Ge": cmp >= 0}[op]


def metadata_matches(metadata: Mapping[str, str], rules: Iterable[MetadataRule]) -> bool:
    """True when every rule holds (no rules: True)."""
    return all(rule_matches(metadata, rule) for rule in rules)
