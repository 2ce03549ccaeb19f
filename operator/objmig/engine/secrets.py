"""Values a spec references in Secrets and ConfigMaps, and how each driver supplies them.

A spec names Secrets (``credentialsSecretRef``, ``customerKeySecretRef``, ``dsnSecretRef``);
where the values come from depends on the driver:

* in a worker pod, the operator maps every referenced Secret key to an environment
  variable (``valueFrom.secretKeyRef``) named by :func:`env_name`, so workers need no
  Kubernetes API access;
* on a laptop, the same variables, a YAML file of Secret manifests (``--secrets``), or the
  Secrets in the resource file itself, as ``kubectl apply -f`` would create them.

Secret values are never logged, nor put in an error message.

A ConfigMap worklist (``selection.manifest.configMapRef``) reaches the scan through the
ledger instead (see ``engine.scan``); on a laptop it is read from a YAML file of ConfigMap
manifests (``--config-maps``, :func:`file_config_maps`). Other ConfigMap keys a worker reads
(a store's ``caBundle``) reach a pod as environment variables too
(``valueFrom.configMapKeyRef``, named by :func:`config_map_env_name`).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from objmig.api.base import LocalObjectReference, SecretKeySelector
from objmig.api.loading import load_bundle
from objmig.api.migration import BucketSpec, ObjectMigrationSpec
from objmig.storage.endpoint import Credentials
from objmig.storage.tls import check_ca_bundle

ACCESS_KEY_ID = "accessKeyId"
SECRET_ACCESS_KEY = "secretAccessKey"  # noqa: S105 - a key name, not a secret
SESSION_TOKEN = "sessionToken"  # noqa: S105 - a key name, not a secret


class NotProvided(LookupError):
    """A Secret or ConfigMap key the spec references has no value where this driver looks."""


class SecretNotFound(NotProvided):
    """A referenced Secret key has no value where this driver looks for it."""


class ConfigMapNotFound(NotProvided):
    """A referenced ConfigMap key has no value where this driver looks for it."""


def _clean(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", text.upper())


def env_name(secret: str, key: str) -> str:
    """The environment variable carrying Secret ``secret``'s ``key``.

    ``OBJMIG_SECRET_<SECRET>__<KEY>``, upper-cased, other characters as ``_``; the double
    underscore keeps ``a-b``/``c`` and ``a``/``b-c`` apart.
    """
    return f"OBJMIG_SECRET_{_clean(secret)}__{_clean(key)}"


def config_map_env_name(config_map: str, key: str) -> str:
    """The environment variable carrying ConfigMap ``config_map``'s ``key`` in a worker
    pod: ``OBJMIG_CONFIGMAP_<CONFIGMAP>__<KEY>``, spelt as :func:`env_name` spells it."""
    return f"OBJMIG_CONFIGMAP_{_clean(config_map)}__{_clean(key)}"


class SecretSource(Protocol):
    """Where secret values are read from."""

    def get(self, secret: str, key: str) -> str | None:
        """The value of ``key`` in Secret ``secret``, or None when unknown."""
        ...


@dataclass(frozen=True)
class EnvSecrets:
    """Secrets mapped to environment variables (how worker pods receive them)."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def get(self, secret: str, key: str) -> str | None:
        """See :class:`SecretSource`."""
        return self.environ.get(env_name(secret, key))


@dataclass(frozen=True)
class MappingSecrets:
    """Secret values read from manifests (a ``--secrets`` file, or the resource file itself)."""

    values: Mapping[tuple[str, str], str]

    def get(self, secret: str, key: str) -> str | None:
        """See :class:`SecretSource`."""
        return self.values.get((secret, key))


class ConfigMapSource(Protocol):
    """Where ConfigMap values a worker reads are found."""

    def get(self, config_map: str, key: str) -> str | None:
        """The value of ``key`` in ConfigMap ``config_map``, or None when unknown."""
        ...


@dataclass(frozen=True)
class EnvConfigMaps:
    """ConfigMap keys mapped to environment variables (how worker pods receive them)."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def get(self, config_map: str, key: str) -> str | None:
        """See :class:`ConfigMapSource`."""
        return self.environ.get(config_map_env_name(config_map, key))


@dataclass(frozen=True)
class MappingConfigMaps:
    """ConfigMap data by name (a ``--config-maps`` file, or the resource file itself)."""

    data: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def get(self, config_map: str, key: str) -> str | None:
        """See :class:`ConfigMapSource`."""
        return self.data.get(config_map, {}).get(key)


def file_secrets(path: Path) -> MappingSecrets:
    """Secrets from a YAML file of Kubernetes Secret manifests (``data`` or ``stringData``)."""
    return MappingSecrets(load_bundle(path, objmig_kinds=False).secrets)


def file_config_maps(path: Path) -> dict[str, dict[str, str]]:
    """ConfigMap ``data`` by name from a YAML file of ConfigMap manifests."""
    return load_bundle(path, objmig_kinds=False).config_maps


@dataclass(frozen=True)
class ChainedSecrets:
    """The first source that knows a value wins."""

    sources: tuple[SecretSource, ...]

    def get(self, secret: str, key: str) -> str | None:
        """See :class:`SecretSource`."""
        for source in self.sources:
            value = source.get(secret, key)
            if value is not None:
                return value
        return None


def require(source: SecretSource, secret: str, key: str, field: str | None = None) -> str:
    """The value, or an error that says where it was looked for (never the value itself)
    and, given its ``field``, which field of the spec names it."""
    value = source.get(secret, key)
    if value is None:
        named = f" ({field})" if field else ""
        raise SecretNotFound(
            f"Secret {secret!r} has no key {key!r}{named} here: set {env_name(secret, key)} "
            "or pass --secrets FILE with the Secret manifest"
        )
    return value


def application_secrets(spec: ObjectMigrationSpec, source: SecretSource) -> dict[str, str]:
    """The values of `application_secret_refs`; raises `SecretNotFound` naming the field."""
    return {
        name: require(source, ref.name, ref.key, field)
        for name, (ref, field) in application_secret_refs(spec).items()
    }


def bucket_credentials(bucket: BucketSpec, source: SecretSource) -> Credentials | None:
    """Credentials for one side of a migration; None means the SDK's default chain."""
    ref: LocalObjectReference | None = bucket.credentials_secret_ref
    if ref is not None:
        return Credentials(
            access_key_id=require(source, ref.name, ACCESS_KEY_ID),
            secret_access_key=require(source, ref.name, SECRET_ACCESS_KEY),
            session_token=source.get(ref.name, SESSION_TOKEN),
        )
    if bucket.profile:
        return _profile_credentials(bucket.profile)
    return None


def _profile_credentials(profile: str) -> Credentials:
    import botocore.session

    resolved = botocore.session.Session(profile=profile).get_credentials()
    if resolved is None:
        raise SecretNotFound(f"AWS profile {profile!r} has no credentials")
    frozen = resolved.get_frozen_credentials()
    if not frozen.access_key or not frozen.secret_key:
        raise SecretNotFound(f"AWS profile {profile!r} has incomplete credentials")
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token)


def customer_key(ref: SecretKeySelector | None, source: SecretSource) -> bytes | None:
    """A 32-byte SSE-C key from a Secret: raw 32 characters, or base64 of 32 bytes."""
    if ref is None:
        return None
    value = require(source, ref.name, ref.key)
    raw = value.encode()
    if len(raw) == 32:
        return raw
    try:
        decoded = base64.b64decode(value, validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) != 32:
        raise ValueError(
            f"Secret {ref.name!r} key {ref.key!r} must hold a 32-byte SSE-C key "
            "(raw or base64-encoded)"
        )
    return decoded


#: Environment variables naming a CA bundle file, in the order they are read: the AWS
#: tools' own, then OpenSSL's.
CA_BUNDLE_VARIABLES = ("AWS_CA_BUNDLE", "SSL_CERT_FILE")


def ca_bundle_of(
    side: str,
    bucket: BucketSpec,
    secrets: SecretSource,
    config_maps: ConfigMapSource,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The PEM bundle both clients of one side trust; None: the system's trust store.

    ``spec.<side>.caBundle`` when given (a missing key is an error that says where it
    was looked for); otherwise, for an https endpoint (or AWS), the file the first of
    :data:`CA_BUNDLE_VARIABLES` names. A bundle without a certificate is refused here,
    before any request.
    """
    ref = bucket.ca_bundle
    where = f"spec.{side}.caBundle"
    if ref is not None:
        if ref.secret_key_ref is not None:
            pem = require(secrets, ref.secret_key_ref.name, ref.secret_key_ref.key)
            where = f"{where} (Secret {ref.secret_key_ref.name!r} key {ref.secret_key_ref.key!r})"
        else:
            assert ref.config_map_key_ref is not None  # exactly one, by validation
            name, key = ref.config_map_key_ref.name, ref.config_map_key_ref.key
            found = config_maps.get(name, key)
            if found is None:
                raise ConfigMapNotFound(
                    f"ConfigMap {name!r} has no key {key!r} here ({where}): set "
                    f"{config_map_env_name(name, key)} or pass --config-maps FILE with the "
                    "ConfigMap manifest"
                )
            pem = found
            where = f"{where} (ConfigMap {name!r} key {key!r})"
        return check_ca_bundle(pem, where)
    if bucket.endpoint and not bucket.endpoint.startswith("https://"):
        return None
    environ = os.environ if environ is None else environ
    for variable in CA_BUNDLE_VARIABLES:
        path = environ.get(variable)
        if path:
            try:
                text = Path(path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"{variable}={path}: cannot read the CA bundle: {exc}") from None
            return check_ca_bundle(text, f"{variable}={path}")
    return None


def referenced_secrets(spec: ObjectMigrationSpec) -> list[tuple[str, str]]:
    """Every (secret, key) pair a worker of ``spec`` reads, for the operator to map into env."""
    return list(secret_fields(spec))


def application_secret_refs(
    spec: ObjectMigrationSpec,
) -> dict[str, tuple[SecretKeySelector, str]]:
    """The Secret keys the application's steps read, each with the field naming it:
    ``worklist_dsn``, ``backfill_dsn``, ``hook_token`` (only those the spec names)."""
    manifest = spec.selection.manifest
    hook = spec.hooks.per_object if spec.hooks is not None else None
    refs = {
        "worklist_dsn": (
            manifest.sql.dsn_secret_ref if manifest is not None and manifest.sql else None,
            "spec.selection.manifest.sql.dsnSecretRef",
        ),
        "backfill_dsn": (
            spec.backfill.dsn_secret_ref if spec.backfill is not None else None,
            "spec.backfill.dsnSecretRef",
        ),
        "hook_token": (
            hook.bearer_token_secret_ref if hook is not None else None,
            "spec.hooks.perObject.bearerTokenSecretRef",
        ),
    }
    return {name: (ref, field) for name, (ref, field) in refs.items() if ref is not None}


def secret_fields(spec: ObjectMigrationSpec) -> dict[tuple[str, str], str]:
    """Every (secret, key) pair a worker of ``spec`` reads, with the field that names it."""
    found: dict[tuple[str, str], str] = {}
    for side, bucket in (("source", spec.source), ("target", spec.target)):
        if bucket.credentials_secret_ref is not None:
            name = bucket.credentials_secret_ref.name
            for key in (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN):
                found.setdefault((name, key), f"spec.{side}.credentialsSecretRef")
        bundle = bucket.ca_bundle.secret_key_ref if bucket.ca_bundle is not None else None
        if bundle is not None:
            found.setdefault((bundle.name, bundle.key), f"spec.{side}.caBundle.secretKeyRef")
    refs: list[tuple[SecretKeySelector | None, str]] = [
        (spec.source.customer_key_secret_ref, "spec.source.customerKeySecretRef"),
        (
            spec.target.encryption.customer_key_secret_ref,
            "spec.target.encryption.customerKeySecretRef",
        ),
        *application_secret_refs(spec).values(),
    ]
    for ref, named_by in refs:
        if ref is not None:
            found.setdefault((ref.name, ref.key), named_by)
    return found


def referenced_config_maps(spec: ObjectMigrationSpec) -> list[tuple[str, str]]:
    """Every (ConfigMap, key) pair a worker of ``spec`` reads from its environment."""
    pairs = [
        (bucket.ca_bundle.config_map_key_ref.name, bucket.ca_bundle.config_map_key_ref.key)
        for bucket in (spec.source, spec.target)
        if bucket.ca_bundle is not None and bucket.ca_bundle.config_map_key_ref is not None
    ]
    return list(dict.fromkeys(pairs))
