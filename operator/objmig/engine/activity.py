"""What a worker reports about itself while it works (see ``Ledger.activity``).

Object states tell what is finished; these reports tell what is under way. A worker counts
the bytes it writes to the target (also of objects not finished yet), its retries and
their last error, and reports the totals every few seconds. The status sums them into the
rate and the ETA, the retry counter, and the leases of workers that fell silent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from objmig.ledger.models import ACTIVE_STATES, StepResult, WorkerReport

if TYPE_CHECKING:
    from objmig.ledger import Ledger

#: Seconds between two reports of one worker.
REPORT_SECONDS = 2.0


class ActivityMeter:
    """One worker's counters, and whether they changed since the last report."""

    def __init__(self) -> None:
        self._moved = 0
        self._in_flight: dict[int, int] = {}
        self._retries = 0
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        # Bumped by every change; a report is due while the last one sent is older. The
        # first report is due at once: it says the worker is there.
        self._version = 1
        self._sent = 0

    def moved(self, object_id: int, nbytes: int) -> None:
        """``nbytes`` more of object ``object_id`` went to the target."""
        self._moved += nbytes
        self._in_flight[object_id] = self._in_flight.get(object_id, 0) + nbytes
        self._version += 1

    def finished(self, object_id: int, result: StepResult) -> None:
        """An attempt at the object ended with ``result``: its bytes are no longer in flight."""
        if self._in_flight.pop(object_id, None) is not None:
            self._version += 1
        if retry_error(result) is not None:
            self._retries += 1
            self._last_error = retry_error(result)
            self._last_error_at = datetime.now(UTC)
            self._version += 1

    def abandoned(self, object_id: int) -> None:
        """The object went back without a result (its lease was lost, the worker stops)."""
        if self._in_flight.pop(object_id, None) is not None:
            self._version += 1

    def report(self) -> tuple[int, WorkerReport] | None:
        """The totals and their version, when they changed since the last report sent."""
        if self._version == self._sent:
            return None
        return self._version, WorkerReport(
            bytes_moved=self._moved,
            bytes_in_flight=sum(self._in_flight.values()),
            retries=self._retries,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    def sent(self, version: int) -> None:
        """The report of ``version`` is stored."""
        self._sent = max(self._sent, version)

    async def send(self, ledger: Ledger, migration_id: int, owner: str) -> None:
        """Store the totals when they changed; a failure leaves them due for next time."""
        due = self.report()
        if due is None:
            return
        version, report = due
        await ledger.report_activity(migration_id, owner, report)
        self.sent(version)


def retry_error(result: StepResult) -> str | None:
    """The error of an attempt that ended to be tried again (None: it did not)."""
    if result.last_error is not None and result.state in ACTIVE_STATES:
        return result.last_error
    return None
