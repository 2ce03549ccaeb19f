"""Leader election against a real API server: one holder, take-over, hand-over, loss.

The operator's Lease logic (``objmig.controller.leader``) with short timings (lease 3 s,
renew deadline 2 s, retry 0.2 s) so each case takes seconds; the chart's operators use 15 s /
10 s / 2 s, and ``tests/k8s/test_node_operator.py`` runs two real replicas.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from objmig.controller.leader import LeaderElector
from tests.support.cluster import ControlPlane

pytestmark = pytest.mark.k8s

LEASE = "objmig-operator"
DURATION, DEADLINE, RETRY = 3.0, 2.0, 0.2
# How long a test waits for what comes within seconds on an idle machine: a guard against a
# hang, not a measure.
PATIENCE = 120.0


@pytest_asyncio.fixture
async def candidate(
    k8s_cluster: ControlPlane, k8s_namespace: str
) -> AsyncIterator[Callable[[str], LeaderElector]]:
    async with k8s_cluster.api_client() as api:

        def make(identity: str) -> LeaderElector:
            return LeaderElector(
                api, k8s_namespace, LEASE, identity,
                lease_duration=DURATION, renew_deadline=DEADLINE, retry_period=RETRY,
            )  # fmt: skip

        yield make


def lease(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", "lease", LEASE, "-n", namespace)["spec"])


def record_tries(elector: LeaderElector, monkeypatch: pytest.MonkeyPatch) -> list[Try]:
    """Each attempt ``elector`` makes from now on: when it started, and whether it won."""
    tries: list[Try] = []
    attempt = elector.try_acquire_or_renew

    async def recorded() -> bool:
        started = time.monotonic()
        try:
            won = await attempt()
        except Exception:
            tries.append(Try(started, won=False))
            raise
        tries.append(Try(started, won=won))
        return won

    monkeypatch.setattr(elector, "try_acquire_or_renew", recorded)
    return tries


@dataclass(frozen=True)
class Try:
    started: float
    won: bool


async def test_of_candidates_starting_together_exactly_one_takes_the_lease(
    k8s_cluster: ControlPlane, k8s_namespace: str, candidate: Callable[[str], LeaderElector]
) -> None:
    electors = [candidate(f"replica-{i}") for i in range(5)]
    won = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
    assert won.count(True) == 1
    winner = electors[won.index(True)]
    spec = lease(k8s_cluster, k8s_namespace)
    assert spec["holderIdentity"] == winner.identity
    assert spec["leaseTransitions"] == 0
    # The losers keep losing while the holder renews.
    assert await winner.try_acquire_or_renew()
    assert not any(
        await asyncio.gather(*(e.try_acquire_or_renew() for e in electors if e is not winner))
    )


async def test_a_standby_takes_over_a_lease_its_holder_stopped_renewing(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    candidate: Callable[[str], LeaderElector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader, standby = candidate("leader"), candidate("standby")
    # The leader takes the Lease and dies without a word: no release, no renewal.
    await leader.acquire()
    tries = record_tries(standby, monkeypatch)
    assert not await standby.try_acquire_or_renew()
    # The standby first saw the Lease as it stays within its first try: it runs out then.
    first = tries[0].started, time.monotonic()
    await asyncio.wait_for(standby.acquire(), PATIENCE)
    # Not before the lease ran out, and at the first try after: on the standby's own clock,
    # whatever the machine's load made of its retry period.
    assert tries[-1].won
    assert time.monotonic() >= first[0] + DURATION
    assert not any(t.started >= first[1] + DURATION for t in tries[:-1]), tries
    spec = lease(k8s_cluster, k8s_namespace)
    assert spec["holderIdentity"] == "standby"
    assert spec["leaseTransitions"] == 1
    # The old leader knows it is no longer leading, and cannot renew any more.
    assert not leader.leading()
    assert not await leader.try_acquire_or_renew()


async def test_a_released_lease_goes_to_the_standby_at_its_next_try(
    k8s_cluster: ControlPlane, k8s_namespace: str, candidate: Callable[[str], LeaderElector]
) -> None:
    leader, standby = candidate("leader"), candidate("standby")
    await leader.acquire()
    assert not await standby.try_acquire_or_renew()
    await leader.release()
    assert not leader.leading()
    assert lease(k8s_cluster, k8s_namespace)["holderIdentity"] in (None, "")
    assert await standby.try_acquire_or_renew()
    assert lease(k8s_cluster, k8s_namespace)["leaseTransitions"] == 1


async def test_a_leader_whose_lease_was_taken_calls_on_lost_within_the_renew_deadline(
    k8s_cluster: ControlPlane,
    k8s_namespace: str,
    candidate: Callable[[str], LeaderElector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leader = candidate("leader")
    await leader.acquire()
    tries = record_tries(leader, monkeypatch)
    lost = asyncio.Event()
    renewing = asyncio.create_task(leader.hold(on_lost=lost.set))
    # Someone else writes the Lease (as a partitioned leader's successor would).
    k8s_cluster.kubectl(
        "patch", "lease", LEASE, "-n", k8s_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"holderIdentity": "usurper"}}),
    )  # fmt: skip
    taken = time.monotonic()
    await asyncio.wait_for(lost.wait(), PATIENCE)
    assert not leader.leading()
    # Within the renew deadline: its last renewal was before the patch, and its rounds come
    # at least a retry period apart, so the rounds that still try fit in the deadline (and
    # one more may have begun before the patch) - however late the load made each of them.
    since = [t for t in tries if t.started >= taken]
    assert len(since) <= DEADLINE / RETRY + 2, (taken, tries)
    await renewing  # hold() returns after calling on_lost
