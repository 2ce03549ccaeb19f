"""The spec, resolved: endpoints with credentials, filters, copy options — what the steps use.

Resolving once, up front, means a missing Secret or a bad glob stops the run before any
object is touched, with a message that names what is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from objmig.api.conditions import Reason
from objmig.api.migration import BucketSpec, ObjectMigration, ObjectMigrationSpec
from objmig.api.types import parse_duration, parse_quantity
from objmig.engine.appdb import connect, describe_error
from objmig.engine.backfill import BackfillTable
from objmig.engine.hooks import check_reachable
from objmig.engine.keys import Facts, relative_key, render, target_key
from objmig.engine.pipeline.outcomes import ApplicationError
from objmig.engine.secrets import (
    ConfigMapSource,
    MappingConfigMaps,
    SecretSource,
    application_secrets,
    bucket_credentials,
    ca_bundle_of,
    customer_key,
)
from objmig.storage.compare import MetadataChange
from objmig.storage.endpoint import Endpoint, same_store
from objmig.storage.errors import classify
from objmig.storage.features import StoreFeatures, probe_tags
from objmig.storage.filesystem import FileStore, open_file_store
from objmig.storage.s3http import store_name
from objmig.storage.selection import MetadataRule, Selection, compile_glob
from objmig.storage.store import Store, open_store

#: One side of a migration: a bucket's store (S3), or a directory tree.
Side = Store | FileStore


def endpoint_of(
    side: str,
    bucket: BucketSpec,
    secrets: SecretSource,
    config_maps: ConfigMapSource | None = None,
) -> Endpoint:
    """The storage-layer endpoint for one side ("source", "target") of the migration."""
    style = bucket.addressing_style
    if style == "auto":
        style = "virtual" if not bucket.endpoint else "path"
    return Endpoint(
        url=bucket.endpoint or None,
        region=bucket.region or None,
        addressing_style=style,
        credentials=bucket_credentials(bucket, secrets),
        ca_bundle=ca_bundle_of(side, bucket, secrets, config_maps or MappingConfigMaps()),
    )


def selection_of(spec: ObjectMigrationSpec) -> Selection:
    """The listing filters of ``spec.selection``.

    A migration inside one bucket never selects what it writes: copies under a target
    prefix within the source prefix would otherwise be listed by every re-scan and copied
    again, into the target prefix's target prefix.
    """
    chosen = spec.selection
    writes_within = spec.same_bucket and not spec.rewrites_in_place
    return Selection(
        prefix=spec.source.prefix,
        written_prefix=spec.target.prefix if writes_within else None,
        include=tuple(chosen.include),
        exclude=tuple(chosen.exclude),
        modified_after=chosen.modified_after,
        modified_before=chosen.modified_before,
        min_size=parse_quantity(chosen.min_size) if chosen.min_size is not None else None,
        max_size=parse_quantity(chosen.max_size) if chosen.max_size is not None else None,
        storage_classes=tuple(chosen.storage_classes),
    )


def metadata_rules_of(spec: ObjectMigrationSpec) -> tuple[MetadataRule, ...]:
    """The user-metadata rules of ``spec.selection`` in the storage layer's terms."""
    return tuple(
        MetadataRule.parse(rule.key, rule.operator, values=rule.values, default=rule.default)
        for rule in spec.selection.metadata
    )


def metadata_change_of(spec: ObjectMigrationSpec) -> MetadataChange:
    """The user metadata ``spec.target.metadata`` sets and removes, in the storage layer's
    terms."""
    change = spec.target.metadata
    if change is None:
        return MetadataChange()
    return MetadataChange(set=dict(change.set), remove=frozenset(change.remove))


@dataclass(frozen=True)
class BucketFilter:
    """Which buckets of the account a migration of several buckets takes (names or globs)."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]

    def matches(self, name: str) -> bool:
        def any_of(patterns: Iterable[str]) -> bool:
            return any(compile_glob(p).fullmatch(name) for p in patterns)

        return any_of(self.include) and not any_of(self.exclude)


def split_target_path(path: str) -> tuple[str, str]:
    """A target directory path as (root, key template before the prefix): the root is what
    precedes the first `{bucket}` segment (what the worker pods mount), the rest is part of
    every key (``/backup/{bucket}`` -> ``("/backup", "{bucket}/")``)."""
    segments = path.rstrip("/").split("/")
    for index, segment in enumerate(segments):
        if "{" in segment:
            root = "/".join(segments[:index]) or "/"
            return root, "/".join(segments[index:]) + "/"
    return path.rstrip("/") or "/", ""


@dataclass(frozen=True)
class MigrationContext:
    """Everything the steps need that does not change while a migration runs."""

    name: str
    spec: ObjectMigrationSpec
    source: Endpoint
    target: Endpoint
    selection: Selection
    metadata_rules: tuple[MetadataRule, ...]
    server_side: bool
    source_customer_key: bytes | None
    target_customer_key: bytes | None
    bandwidth_limit: int | None
    restore_poll_seconds: float
    object_timeout_seconds: float
    metadata_change: MetadataChange = field(default_factory=MetadataChange)
    # The application's side: Secret values its steps need (never shown in reprs).
    hook_token: str | None = field(default=None, repr=False)
    backfill_dsn: str | None = field(default=None, repr=False)
    worklist_dsn: str | None = field(default=None, repr=False)
    #: What each store lacks, learned this run by every client of it ("source", "target";
    #: one shared object when both sides are one store).
    features: dict[str, StoreFeatures] = field(default_factory=dict, compare=False)
    #: A directory source or target: its root (where the pods mount its claim).
    source_root: str | None = None
    target_root: str | None = None
    #: The part of a target directory's path after its root: `{bucket}/` and the like.
    target_path_template: str = ""
    target_min_free: int = 0
    buckets: BucketFilter | None = None

    @classmethod
    def resolve(
        cls,
        migration: ObjectMigration,
        secrets: SecretSource,
        config_maps: ConfigMapSource | None = None,
    ) -> MigrationContext:
        """Resolve the spec of ``migration``; raises on missing Secret or ConfigMap keys,
        bad filters or CA bundles."""
        spec = migration.spec
        source = endpoint_of("source", spec.source, secrets, config_maps)
        target = endpoint_of("target", spec.target, secrets, config_maps)
        mode = spec.copy_.mode
        application = application_secrets(spec, secrets)
        shared = same_store(source, target)
        source_features = StoreFeatures(
            store_name(source, "source and target" if shared else "source")
        )
        features = {
            "source": source_features,
            "target": source_features if shared else StoreFeatures(store_name(target, "target")),
        }
        directory = spec.source.filesystem is not None or spec.target.filesystem is not None
        target_root = path_template = None
        if spec.target.filesystem is not None:
            target_root, path_template = split_target_path(spec.target.filesystem.path)
        buckets = spec.source.buckets
        return cls(
            name=ledger_name(migration),
            spec=spec,
            source=source,
            target=target,
            selection=selection_of(spec),
            metadata_rules=metadata_rules_of(spec),
            server_side=not directory
            and (mode == "serverSide" or (mode == "auto" and same_store(source, target))),
            source_customer_key=customer_key(spec.source.customer_key_secret_ref, secrets),
            target_customer_key=customer_key(
                spec.target.encryption.customer_key_secret_ref, secrets
            ),
            bandwidth_limit=(
                parse_quantity(spec.copy_.bandwidth_limit)
                if spec.copy_.bandwidth_limit is not None
                else None
            ),
            restore_poll_seconds=(
                parse_duration(spec.restore.poll_interval).total_seconds() if spec.restore else 0
            ),
            object_timeout_seconds=parse_duration(spec.retry.object_timeout).total_seconds(),
            metadata_change=metadata_change_of(spec),
            hook_token=application.get("hook_token"),
            backfill_dsn=application.get("backfill_dsn"),
            worklist_dsn=application.get("worklist_dsn"),
            features=features,
            source_root=spec.source.filesystem.path if spec.source.filesystem else None,
            target_root=target_root,
            target_path_template=path_template or "",
            target_min_free=(
                parse_quantity(spec.target.filesystem.min_free_space)
                if spec.target.filesystem
                else 0
            ),
            buckets=BucketFilter(tuple(buckets.include), tuple(buckets.exclude))
            if buckets is not None
            else None,
        )

    @property
    def same_bucket(self) -> bool:
        """Whether source and target are one bucket (of one service, by any identity)."""
        return self.spec.same_bucket

    def in_place(self, key: str, target_key: str) -> bool:
        """Whether `key` is copied onto itself: the copy replaces the object it copies
        (or, in a versioned bucket, becomes its newest version)."""
        return key == target_key and self.same_bucket

    def source_bucket(self, bucket: str = "") -> str:
        """The source bucket of an object (a row's, for migrations of several buckets)."""
        return bucket or self.spec.source.bucket

    def target_key_for(
        self,
        key: str,
        last_modified: datetime,
        etag: str,
        *,
        bucket: str = "",
        sha256: str | None = None,
    ) -> str:
        """Where ``key`` is written on the target (``sha256``: for content-addressed
        layouts, the content's hash)."""
        facts = Facts(key, relative_key(key, self.spec.source.prefix), last_modified, etag, bucket)
        return render(self.target_path_template, facts) + target_key(
            key,
            source_prefix=self.spec.source.prefix,
            target_prefix=self.spec.target.prefix,
            template=self.spec.target.key_template,
            last_modified=last_modified,
            etag=etag,
            bucket=bucket,
            sha256=sha256,
        )

    def group_of(
        self, key: str, last_modified: datetime, etag: str, bucket: str = ""
    ) -> str | None:
        """The group of a source object (spec.groups.by), None without groups."""
        groups = self.spec.groups
        if groups is None:
            return None
        facts = Facts(key, relative_key(key, self.spec.source.prefix), last_modified, etag, bucket)
        return render(groups.by, facts)

    def manifest_key(self, group: str, bucket: str = "") -> str:
        """Where a group's manifest is written on the target."""
        groups = self.spec.groups
        assert groups is not None
        facts = Facts(group, group, datetime.min, "", bucket, group=group)
        return (
            render(self.target_path_template, facts)
            + self.spec.target.prefix
            + render(groups.manifest_key, facts)
        )

    @property
    def connections(self) -> int:
        """Pool size per client: every transfer may have all its parts in flight."""
        copy_spec = self.spec.copy_
        # Transfers with all their parts, plus one HEAD each for the objects verifying
        # beside them (see `ObjectPipeline._copy_and_verify`), plus the re-check listing.
        return copy_spec.concurrency * (copy_spec.part_concurrency + 1) + 4

    @asynccontextmanager
    async def clients(self) -> AsyncIterator[tuple[Side, Side]]:
        """Source and target stores (one shared store when both sides are one store); a
        directory side is opened as a tree (a target one created when missing)."""
        async with AsyncExitStack() as stack:
            source: Side
            target: Side
            if self.source_root is not None:
                source = await stack.enter_async_context(
                    open_file_store(self.source_root, writable=False)
                )
            else:
                source = await stack.enter_async_context(
                    open_store(self.source, self.connections, features=self.features.get("source"))
                )
            if self.target_root is not None:
                target = await stack.enter_async_context(self._target_tree())
            elif isinstance(source, Store) and same_store(self.source, self.target):
                target = source
            else:
                target = await stack.enter_async_context(
                    open_store(self.target, self.connections, features=self.features.get("target"))
                )
            yield source, target

    def _target_tree(self) -> AbstractAsyncContextManager[FileStore]:
        assert self.target_root is not None
        return open_file_store(self.target_root, writable=True, min_free=self.target_min_free)


def ledger_name(migration: ObjectMigration) -> str:
    """The ledger's name for a migration: ``namespace/name``, the same from both drivers."""
    return f"{migration.metadata.namespace}/{migration.metadata.name}"


async def check_application(context: MigrationContext) -> None:
    """Refuse, before anything is written, an application side that cannot work: a hook
    nobody listens at, a backfill table or column that does not exist or cannot hold its
    attribute. Raises `ApplicationError` naming the field."""
    spec = context.spec
    if spec.hooks is not None and spec.hooks.per_object is not None:
        await check_reachable(spec.hooks.per_object)
    if spec.backfill is not None and not spec.dry_run:
        assert context.backfill_dsn is not None
        try:
            conn = await connect(context.backfill_dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise ApplicationError(
                Reason.BACKFILL_INVALID,
                "spec.backfill.dsnSecretRef: cannot connect to the application's database: "
                + describe_error(error),
            ) from None
        try:
            await BackfillTable.open(spec.backfill, conn)
        finally:
            await conn.close()


async def check_access(context: MigrationContext) -> tuple[str, str] | None:
    """(code, message) when a bucket refuses these credentials outright, else None; and
    what each store lacks, asked once per run (into ``context.features``).

    A worker otherwise meets the target first through HEAD requests, whose 403 carries no
    error code: bad target credentials would fail every object as "Forbidden" instead of
    failing the migration once. A one-key listing of each side gets a real error code. Only
    configuration errors count; anything else (AccessDenied where listing is not allowed, a
    timeout) is left to the per-object steps. Whether a store has object tags is asked
    only when tags are to be preserved: otherwise no tagging request is sent at all.
    """
    spec = context.spec
    try:
        async with context.clients() as (source, target):
            for side, client, bucket in (
                ("source", source, spec.source),
                ("target", target, spec.target),
            ):
                try:
                    if isinstance(client, FileStore):
                        continue  # opening the tree checked it
                    if bucket.bucket:
                        await client.http.list_page(bucket.bucket, bucket.prefix, max_keys=1)
                        if spec.copy_.preserve_tags:
                            await probe_tags(client.http, bucket.bucket, bucket.prefix)
                    else:
                        await (await client.sdk()).list_buckets()
                except Exception as exc:
                    problem = classify(exc)
                    if problem.is_config_error:
                        where = f"s3 bucket {bucket.bucket!r}" if bucket.bucket else "s3 account"
                        return problem.code, f"{side} {where}: {problem.message}"
    except Exception as exc:
        problem = classify(exc)
        if problem.is_config_error:
            return problem.code, problem.message
        raise
    return None
