"""Showing a migration's progress: a live display on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from objmig.api.conditions import find_condition
from objmig.api.migration import ObjectMigrationStatus


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


#: Longest last error the progress line shows (the status and the report keep all of it).
ERROR_CHARS = 120


def summary_line(name: str, status: ObjectMigrationStatus) -> str:
    """One line: phase, objects and bytes done, rate, ETA, failures, retries."""
    p = status.progress
    parts = [
        f"{name}: {status.phase}",
        f"{p.objects_done} objects",
        f"{human_bytes(p.bytes.processed)}/{human_bytes(p.bytes.total)} ({p.percent}%)",
        f"{human_bytes(p.bytes_per_second)}/s",
    ]
    if p.eta:
        parts.append(f"ETA {p.eta}")
    if p.objects.in_progress:
        parts.append(f"{p.objects.in_progress} in flight")
    if p.objects.stalled:
        parts.append(f"{p.objects.stalled} stalled (their worker is gone)")
    if p.objects.failed:
        parts.append(f"{p.objects.failed} failed")
    if p.objects.skipped:
        parts.append(f"{p.objects.skipped} skipped")
    steps = status.steps
    if steps is not None and steps.missing:
        parts.append(f"{steps.missing} missing")
    if p.retries:
        retried = f"{p.retries} retries"
        if p.last_retryable_error:
            retried += f", last: {_shorten(p.last_retryable_error)}"
        parts.append(retried)
    if status.content is not None and status.content.deduplicated:
        content = status.content
        parts.append(f"{content.deduplicated} deduplicated ({human_bytes(content.bytes_saved)})")
    if status.health.summary != "Healthy":
        parts.append(status.health.summary)
    return " | ".join(parts)


def _shorten(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 3] + "..."


def status_table(name: str, status: ObjectMigrationStatus) -> Table:
    """Counters and conditions as a table, for the live display and ``objmig status``."""
    table = Table(title=f"{name} — {status.phase}", show_header=True, expand=False)
    table.add_column("")
    table.add_column("objects", justify="right")
    table.add_column("bytes", justify="right")
    p = status.progress
    for label, attr in (
        ("total", "total"),
        ("processed", "processed"),
        ("remaining", "remaining"),
        ("pending", "pending"),
        ("in progress", "in_progress"),
        ("stalled", "stalled"),
        ("verified", "succeeded"),
        ("failed", "failed"),
        ("skipped", "skipped"),
    ):
        if attr == "stalled" and not p.objects.stalled:
            continue
        table.add_row(label, str(getattr(p.objects, attr)), human_bytes(getattr(p.bytes, attr)))
    table.add_row("complete", f"{p.percent}%", "")
    rate = f"{human_bytes(p.bytes_per_second)}/s, {p.objects_per_second} objects/s"
    table.add_row("rate", rate, f"ETA {p.eta}" if p.eta else "")
    if p.retries:
        table.add_row("retries", str(p.retries), _shorten(p.last_retryable_error or ""))
    steps = status.steps
    if steps is not None:
        for label, value in (
            ("missing", steps.missing),
            ("hooks done", steps.hooks_done),
            ("hooks pending", steps.hooks_pending),
            ("backfill written", steps.backfill_written),
            ("backfill already set", steps.backfill_already_set),
            ("backfill no row", steps.backfill_no_row),
            ("backfill conflicts", steps.backfill_conflicts),
        ):
            table.add_row(label, str(value), "")
    if status.verification.etag_unproven:
        by = ", ".join(f"{n} by {how}" for how, n in status.verification.etag_unproven_by.items())
        table.add_row("not by ETag", str(status.verification.etag_unproven), by)
    content = status.content
    if content is not None:
        table.add_row("contents", str(content.contents), "stored once each")
        table.add_row(
            "deduplicated", str(content.deduplicated), f"{human_bytes(content.bytes_saved)} saved"
        )
    if status.groups is not None:
        table.add_row(
            "manifests", f"{status.groups.manifests_written}/{status.groups.groups}", "groups"
        )
    for type_ in (
        "CutoverReady",
        "CutOver",
        "Paused",
        "Failed",
        "Degraded",
        "Stalled",
        "TargetSpaceLow",
    ):
        condition = find_condition(status.conditions, type_)
        if condition is not None and (condition.status == "True" or type_ == "CutoverReady"):
            table.add_row(type_, condition.status, f"{condition.reason}: {condition.message}")
    return table


def buckets_table(status: ObjectMigrationStatus) -> Table:
    """Per bucket (a migration of several): objects, bytes, verified, failed, digest."""
    table = Table(title="buckets", show_header=True, expand=False)
    for column in ("bucket", "objects", "bytes", "verified", "failed", "digest"):
        table.add_column(column, justify="left" if column in ("bucket", "digest") else "right")
    for bucket in status.buckets:
        table.add_row(
            bucket.name,
            str(bucket.objects),
            human_bytes(bucket.bytes),
            str(bucket.verified),
            str(bucket.failed),
            bucket.digest or "",
        )
    if status.buckets_truncated:
        table.add_row("...", "", "", "", "", "(more: objmig report --by-bucket)")
    return table


class ProgressView:
    """Receives status snapshots; renders live on a TTY, else a line every ``interval`` s."""

    def __init__(self, name: str, *, interval: float = 5.0, console: Console | None = None) -> None:
        self._name = name
        self._console = console or Console(stderr=True)
        self._live: Live | None = None
        self._interval = interval
        self._last_line = 0.0
        self._tty = self._console.is_terminal and sys.stderr.isatty()

    def __enter__(self) -> ProgressView:
        if self._tty:
            self._live = Live(console=self._console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def update(self, status: ObjectMigrationStatus) -> None:
        """Show a new snapshot."""
        if self._live is not None:
            self._live.update(status_table(self._name, status))
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            self._console.print(summary_line(self._name, status), highlight=False)
