"""Scalar types shared by both resources: Kubernetes-style durations and quantities.

Both keep the user's spelling in the model (so a spec round-trips unchanged through
`kubectl get -o yaml`) and expose parsing helpers that the engine calls when it needs
numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

# A subset of Kubernetes resource.Quantity: non-negative, byte-oriented suffixes only.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)
# Kubernetes resource quantities (CPU, memory) also take the milli suffix, e.g. ``500m``.
RESOURCE_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
_RESOURCE_QUANTITY = re.compile(RESOURCE_QUANTITY_PATTERN)
_QUANTITY_FACTORS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_duration(value: str) -> timedelta:
    """Parse a Go/Kubernetes duration such as ``"1h30m"``, ``"72h"`` or ``"500ms"``."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a duration; use a number with a unit ms, s, m or h, e.g. 30m or 72h"
        )
    seconds = sum(
        float(amount) * _DURATION_UNITS[unit] for amount, unit in _DURATION_PART.findall(value)
    )
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta the way Kubernetes users write one (``"2h5m3s"``), to the second."""
    total = max(0, int(delta.total_seconds()))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(f"{seconds}s" if seconds or not (hours or minutes) else "")
    return "".join(parts)


def parse_quantity(value: int | str) -> int:
    """Parse a byte quantity: an integer, or a string such as ``"5Mi"``, ``"1.5G"``."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a size must be zero or more")
        return value
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a quantity; use an integer or a number with a suffix "
            "such as Ki, Mi, Gi, k, M, G"
        )
    suffix = match.group(2) or ""
    number = Decimal(value[: len(value) - len(suffix)])
    return int(number * _QUANTITY_FACTORS[suffix])


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


def _coerce_quantity(value: Any) -> Any:
    # YAML gives ints for plain numbers; keep them ints so the spec round-trips as written.
    if isinstance(value, bool):
        raise ValueError("a quantity must be an integer or a string such as 5Mi")
    return value


def _check_quantity(value: int | str) -> int | str:
    parse_quantity(value)
    return value


def _check_resource_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a resource quantity must be zero or more")
    elif not _RESOURCE_QUANTITY.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a resource quantity; use e.g. 500m or 2 (CPU), 256Mi or 1Gi (memory)"
        )
    return value


#: Longest duration or quantity string: keeps the API server's CEL cost estimates small.
_MAX_SCALAR_CHARS = 64

Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    WithJsonSchema({"type": "string", "maxLength": _MAX_SCALAR_CHARS, "pattern": DURATION_PATTERN}),
]
"""A duration string such as ``"30s"``, ``"15m"``, ``"72h"`` or ``"1h30m"``."""

Quantity = Annotated[
    int | str,
    BeforeValidator(_coerce_quantity),
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            # minimum checks the integer form; the pattern (no sign) the string form.
            "minimum": 0,
            "maxLength": _MAX_SCALAR_CHARS,
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A byte count: an integer, or a string with a suffix such as ``"5Mi"`` or ``"2G"``."""

ResourceQuantity = Annotated[
    int | str,
    BeforeValidator(_coerce_quantity),
    AfterValidator(_check_resource_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "maxLength": _MAX_SCALAR_CHARS,
            "pattern": RESOURCE_QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity for worker pods: ``500m`` or ``2`` CPUs, ``256Mi`` of memory."""


@dataclass(frozen=True)
class _Between:
    """Bounds on a :data:`Duration` or :data:`Quantity` field, inclusive at both ends.

    Put in the field's ``Annotated`` metadata (``Annotated[Duration, DurationBetween(...)]``),
    it checks the value in pydantic and adds the same check as a CEL rule to the field's
    schema, so the CLI and ``kubectl apply`` refuse the same values in the same words: the
    bounds, and ``why`` they are there.
    """

    minimum: str
    maximum: str
    why: str = ""

    @property
    def message(self) -> str:
        """What the rule says when it is broken."""
        return f"must be between {self.minimum} and {self.maximum}" + (
            f": {self.why}" if self.why else ""
        )

    def _size(self, value: Any) -> Any:
        raise NotImplementedError

    def _rule(self) -> str:
        raise NotImplementedError

    def _within(self, value: Any) -> Any:
        if not self._size(self.minimum) <= self._size(value) <= self._size(self.maximum):
            raise ValueError(f"{value} {self.message}")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._within, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-validations"] = [{"rule": self._rule(), "message": self.message}]
        return json_schema


@dataclass(frozen=True)
class DurationBetween(_Between):
    """Bounds on a :data:`Duration` (``"1s"``, ``"168h"``)."""

    def _size(self, value: Any) -> Any:
        return parse_duration(value)

    def _rule(self) -> str:
        # The API server runs the rule even on a value its pattern refused: skip those.
        return (
            f"!self.matches(r'{DURATION_PATTERN}') || "
            f"(duration(self) >= duration('{self.minimum}') && "
            f"duration(self) <= duration('{self.maximum}'))"
        )


@dataclass(frozen=True)
class QuantityBetween(_Between):
    """Bounds on a :data:`Quantity` (``"5Mi"``, ``"5Gi"``)."""

    def _size(self, value: Any) -> Any:
        return parse_quantity(value)

    def _rule(self) -> str:
        size = "quantity(string(self))"
        # The API server runs the rule even on a value its pattern refused: skip those.
        return (
            f"!isQuantity(string(self)) || ({size}.compareTo(quantity('{self.minimum}')) >= 0 "
            f"&& {size}.compareTo(quantity('{self.maximum}')) <= 0)"
        )
