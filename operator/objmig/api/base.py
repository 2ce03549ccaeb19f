"""The base of every API model: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints
from pydantic.alias_generators import to_camel

# The names Kubernetes gives things, as its API validation spells them: what the API server
# would refuse in a Job or a pod made from a spec is refused in the spec itself, at apply.
#: A DNS label (RFC 1123): namespaces, names that become labels or hostnames.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A DNS subdomain (RFC 1123): Secrets, ConfigMaps, ServiceAccounts.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A key of a Secret's or a ConfigMap's data.
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
#: A label key (or resource name, or taint key): an optional DNS-subdomain prefix and "/",
#: then a name of at most 63 characters.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$"
)
#: A label value (or a taint value): empty, or up to 63 characters.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

QualifiedName = Annotated[str, StringConstraints(max_length=317, pattern=QUALIFIED_NAME)]
"""A label key, resource name or taint key: ``example.com/name`` or ``name``."""
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE)]
"""A label or taint value."""
DataKey = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DATA_KEY)]
"""A key of a ConfigMap's or a Secret's data."""


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
        pattern=DNS_SUBDOMAIN,
    )


class SecretKeySelector(ApiModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(
        description="Name of the Secret.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    key: str = Field(
        description="Key within the Secret's data (letters, digits, '-', '_', '.').",
        min_length=1,
        max_length=253,
        pattern=DATA_KEY,
    )


class ConfigMapKeySelector(ApiModel):
    """One key of a ConfigMap in the same namespace."""

    name: str = Field(
        description="Name of the ConfigMap.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    key: str = Field(description="Key within the ConfigMap's data.", min_length=1, max_length=253)


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

    A subclass keeps its bases' rules and adds its own (pydantic would otherwise let the
    subclass's config replace them). Each rule here has a pydantic twin (a validator on the
    same model), so the CLI rejects the same specs the API server does.
    """
    own = tuple(dict(rule) for rule in rules)

    def extra(schema: dict[str, Any], cls: type[BaseModel]) -> None:
        collected: list[dict[str, str]] = []
        for klass in reversed(cls.__mro__):
            config = klass.__dict__.get("model_config") or {}
            for rule in getattr(config.get("json_schema_extra"), "cel_rules", ()):
                if rule not in collected:
                    collected.append(rule)
        entries: list[JsonValue] = [dict(rule) for rule in collected]
        schema["x-kubernetes-validations"] = entries

    extra.cel_rules = own  # type: ignore[attr-defined]
    return ConfigDict(json_schema_extra=extra)
