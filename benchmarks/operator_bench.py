"""The operator at parallelism 4 on 100,000 objects (issue 22.4): wall time to the cutover,
claims per second, status patches per CR, the CR's size, requests per object.

    .venv/bin/python benchmarks/operator_bench.py                  # 100,000 x 1 KiB
    .venv/bin/python benchmarks/operator_bench.py --count 5000     # a quick look

What runs, all on loopback: the test control plane (etcd, kube-apiserver,
kube-controller-manager and the pod runner, which starts the worker Jobs' pods as local
processes: tests/support/cluster.py, tests/support/podrunner.py), one ``objmig operator``
for the benchmark's namespace (tests/fixtures/operator.py, status interval 5 s as the
operator's default), an embedded PostgreSQL ledger (with pg_stat_statements loaded) and
MinIO for the source and the target. The source is seeded with MinIO's tar extraction
(bench_support.seed_by_tar) before anything is timed.

The ObjectMigration: ``workers.parallelism`` 4, ``copy`` stream with concurrency 32,
``verify`` etag, ``cutover`` Automatic. Measured:

* wall time from ``kubectl apply`` of the ObjectMigration to the watch event that carries
  the condition ``CutOver=True``;
* from the ledger: objects verified per second (``objects.verified_at``) and over the copy
  pods' lifetime (their containers' startedAt / finishedAt, whole seconds); claims
  (calls of the claim statement, from pg_stat_statements), claims per second over the copy
  pods' lifetime, rows per claim and time per claim; the statements the ledger spent most
  time in;
* CPU seconds, between the apply and the moment every worker pod ended, of the ledger (the
  postmaster and its backends), the worker pods (the pod runner's children), MinIO, the
  operator and the control plane;
* every change of the CR's resourceVersion seen by a watch, with the time it arrived and
  whether its status changed: the number of status changes and the min / median / max
  interval between them, and the intervals shorter than the status interval less
  ``--tolerance`` (reported, not asserted);
* the CR's size (compact JSON, as ``kubectl get -o json`` shows it: without managedFields)
  at its largest during the run and at the end;
* requests per object, counted by MinIO.

Every object is checked on the target afterwards (a listing: count, sizes and ETags).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_support import MetricsMinio, MinioRequests, check_copies, minio_client, seed_by_tar
from tests.fixtures.operator import OperatorProcess
from tests.k8s.test_operator import GROUP_PLURAL, create_secret
from tests.support.cluster import ControlPlane, find_bin_dir, wait_until
from tests.support.podrunner import ApiError, KubeClient

from objmig.local.postgres import EmbeddedPostgres

NAMESPACE = "opbench"
NAME = "opbench"
SOURCE = "opbench-src"
TARGET = "opbench-dst"
CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
OM_PATH = f"/apis/objmig.dev/v1alpha1/namespaces/{NAMESPACE}/objectmigrations"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--parallelism", type=int, default=4, help="spec.workers.parallelism")
    parser.add_argument("--concurrency", type=int, default=32, help="spec.copy.concurrency")
    parser.add_argument("--size", type=int, default=1024, help="bytes per object")
    parser.add_argument("--prefixes", type=int, default=100)
    parser.add_argument("--tar-objects", type=int, default=50_000, help="objects per seed tar")
    parser.add_argument(
        "--status-interval", type=float, default=5.0, help="OBJMIG_STATUS_INTERVAL (s)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.5,
        help="status changes closer than the interval less this count as violations (s)",
    )
    parser.add_argument("--fast-ledger", action="store_true", help="ledger without fsync")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds to the cutover")
    parser.add_argument("--workdir", type=Path, help="keep the logs, the ledger and the cluster")
    parser.add_argument("--json-out", type=Path, help="write the figures here as JSON")
    return parser.parse_args(argv)


class StatementsPostgres(EmbeddedPostgres):
    """EmbeddedPostgres with pg_stat_statements loaded (time and calls per statement)."""

    def _settings(self, port: int) -> list[str]:
        return [*super()._settings(port), "-c shared_preload_libraries=pg_stat_statements"]


# -- CPU ---------------------------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and every descendant already reaped.

    A process's children_user / children_system count the children it has waited for (and
    what they had counted of theirs), which are no longer in the tree: nothing is counted
    twice.
    """
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def own_cpu(pid: int) -> float:
    """CPU seconds of one process alone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


class CpuMeter:
    """CPU seconds per part of the set-up, read at two moments."""

    def __init__(
        self, cluster: ControlPlane, ledger: EmbeddedPostgres, minio: MetricsMinio, operator: int
    ) -> None:
        running = ledger.running()
        assert running is not None
        assert minio.pid is not None
        self.trees = {"ledger": running.pid, "minio": minio.pid, "operator": operator}
        for component in cluster.components:
            if component.proc is not None:
                self.trees[component.name] = component.proc.pid

    def read(self) -> dict[str, float]:
        out = {name: tree_cpu(pid) for name, pid in self.trees.items()}
        runner = self.trees.get("pod-runner")
        if runner is not None:
            # The pods are the runner's children; the runner itself plays kubelet.
            mine = own_cpu(runner)
            out["workers"] = out.pop("pod-runner") - mine
            out["pod-runner"] = mine
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}


# -- the CR, watched ---------------------------------------------------------------------------


def compact_size(resource: dict[str, Any]) -> int:
    """Bytes of the resource as compact JSON, without managedFields (as kubectl shows it)."""
    shown = {**resource, "metadata": dict(resource.get("metadata") or {})}
    shown["metadata"].pop("managedFields", None)
    return len(json.dumps(shown, separators=(",", ":")))


def has_condition(resource: dict[str, Any], type_: str, status: str = "True") -> bool:
    conditions = (resource.get("status") or {}).get("conditions") or []
    return any(c.get("type") == type_ and c.get("status") == status for c in conditions)


class CrWatch:
    """Every resourceVersion of the ObjectMigration, as a watch delivers it, in a thread:
    its arrival time, whether its status changed, its size; and when CutOver became True."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.changes: list[dict[str, Any]] = []
        self.latest: dict[str, Any] = {}
        self.cut_over_at: float | None = None
        self.cut_over = threading.Event()
        self.errors: list[str] = []
        self._last_rv: str | None = None
        self._last_status: dict[str, Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> CrWatch:
        self._thread.start()
        self._ready.wait(60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._task = self._loop.create_task(self._watch())
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._task)
        finally:
            self._loop.close()

    async def _watch(self) -> None:
        kube = await KubeClient.from_kubeconfig(str(self.kubeconfig))
        try:
            rv: str | None = None
            while True:
                try:
                    if rv is None:
                        listing = await kube.get(OM_PATH)
                        rv = str(listing["metadata"]["resourceVersion"])
                        for item in listing["items"]:
                            self._seen(item)
                        self._ready.set()
                    async for event in kube.watch(OM_PATH, rv):
                        resource = event["object"]
                        if event["type"] == "ERROR":
                            if resource.get("code") == 410:
                                rv = None
                                break
                            raise ApiError(int(resource.get("code", 500)), json.dumps(resource))
                        rv = str(resource["metadata"]["resourceVersion"])
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._seen(resource)
                except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as error:
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {error}")
                    rv = None
                    await asyncio.sleep(0.5)
        finally:
            await kube.close()

    def _seen(self, resource: dict[str, Any]) -> None:
        arrived, wall = time.monotonic(), time.time()
        meta = resource["metadata"]
        if meta["name"] != NAME or meta["resourceVersion"] == self._last_rv:
            return
        self._last_rv = meta["resourceVersion"]
        status = resource.get("status") or {}
        changed = bool(status) and status != self._last_status
        self._last_status = status
        self.latest = resource
        self.changes.append(
            {
                "t": arrived,
                "wall": wall,
                "rv": meta["resourceVersion"],
                "status_changed": changed,
                "phase": status.get("phase"),
                "bytes": compact_size(resource),
                "bytes_with_managed_fields": len(json.dumps(resource, separators=(",", ":"))),
            }
        )
        if self.cut_over_at is None and has_condition(resource, "CutOver"):
            self.cut_over_at = arrived
            self.cut_over.set()

    def figures(self, started: float, interval: float, tolerance: float) -> dict[str, Any]:
        changes = [c for c in self.changes if c["t"] >= started]
        patches = [c["t"] for c in changes if c["status_changed"]]
        gaps = [b - a for a, b in itertools.pairwise(patches)]
        close = [
            {"at_s": round(patches[i + 1] - started, 3), "interval_s": round(gap, 3)}
            for i, gap in enumerate(gaps)
            if gap < interval - tolerance
        ]
        phases: dict[str, float] = {}
        for change in changes:
            if change["phase"] and change["phase"] not in phases:
                phases[change["phase"]] = round(change["t"] - started, 1)
        return {
            "resource_versions": len(changes),
            "status_changes": len(patches),
            "first_status_after_s": round(patches[0] - started, 2) if patches else None,
            "status_interval_min_s": round(min(gaps), 3) if gaps else None,
            "status_interval_median_s": round(statistics.median(gaps), 3) if gaps else None,
            "status_interval_max_s": round(max(gaps), 3) if gaps else None,
            "status_intervals_below_bound": close,
            "cr_bytes_max": max((c["bytes"] for c in changes), default=None),
            "cr_bytes_max_with_managed_fields": max(
                (c["bytes_with_managed_fields"] for c in changes), default=None
            ),
            "phases_first_seen_s": phases,
            "watch_errors": self.errors,
        }


# -- the ledger --------------------------------------------------------------------------------


async def prepare_statements(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await connection.execute("SELECT pg_stat_statements_reset()")
    finally:
        await connection.close()


async def ledger_figures(dsn: str) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    try:
        migration = await connection.fetchval(
            "SELECT id FROM migrations WHERE name = $1", f"{NAMESPACE}/{NAME}"
        )
        times = await connection.fetchrow(
            "SELECT count(*) AS verified, min(verified_at) AS first, max(verified_at) AS last "
            "FROM objects WHERE migration_id = $1 AND verified_at IS NOT NULL",
            migration,
        )
        states = {
            r["state"]: r["n"]
            for r in await connection.fetch(
                "SELECT state, count(*) AS n FROM objects WHERE migration_id = $1 GROUP BY state",
                migration,
            )
        }
        claims = await connection.fetchrow(
            "SELECT sum(calls)::bigint AS calls, sum(rows)::bigint AS rows, "
            "sum(total_exec_time) AS ms FROM pg_stat_statements "
            "WHERE query LIKE '%WITH expired AS%'"
        )
        records = await connection.fetchrow(
            "SELECT sum(calls)::bigint AS calls, sum(rows)::bigint AS rows, "
            "sum(total_exec_time) AS ms FROM pg_stat_statements "
            "WHERE query LIKE 'UPDATE objects o SET%FROM unnest%'"
        )
        top = await connection.fetch(
            "SELECT calls, rows, total_exec_time AS ms, mean_exec_time AS mean_ms, "
            "regexp_replace(left(query, 300), '\\s+', ' ', 'g') AS query "
            "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 6"
        )
        total_ms = await connection.fetchval("SELECT sum(total_exec_time) FROM pg_stat_statements")
    finally:
        await connection.close()
    assert times is not None
    assert claims is not None
    assert records is not None
    first: datetime | None = times["first"]
    last: datetime | None = times["last"]
    span = (last - first).total_seconds() if first and last else None
    calls = int(claims["calls"] or 0)
    return {
        "states": states,
        "verified": int(times["verified"]),
        "verified_first": first.isoformat() if first else None,
        "verified_last": last.isoformat() if last else None,
        "verified_span_s": span,
        "objects_per_s_verified_span": times["verified"] / span if span else None,
        "claims": calls,
        "claimed_rows": int(claims["rows"] or 0),
        "rows_per_claim": (claims["rows"] or 0) / calls if calls else None,
        "claim_ms_total": round(float(claims["ms"] or 0), 1),
        "claim_ms_mean": float(claims["ms"]) / calls if calls else None,
        # Results are written in batches (one statement each, verified_at = its transaction's
        # start): verified_at has the resolution of these batches.
        "record_batches": int(records["calls"] or 0),
        "recorded_rows": int(records["rows"] or 0),
        "record_ms_total": round(float(records["ms"] or 0), 1),
        "statements_ms_total": round(float(total_ms or 0), 1),
        "top_statements": [
            {
                "calls": r["calls"],
                "rows": r["rows"],
                "ms": round(r["ms"], 1),
                "mean_ms": round(r["mean_ms"], 3),
                "query": r["query"][:160].strip(),
            }
            for r in top
        ],
    }


# -- the pods ----------------------------------------------------------------------------------


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def pod_figures(pods: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: pods, their phases, and the span from the first container start to the
    last container end (whole seconds, as the pod runner reports them)."""
    stages: dict[str, dict[str, Any]] = {}
    for pod in pods:
        stage = pod["metadata"].get("labels", {}).get("objmig.dev/stage", "?")
        entry = stages.setdefault(stage, {"pods": 0, "phases": {}, "start": None, "end": None})
        entry["pods"] += 1
        phase = pod.get("status", {}).get("phase", "?")
        entry["phases"][phase] = entry["phases"].get(phase, 0) + 1
        for container in pod.get("status", {}).get("containerStatuses") or []:
            state = container.get("state", {})
            done = state.get("terminated") or {}
            began = done.get("startedAt") or (state.get("running") or {}).get("startedAt")
            if began:
                start = _stamp(began)
                entry["start"] = start if entry["start"] is None else min(entry["start"], start)
            if done.get("finishedAt"):
                end = _stamp(done["finishedAt"])
                entry["end"] = end if entry["end"] is None else max(entry["end"], end)
    out: dict[str, Any] = {}
    for stage, entry in stages.items():
        span = (
            (entry["end"] - entry["start"]).total_seconds()
            if entry["start"] and entry["end"]
            else None
        )
        out[stage] = {"pods": entry["pods"], "phases": entry["phases"], "span_s": span}
    return out


# -- the run -----------------------------------------------------------------------------------


def migration_manifest(minio: MetricsMinio, args: argparse.Namespace) -> dict[str, Any]:
    side = {
        "endpoint": minio.endpoint_url,
        "region": "us-east-1",
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": "minio-creds"},
    }
    return {
        "apiVersion": "objmig.dev/v1alpha1",
        "kind": "ObjectMigration",
        "metadata": {"name": NAME},
        "spec": {
            "source": {**side, "bucket": SOURCE},
            "target": {**side, "bucket": TARGET},
            "copy": {"mode": "stream", "concurrency": args.concurrency},
            "verify": {"mode": "etag"},
            "cutover": {"policy": "Automatic"},
            "workers": {"parallelism": args.parallelism},
        },
    }


def apply_crds(cluster: ControlPlane) -> None:
    paths = sorted(CRD_DIR.glob("*.yaml"))
    for path in paths:
        cluster.apply_yaml(path.read_text())
    for path in paths:
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{path.name.removesuffix('.yaml')}",
            "--timeout=60s", timeout=70,
        )  # fmt: skip


def wait_cut_over(
    watch: CrWatch, operator: OperatorProcess, cluster: ControlPlane, started: float, limit: float
) -> None:
    """Until the watch saw CutOver=True; progress on stderr every 30 s."""
    said = started
    while not watch.cut_over.wait(1.0):
        now = time.monotonic()
        if not operator.alive():
            raise SystemExit(f"the operator died:\n{operator.log_tail()}")
        cluster.check_alive()
        if now - started > limit:
            raise SystemExit(f"no CutOver after {limit:.0f} s; last status phase "
                             f"{(watch.latest.get('status') or {}).get('phase')}")  # fmt: skip
        if now - said >= 30:
            said = now
            status = watch.latest.get("status") or {}
            progress = status.get("progress") or {}
            print(
                f"  {now - started:5.0f} s: {status.get('phase')} "
                f"{json.dumps(progress.get('objects') or progress)[:160]}",
                file=sys.stderr,
                flush=True,
            )


def wait_pods_done(cluster: ControlPlane) -> list[dict[str, Any]]:
    """The migration's pods once none runs (their Jobs are kept for 600 s)."""
    pods: list[dict[str, Any]] = []

    def ended() -> bool:
        pods[:] = cluster.kubectl_json(
            "get", "pods", "-n", NAMESPACE, "-l", f"objmig.dev/migration={NAME}"
        )["items"]
        return all(p.get("status", {}).get("phase") in ("Succeeded", "Failed") for p in pods)

    with contextlib.suppress(TimeoutError):
        wait_until(ended, timeout=180, interval=1.0, what="every worker pod ended")
    return pods


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "count": args.count,
        "size": args.size,
        "parallelism": args.parallelism,
        "concurrency": args.concurrency,
        "status_interval_s": args.status_interval,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "load_average_before": [round(x, 2) for x in psutil.getloadavg()],
    }
    cluster = ControlPlane(bin_dir=find_bin_dir(), state_dir=work / "k8s")
    print("starting the control plane, MinIO and the ledger", file=sys.stderr, flush=True)
    cluster.start()
    try:
        with (
            MetricsMinio() as minio,
            StatementsPostgres(work / "ledger", fast=args.fast_ledger) as ledger,
        ):
            figures.update(measure(args, work, cluster, minio, ledger))
    finally:
        cluster.stop()
    figures["load_average_after"] = [round(x, 2) for x in psutil.getloadavg()]
    return figures


def measure(
    args: argparse.Namespace,
    work: Path,
    cluster: ControlPlane,
    minio: MetricsMinio,
    ledger: EmbeddedPostgres,
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    s3 = minio_client(minio)
    print(f"seeding {args.count:,} objects", file=sys.stderr, flush=True)
    figures["seed_seconds"] = round(
        seed_by_tar(s3, SOURCE, args.count, args.size, args.prefixes, args.tar_objects), 1
    )
    s3.create_bucket(Bucket=TARGET)
    apply_crds(cluster)
    cluster.kubectl("create", "namespace", NAMESPACE)
    keys = minio.credentials
    create_secret(
        cluster, NAMESPACE, keys.access_key_id, keys.secret_access_key, name="minio-creds"
    )
    asyncio.run(prepare_statements(ledger.dsn))
    operator = OperatorProcess(
        cluster, ledger.dsn, NAMESPACE, work / "operator.log", status_interval=args.status_interval
    )
    operator.start()
    try:
        assert operator._component.proc is not None
        cpu = CpuMeter(cluster, ledger, minio, operator._component.proc.pid)
        counter = MinioRequests(minio.endpoint_url)
        requests_before = counter.snapshot()
        with CrWatch(cluster.kubeconfig) as watch:
            cpu_before = cpu.read()
            print("kubectl apply of the ObjectMigration", file=sys.stderr, flush=True)
            started = time.monotonic()
            cluster.apply_yaml(migration_manifest(minio, args), namespace=NAMESPACE)
            wait_cut_over(watch, operator, cluster, started, args.timeout)
            assert watch.cut_over_at is not None
            wall = watch.cut_over_at - started
            print(f"CutOver=True after {wall:.1f} s", file=sys.stderr, flush=True)
            pods = wait_pods_done(cluster)
            cpu_after = cpu.read()
            figures["pods_done_after_s"] = round(time.monotonic() - started, 1)
            final = cluster.kubectl_json("get", GROUP_PLURAL, NAME, "-n", NAMESPACE)
            figures["cr_bytes_end"] = len(json.dumps(final, separators=(",", ":")))
            time.sleep(args.status_interval * 2)  # the patches after the cutover, for the record
            figures.update(watch.figures(started, args.status_interval, args.tolerance))
        figures["status_patches_metric"] = operator.metric(
            "objmig_status_patches_total", namespace=NAMESPACE, migration=NAME
        )
        figures["reconciles_metric"] = operator.metric(
            "objmig_reconciles_total", namespace=NAMESPACE, migration=NAME
        )
    finally:
        operator.stop()
    requests = MinioRequests.delta(requests_before, counter.snapshot())
    figures["wall_seconds"] = round(wall, 2)
    figures["objects_per_s"] = round(args.count / wall, 1)
    figures["cpu_seconds"] = CpuMeter.delta(cpu_before, cpu_after)
    figures["pods"] = pod_figures(pods)
    figures["ledger"] = asyncio.run(ledger_figures(ledger.dsn))
    copy_span = (figures["pods"].get("copy") or {}).get("span_s")
    ledger_figs = figures["ledger"]
    figures["copy_pods_span_s"] = copy_span
    figures["objects_per_s_copy_pods"] = (
        round(ledger_figs["verified"] / copy_span, 1) if copy_span else None
    )
    figures["claims_per_s_copy_pods"] = (
        round(ledger_figs["claims"] / copy_span, 2) if copy_span else None
    )
    figures["requests_per_object"] = {
        k: round(v / args.count, 4) for k, v in sorted(requests.items())
    }
    print("checking the target", file=sys.stderr, flush=True)
    figures["checked_on_target"] = check_copies(s3, TARGET, args.count, args.size, args.prefixes)
    return figures


def summary(f: dict[str, Any]) -> str:
    ledger = f["ledger"]
    cpu = f["cpu_seconds"]
    below = len(f["status_intervals_below_bound"])

    def num(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    return (
        f"{f['count']:,} x {f['size']} B, parallelism {f['parallelism']}: apply -> CutOver "
        f"{f['wall_seconds']:.1f} s ({f['objects_per_s']:.0f} objects/s; "
        f"{num(f['objects_per_s_copy_pods'], '.0f')}/s over the copy pods' "
        f"{num(f['copy_pods_span_s'], '.0f')} s); {ledger['claims']:,} claims "
        f"({num(f['claims_per_s_copy_pods'], '.1f')}/s, "
        f"{num(ledger['rows_per_claim'], '.1f')} rows each, "
        f"{num(ledger['claim_ms_mean'], '.2f')} ms each, {ledger['claim_ms_total'] / 1000:.1f} s "
        f"in all); CPU s: ledger {cpu.get('ledger', 0):.1f}, workers {cpu.get('workers', 0):.1f}, "
        f"MinIO {cpu.get('minio', 0):.1f}, operator {cpu.get('operator', 0):.1f}; "
        f"{f['status_changes']} status changes (min {num(f['status_interval_min_s'], '.2f')} s, "
        f"median {num(f['status_interval_median_s'], '.2f')} s apart; {below} under "
        f"{f['status_interval_s']:g} s less the tolerance); CR {f['cr_bytes_max']:,} B at "
        f"most, {f['cr_bytes_end']:,} B at the end; "
        f"{sum(f['requests_per_object'].values()):.2f} requests/object; "
        f"{f['checked_on_target']:,} checked on the target"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="objmig-opbench-") as workdir:
            figures = run(args, Path(workdir))
    print(summary(figures))
    print(json.dumps(figures, default=str))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
