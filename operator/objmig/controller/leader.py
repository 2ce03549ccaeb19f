"""Leader election on a coordination.k8s.io/v1 Lease: one replica works, the others stand by.

Kopf's peering only pauses operators that see each other; it does not stop two of them from
acting in the gap. This is the algorithm of client-go's ``tools/leaderelection``, which
kube-controller-manager and kube-scheduler use:

* a candidate reads the Lease; it may take it when nobody holds it, when it holds it itself,
  or when the holder has not renewed it for ``leaseDurationSeconds`` - measured on the
  candidate's own monotonic clock from the moment it last saw the Lease change (its
  ``resourceVersion``), so clocks of different nodes never have to agree;
* writes are compare-and-swap updates (``resourceVersion``): of two candidates one wins;
* the leader renews every ``retry_period``; when it has not managed to for ``renew_deadline``
  (shorter than the lease duration) it stops - the process exits, and the kubelet starts it
  again as a standby - before anyone else may take over;
* on a clean shutdown the leader releases the Lease, so a standby takes over at its next try
  instead of waiting for the lease to expire.

With the defaults (15 s / 10 s / 2 s) a standby takes over at most ~17 s after the leader
died without releasing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

log = logging.getLogger(__name__)

LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0

# The renewal task of this process; the event loop keeps only a weak reference to tasks.
_background: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class Observed:
    """What a candidate needs of the Lease it read."""

    holder: str
    duration: float
    acquire_time: str | None
    transitions: int
    resource_version: str

    @classmethod
    def of(cls, lease: Any) -> Observed:
        """From a ``V1Lease`` as the client returns it."""
        spec = lease.spec
        acquired = spec.acquire_time
        return cls(
            holder=spec.holder_identity or "",
            duration=float(spec.lease_duration_seconds or LEASE_DURATION),
            acquire_time=_micro_time(acquired) if isinstance(acquired, datetime) else acquired,
            transitions=int(spec.lease_transitions or 0),
            resource_version=lease.metadata.resource_version,
        )


def may_take(observed: Observed | None, identity: str, observed_at: float, now: float) -> bool:
    """Whether ``identity`` may write itself into the Lease (take it, or keep it)."""
    if observed is None or observed.holder in ("", identity):
        return True
    return now >= observed_at + observed.duration


def lease_spec(
    observed: Observed | None, identity: str, *, now: datetime, duration: float
) -> dict[str, Any]:
    """The Lease spec the candidate writes: a renewal keeps the acquisition, a take-over
    starts a new one and counts a transition."""
    stamp = _micro_time(now)
    renewing = observed is not None and observed.holder == identity
    transitions = 0 if observed is None else observed.transitions + (0 if renewing else 1)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": int(duration),
        "acquireTime": (observed.acquire_time if renewing and observed else None) or stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def _micro_time(moment: datetime) -> str:
    # metav1.MicroTime wants exactly six fractional digits.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Takes, keeps and gives back one Lease for one identity."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._observed: Observed | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None

    def leading(self) -> bool:
        """True while the last successful renewal is younger than the renew deadline."""
        return (
            self._renewed_at is not None and self._clock() - self._renewed_at < self.renew_deadline
        )

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this identity holds the Lease afterwards."""
        now = self._clock()
        try:
            lease = await self._leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            return await self._write(None, now)
        observed = Observed.of(lease)
        if self._observed is None or observed.resource_version != self._observed.resource_version:
            self._observed, self._observed_at = observed, now
        if not may_take(observed, self.identity, self._observed_at, now):
            return False
        return await self._write(observed, now)

    async def _write(self, observed: Observed | None, now: float) -> bool:
        # The client serialises plain dicts as they are (as in kube.py).
        body: Any = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": lease_spec(
                observed, self.identity, now=datetime.now(UTC), duration=self.lease_duration
            ),
        }
        try:
            if observed is None:
                written = await self._leases.create_namespaced_lease(self.namespace, body)
            else:
                body["metadata"]["resourceVersion"] = observed.resource_version
                written = await self._leases.replace_namespaced_lease(
                    self.name, self.namespace, body
                )
        except ApiException as error:
            if error.status == 409:  # someone else wrote first
                return False
            raise
        self._observed, self._observed_at = Observed.of(written), now
        self._renewed_at = now
        return True

    async def acquire(self) -> None:
        """Wait until this identity holds the Lease."""
        waiting_for: str | None = None
        while True:
            try:
                if await self.try_acquire_or_renew():
                    log.info(
                        "leading: took Lease %s/%s as %s", self.namespace, self.name, self.identity
                    )
                    return
            except Exception as error:  # the API is down or slow: keep trying
                log.warning("Lease %s/%s: %s", self.namespace, self.name, error)
            holder = self._observed.holder if self._observed else None
            if holder != waiting_for:
                waiting_for = holder
                log.info(
                    "standing by: Lease %s/%s is held by %s", self.namespace, self.name, holder
                )
            await asyncio.sleep(self.retry_period * random.uniform(1.0, 1.2))  # noqa: S311

    async def hold(self, on_lost: Callable[[], object]) -> None:
        """Renew every retry period; call ``on_lost`` once renewing failed for the deadline."""
        while True:
            await asyncio.sleep(self.retry_period)
            assert self._renewed_at is not None
            left = self.renew_deadline - (self._clock() - self._renewed_at)
            try:
                if left > 0 and await asyncio.wait_for(self.try_acquire_or_renew(), left):
                    continue
            except Exception as error:
                log.warning("could not renew Lease %s/%s: %s", self.namespace, self.name, error)
            if not self.leading():
                on_lost()
                return

    async def release(self) -> None:
        """Give the Lease up (on shutdown), if this identity still holds it."""
        if not self.leading() or self._observed is None:
            return
        body: Any = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": self._observed.resource_version,
            },
            "spec": {
                **lease_spec(self._observed, self.identity, now=datetime.now(UTC), duration=1),
                "holderIdentity": "",
            },
        }
        try:
            await self._leases.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as error:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, error)
            return
        self._renewed_at = None
        log.info("released Lease %s/%s", self.namespace, self.name)


async def lead_from_env(api: client.ApiClient) -> LeaderElector | None:
    """With ``OBJMIG_LEADER_ELECTION=<namespace>/<name>``: wait for that Lease (a standby
    waits here), then keep renewing it in the background; exits the process if it is lost.
    Without: None, this process simply leads."""
    election = os.environ.get("OBJMIG_LEADER_ELECTION")
    if not election:
        return None
    namespace, _, name = election.partition("/")
    # The pod name says which replica leads; the suffix tells a restarted container apart.
    identity = f"{os.environ.get('HOSTNAME') or 'objmig'}_{os.urandom(4).hex()}"
    elector = LeaderElector(api, namespace, name, identity)
    await elector.acquire()
    task = asyncio.create_task(elector.hold(lambda: exit_on_lost_lease(elector)))
    _background.add(task)
    return elector


def exit_on_lost_lease(elector: LeaderElector) -> NoReturn:
    """Stop at once: another replica may take over any moment now, and two must never act.

    An orderly shutdown could still finish a handler and write a status; exiting cannot. The
    kubelet restarts the container, which then stands by.
    """
    log.critical(
        "lost Lease %s/%s (not renewed for %.0fs); exiting",
        elector.namespace,
        elector.name,
        elector.renew_deadline,
    )
    logging.shutdown()
    os._exit(1)
