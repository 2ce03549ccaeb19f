"""The lifecycle of a MigrationCleanup: whether a pass runs now, decided from what was observed.

The cleanup's counterpart of :mod:`objmig.engine.lifecycle`, used by both drivers: the
operator runs a pass as a Job, ``objmig cleanup`` in its own process. The migration-level
gates are reported whether or not anything can be deleted yet; a pass starts only when they
hold (its workers re-check every gate per object anyway). A changed spec starts a new pass
(:func:`objmig.engine.deletion_pass.take_up_spec`), which is how a finished cleanup runs again.

No I/O, no clock: ``now`` is observed like everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from objmig.api.conditions import Reason
from objmig.api.migration_cleanup import MigrationCleanupSpec
from objmig.engine.deletion import MigrationFacts, Verdict, unmet_gates
from objmig.engine.lifecycle import RunObservation
from objmig.ledger.state import CleanupState, Problem


@dataclass(frozen=True)
class CleanupObserved:
    """Everything :func:`decide_cleanup` looks at."""

    spec: MigrationCleanupSpec
    facts: MigrationFacts
    state: CleanupState
    now: datetime
    run: RunObservation | None = None  # this pass's run, where the driver has one


@dataclass(frozen=True)
class CleanupDecision:
    """What to do now, and the gates that do not hold (for the status)."""

    unmet: tuple[Verdict, ...] = field(default_factory=tuple)
    run_pass: bool = False
    fail: Problem | None = None


def decide_cleanup(observed: CleanupObserved) -> CleanupDecision:
    """The next step of one cleanup."""
    spec, state = observed.spec, observed.state
    # Leftovers are the migration's own failed attempts: no gate of the source's applies.
    unmet = tuple(unmet_gates(spec, observed.facts, observed.now)) if spec.what == "source" else ()
    if unmet or state.completed_at is not None or state.failed is not None:
        return CleanupDecision(unmet=unmet)
    run = observed.run
    if run is None:
        return CleanupDecision(run_pass=True)
    if run.failed:
        return CleanupDecision(
            fail=Problem(reason=Reason.CLEANUP_JOB_FAILED, message=run.failed_message or "")
        )
    return CleanupDecision()
