"""The base of every API model: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A part of a custom resource.

    Unknown fields are errors, so a misspelt option fails loudly instead of being ignored.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict Kubernetes stores: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(
        description="Name of the referenced object.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )


class SecretKeySelector(ApiModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(
        description="Name of the Secret.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    key: str = Field(description="Key within the Secret's data.", min_length=1, max_length=253)


def cel_rule(
    rule: str, message: str, *, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    """One CEL ``x-kubernetes-validations`` entry the API server checks at admission."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def cel_validations(*rules: dict[str, str]) -> ConfigDict:
    """Model config that puts CEL rules on the model's schema in the generated CRD.

    Each rule here has a pydantic twin (a validator on the same model), so the CLI rejects
    the same specs the API server does.
    """
    entries: list[JsonValue] = [dict(rule) for rule in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": entries})
