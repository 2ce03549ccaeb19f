"""Prometheus metrics of the operator, served on ``/metrics``."""

from __future__ import annotations

from contextlib import suppress
from typing import get_args

from prometheus_client import Counter, Gauge

from objmig.api.conditions import find_condition
from objmig.api.migration import ObjectMigrationStatus, Phase
from objmig.ledger import Counts, ObjectState

PHASES: tuple[Phase, ...] = get_args(Phase)
LABELS = ("namespace", "migration")

OBJECTS = Gauge("objmig_objects", "Objects per ledger state.", [*LABELS, "state"])
BYTES = Gauge("objmig_bytes", "Bytes per ledger state.", [*LABELS, "state"])
IN_FLIGHT = Gauge("objmig_objects_in_flight", "Objects leased by a worker right now.", LABELS)
THROUGHPUT = Gauge("objmig_throughput_bytes_per_second", "Recent copy throughput.", LABELS)
PHASE = Gauge("objmig_phase", "1 for the migration's current phase.", [*LABELS, "phase"])
CUTOVER_READY = Gauge("objmig_cutover_ready", "1 when the cutover gates hold.", LABELS)
CUT_OVER = Gauge("objmig_cut_over", "1 when the migration has cut over.", LABELS)
STATUS_PATCHES = Counter("objmig_status_patches", "Status patches written by the operator.", LABELS)
RECONCILES = Counter("objmig_reconciles", "Reconcile passes.", LABELS)
CLEANUP_LABELS = ("namespace", "cleanup")
CLEANUP_GATES_PASSED = Gauge(
    "objmig_cleanup_gates_passed", "1 when every gate of a cleanup holds.", CLEANUP_LABELS
)
CLEANUP_DELETED = Gauge(
    "objmig_cleanup_deleted_objects", "Source objects a cleanup has deleted.", CLEANUP_LABELS
)


def observe(namespace: str, name: str, counts: Counts, status: ObjectMigrationStatus) -> None:
    """Publish one migration's numbers."""
    for state, count in counts.by_state.items():
        OBJECTS.labels(namespace, name, state.value).set(count.objects)
        BYTES.labels(namespace, name, state.value).set(count.bytes)
    IN_FLIGHT.labels(namespace, name).set(counts.in_flight.objects)
    THROUGHPUT.labels(namespace, name).set(status.progress.bytes_per_second)
    for phase in PHASES:
        PHASE.labels(namespace, name, phase).set(1 if status.phase == phase else 0)
    ready = find_condition(status.conditions, "CutoverReady")
    CUTOVER_READY.labels(namespace, name).set(1 if ready and ready.status == "True" else 0)
    cut = find_condition(status.conditions, "CutOver")
    CUT_OVER.labels(namespace, name).set(1 if cut and cut.status == "True" else 0)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted migration's series."""
    for gauge in (IN_FLIGHT, THROUGHPUT, CUTOVER_READY, CUT_OVER):
        with suppress(KeyError):
            gauge.remove(namespace, name)
    for state in ObjectState:
        for labelled in (OBJECTS, BYTES):
            with suppress(KeyError):
                labelled.remove(namespace, name, state.value)
    for phase in PHASES:
        with suppress(KeyError):
            PHASE.remove(namespace, name, phase)


def forget_cleanup(namespace: str, name: str) -> None:
    """Drop a deleted cleanup's series."""
    for gauge in (CLEANUP_GATES_PASSED, CLEANUP_DELETED):
        with suppress(KeyError):
            gauge.remove(namespace, name)
