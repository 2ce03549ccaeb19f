"""``objmig run`` and the operator go through the same lifecycle: the same phases and conditions.

Each scenario is a list of steps, each a change of the spec (and of the world, where the
scenario needs one). Both drivers run the same scenario on buckets and application
databases of their own: ``objmig run``'s driver in-process until it rests, the operator on
the control plane until its status rests. After every step the two must show the same phase
and the same condition types, statuses and reasons. Steps that stop a copy mid-way (a
failure budget exceeded) compare only what the lifecycle decides (phase, Paused, Failed,
CutOver, CutoverReady, Ready): how many objects had been copied when the pause took hold is
a race in either driver, and the Copied and Verified conditions describe exactly that.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from objmig.api.loading import parse_resource
from objmig.api.migration import ObjectMigration
from objmig.engine.local_run import LocalRun
from objmig.engine.secrets import env_name
from objmig.ledger import Ledger
from objmig.local.postgres import EmbeddedPostgres
from objmig.local.s3server import LocalS3Server
from tests.fixtures.operator import OperatorProcess
from tests.fixtures.s3 import S3Seeder
from tests.integration.engine_support import secrets_for
from tests.k8s.test_operator import (
    SECRET,
    apply_secret,
    create_secret,
    get_om,
    moto_keys,
    seed_many,
    wait_for,
)
from tests.support.catalog import catalog_action, catalog_database, refuse_location
from tests.support.cluster import ControlPlane
from tests.support.s3proxy import Fail, S3FaultProxy

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

#: What a driver shows once it rests: the phase, and each condition's status and reason.
Snapshot = tuple[str, dict[str, tuple[str, str]]]
#: The conditions the lifecycle decides, whatever the race between copies and a pause.
LIFECYCLE = frozenset({"Paused", "Failed", "CutOver", "CutoverReady", "Ready"})


@dataclass
class World:
    """One driver's buckets and application database, and the fault proxy in front."""

    source: str
    target: str
    app_dsn: str
    app: asyncpg.Connection
    proxy: S3FaultProxy
    seed: S3Seeder


@dataclass(frozen=True)
class Step:
    """A change of the spec (a JSON merge patch), after a change of the world if any."""

    spec: dict[str, Any]
    world: Callable[[World], Awaitable[None]] | None = None
    mid_copy: bool = False  # the step rests with a copy stopped mid-way


@dataclass(frozen=True)
class Scenario:
    name: str
    steps: list[Step]
    objects: int = 6
    denied: int = 0  # objects whose target writes the proxy refuses from the start
    refused_row: str | None = None  # a catalog key the application refuses to move
    phases: list[str] = field(default_factory=list)  # where each step rests


async def _add_object(world: World) -> None:
    await world.seed.put_object(world.source, "k/written-between-steps", 70)


async def _let_the_application_accept(world: World) -> None:
    await world.app.execute("DROP TRIGGER refuse ON assets")


async def _stop_denying(world: World) -> None:
    world.proxy.clear()


_CATALOG = {"catalog": catalog_action(batchSize=2)}

SCENARIOS = [
    Scenario(
        "dry-run-then-real",
        [Step({"dryRun": True}), Step({"dryRun": False})],
        phases=["Completed", "CutOver"],
    ),
    Scenario(
        "budget-pause-then-resume",
        [
            Step({"failurePolicy": {"maxFailedObjects": 2}}, mid_copy=True),
            Step(
                {"failurePolicy": {"maxFailedObjects": 20, "maxFailureRatio": 0.9}},
                world=_stop_denying,
            ),
        ],
        objects=8,
        denied=6,
        phases=["Paused", "CutOver"],
    ),
    Scenario(
        "rollback-then-re-cutover-with-catch-up-rounds",
        [
            Step({"cutover": {**_CATALOG, "catchUp": True}}),
            Step({"cutover": {"rollback": True}}),
            Step({"cutover": {"rollback": False}}, world=_add_object),
        ],
        phases=["CutOver", "AwaitingCutover", "CutOver"],
    ),
    Scenario(
        "cutover-stopping-half-way-then-finished",
        [
            Step({"cutover": _CATALOG}),
            # Editing the spec is how an operator user retries; objmig run just runs again.
            Step({"cutover": {"catalog": {"batchSize": 3}}}, world=_let_the_application_accept),
        ],
        refused_row="k/4",
        phases=["Failed", "CutOver"],
    ),
    Scenario(
        "cutover-stopping-half-way-then-rolled-back",
        [
            Step({"cutover": _CATALOG}),
            Step({"cutover": {"rollback": True}}),
        ],
        refused_row="k/4",
        phases=["Failed", "AwaitingCutover"],
    ),
]


def snapshot(status: dict[str, Any], *, lifecycle_only: bool = False) -> Snapshot:
    conditions = {
        c["type"]: (c["status"], c["reason"])
        for c in status.get("conditions", [])
        if not lifecycle_only or c["type"] in LIFECYCLE
    }
    return status.get("phase", ""), conditions


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def spec_for(world: World, endpoint: str, target_endpoint: str) -> dict[str, Any]:
    side = {
        "addressingStyle": "path",
        "region": "us-east-1",
        "credentialsSecretRef": {"name": SECRET},
    }
    return {
        "source": {**side, "endpoint": endpoint, "bucket": world.source},
        "target": {**side, "endpoint": target_endpoint, "bucket": world.target},
        "retry": {"attempts": 2, "backoff": {"initial": "50ms", "max": "200ms"}},
    }


@contextlib.asynccontextmanager
async def world_for(
    scenario: Scenario, seed: S3Seeder, postgres: EmbeddedPostgres, proxy: S3FaultProxy
) -> AsyncIterator[World]:
    source, target = await seed.bucket(), await seed.bucket()
    keys = [f"k/{i}" for i in range(scenario.objects - scenario.denied)]
    keys += [f"deny/{i}" for i in range(scenario.denied)]
    await seed_many(seed, source, keys, 50)
    if scenario.denied:
        proxy.add_rule(Fail(403, "AccessDenied"), method="PUT", bucket=target, key="deny/*")
    async with catalog_database(postgres, keys, source) as app_dsn:
        app = await asyncpg.connect(app_dsn)
        try:
            if scenario.refused_row is not None:
                await refuse_location(app, f"s3://{target}/{scenario.refused_row}")
            yield World(source, target, app_dsn, app, proxy, seed)
        finally:
            await app.close()


async def run_locally(
    scenario: Scenario, world: World, ledger: Ledger, server: LocalS3Server
) -> list[Snapshot]:
    endpoint = server.endpoint()
    secrets = secrets_for(endpoint, **{env_name("app-db", "dsn"): world.app_dsn})
    spec = spec_for(world, server.endpoint_url, world.proxy.endpoint_url)
    seen: list[Snapshot] = []
    for step in scenario.steps:
        if step.world is not None:
            await step.world(world)
        spec = merge(spec, step.spec)
        resource = parse_resource(
            {
                "apiVersion": "objmig.dev/v1alpha1",
                "kind": "ObjectMigration",
                "metadata": {"name": "m", "namespace": "local"},
                "spec": spec,
            }
        )
        assert isinstance(resource, ObjectMigration)
        result = await LocalRun(ledger, resource, secrets, status_interval=0.2).run()
        seen.append(snapshot(result.status.to_wire(), lifecycle_only=step.mid_copy))
    return seen


async def run_on_the_operator(
    scenario: Scenario,
    world: World,
    cluster: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    server: LocalS3Server,
    expected: list[Snapshot],
) -> list[Snapshot]:
    create_secret(cluster, namespace, *moto_keys(server))
    apply_secret(cluster, namespace, "app-db", {"dsn": world.app_dsn})
    spec = spec_for(world, server.endpoint_url, world.proxy.endpoint_url)
    seen: list[Snapshot] = []
    for step, wanted in zip(scenario.steps, expected, strict=True):
        if step.world is not None:
            await step.world(world)
        spec = merge(spec, step.spec)
        cluster.apply_yaml(
            {
                "apiVersion": "objmig.dev/v1alpha1",
                "kind": "ObjectMigration",
                "metadata": {"name": "m"},
                "spec": spec,
            },
            namespace=namespace,
        )
        generation = get_om(cluster, namespace, "m")["metadata"]["generation"]

        def rests_as_wanted(
            resource: dict[str, Any],
            generation: int = generation,
            wanted: Snapshot = wanted,
            lifecycle_only: bool = step.mid_copy,
        ) -> bool:
            status = resource.get("status", {})
            return status.get("observedGeneration") == generation and (
                snapshot(status, lifecycle_only=lifecycle_only) == wanted
            )

        # Wait for the local driver's resting point; on a timeout, what the operator shows
        # instead is in the error.
        resource = wait_for(
            cluster, namespace, "m", rests_as_wanted,
            what=f"{scenario.name}: {wanted}", timeout=120, operator=operator,
        )  # fmt: skip
        seen.append(snapshot(resource["status"], lifecycle_only=step.mid_copy))
    return seen


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_both_drivers_go_through_the_same_phases_and_conditions(
    scenario: Scenario,
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    objmig_operator: OperatorProcess,
    postgres_server: EmbeddedPostgres,
    s3_server: LocalS3Server,
    s3_proxy: S3FaultProxy,
    s3_seed: S3Seeder,
    ledger: Ledger,
) -> None:
    async with world_for(scenario, s3_seed, postgres_server, s3_proxy) as world:
        local = await run_locally(scenario, world, ledger, s3_server)
    s3_proxy.clear()
    async with world_for(scenario, s3_seed, postgres_server, s3_proxy) as world:
        operated = await run_on_the_operator(
            scenario, world, k8s_cluster, k8s_namespace, objmig_operator, s3_server, local
        )

    assert [phase for phase, _ in local] == scenario.phases
    assert operated == local
