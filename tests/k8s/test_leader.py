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
from typing import Any

import pytest
import pytest_asyncio

from objmig.controller.leader import LeaderElector
from tests.support.cluster import ControlPlane

pytestmark = pytest.mark.k8s

LEASE = "objmig-operator"
DURATION, DEADLINE, RETRY = 3.0, 2.0, 0.2


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
    k8s_cluster: ControlPlane, k8s_namespace: str, candidate: Callable[[str], LeaderElector]
) -> None:
    leader, standby = candidate("leader"), candidate("standby")
    await leader.acquire()
    renewing = asyncio.create_task(leader.hold(on_lost=lambda: None))
    assert not await standby.try_acquire_or_renew()
    # The leader dies without a word: no release, its renewals just stop.
    renewing.cancel()
    died = time.monotonic()
    await asyncio.wait_for(standby.acquire(), DURATION * 3)
    waited = time.monotonic() - died
    # Not before the lease ran out (as the standby saw it last change), and soon after.
    assert DURATION - RETRY * 2 <= waited <= DURATION + 2, waited
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
    k8s_cluster: ControlPlane, k8s_namespace: str, candidate: Callable[[str], LeaderElector]
) -> None:
    leader = candidate("leader")
    await leader.acquire()
    lost = asyncio.Event()
    renewing = asyncio.create_task(leader.hold(on_lost=lost.set))
    # Someone else writes the Lease (as a partitioned leader's successor would).
    k8s_cluster.kubectl(
        "patch", "lease", LEASE, "-n", k8s_namespace, "--type=merge",
        "-p", json.dumps({"spec": {"holderIdentity": "usurper"}}),
    )  # fmt: skip
    taken = time.monotonic()
    await asyncio.wait_for(lost.wait(), DEADLINE * 3)
    assert time.monotonic() - taken <= DEADLINE + RETRY * 3
    assert not leader.leading()
    await renewing  # hold() returns after calling on_lost
