"""Helpers of benchmarks/copy_bench.py: process-tree RSS sampling and S3 request counting.

Kept apart from the benchmark so the measuring code is easy to review on its own:

* `TreeSampler` polls a process and all its descendants with psutil and keeps the peak of
  their summed RSS (and the peak of the root alone).
* `bench_migration` and `bench_secrets`: an ObjectMigration as a user writes it, between
  two buckets of one local store, and the credentials it names.
* `MinioRequests` reads MinIO's per-API request counters (metrics v3, public) before and
  after a tool runs; `MotoRequests` counts the access-log lines moto's server writes
  (werkzeug logs one line per request) and classifies them by method and query string.
  Both count on the server, so every tool is counted the same way.
* `seed_by_tar` fills a MinIO bucket with many small objects fast: one PUT of a tar per
  50,000 objects with `snowball-auto-extract`, which MinIO unpacks (`key_of`, `body_of`,
  `tar_of` name and fill the objects); `check_copies` checks every one of them on a target.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psutil  # type: ignore[import-untyped]
from botocore.config import Config

from objmig.api.loading import parse_resource
from objmig.api.migration import ObjectMigration
from objmig.engine.secrets import EnvSecrets, env_name
from objmig.local.s3server import LocalMinio
from objmig.storage.endpoint import Endpoint

#: The Secret the benchmarks' migrations name for both sides.
BENCH_SECRET = "bench-creds"


def bench_migration(
    endpoint: Endpoint, name: str, source: str, target: str, **spec: Any
) -> ObjectMigration:
    """A migration from `source` to `target` on `endpoint` (path-style), with `spec`'s
    fields besides; everything else at its default."""
    side = {
        "endpoint": endpoint.url,
        "addressingStyle": "path",
        "credentialsSecretRef": {"name": BENCH_SECRET},
    }
    resource = parse_resource(
        {
            "apiVersion": "objmig.dev/v1alpha1",
            "kind": "ObjectMigration",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {
                "source": {**side, "bucket": source},
                "target": {**side, "bucket": target},
                **spec,
            },
        }
    )
    assert isinstance(resource, ObjectMigration)
    return resource


def bench_secrets(endpoint: Endpoint) -> EnvSecrets:
    """The credentials of `endpoint` as `bench_migration`'s Secret."""
    assert endpoint.credentials is not None
    return EnvSecrets(
        environ={
            env_name(BENCH_SECRET, "accessKeyId"): endpoint.credentials.access_key_id,
            env_name(BENCH_SECRET, "secretAccessKey"): endpoint.credentials.secret_access_key,
        }
    )


class TreeSampler:
    """Peak RSS of a process tree, sampled every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_tree = 0
        self.peak_root = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            self.sample(root)
            self._stop.wait(self.interval)

    def sample(self, root: psutil.Process) -> None:
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for index, process in enumerate(processes):
            try:
                rss = process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            total += rss
            if index == 0:
                self.peak_root = max(self.peak_root, rss)
        self.peak_tree = max(self.peak_tree, total)
        self.peak_processes = max(self.peak_processes, len(processes))


CACHE = Path(os.environ.get("OBJMIG_CACHE") or Path.home() / ".cache" / "objmig")


def find_toxiproxy() -> str | None:
    """toxiproxy-server built by scripts/toxiproxy.sh (or on PATH)."""
    candidates = sorted((CACHE / "toxiproxy").glob("*/bin/toxiproxy-server"), reverse=True)
    return str(candidates[0]) if candidates else shutil.which("toxiproxy-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LatencyProxy:
    """A TCP proxy on loopback that delays every byte by half a round trip each way.

    Real stores are tens of milliseconds away; a loopback S3 server answers in well under
    one. This kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is off, so a veth pair in a
    network namespace cannot be given a delay), hence toxiproxy: its latency toxic holds
    each chunk of data for `rtt_ms / 2` on the way up and again on the way down, so a
    request and its answer take `rtt_ms` longer, and streams keep their throughput.
    """

    def __init__(self, upstream: str, rtt_ms: float, binary: str) -> None:
        self.upstream = upstream  # host:port
        self.rtt_ms = rtt_ms
        self.binary = binary
        self.api_port = free_port()
        self.listen_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def __enter__(self) -> LatencyProxy:
        self.process = subprocess.Popen(
            [self.binary, "-host", "127.0.0.1", "-port", str(self.api_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._api("GET", "/version")
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("toxiproxy-server did not start") from None
                time.sleep(0.1)
        self._api(
            "POST",
            "/proxies",
            {
                "name": "s3",
                "listen": f"127.0.0.1:{self.listen_port}",
                "upstream": self.upstream,
                "enabled": True,
            },
        )
        for stream in ("upstream", "downstream"):
            self._api(
                "POST",
                "/proxies/s3/toxics",
                {
                    "name": f"latency-{stream}",
                    "type": "latency",
                    "stream": stream,
                    "toxicity": 1.0,
                    "attributes": {"latency": round(self.rtt_ms / 2), "jitter": 0},
                },
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def cpu_seconds(self) -> float:
        """User + system CPU the proxy has used so far (it shares the cores too)."""
        if self.process is None:
            return 0.0
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def _api(self, method: str, path: str, body: object | None = None) -> object:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            is_json = "json" in response.headers.get("Content-Type", "")
        # GET /version answers plain text ("2.5.0"); the rest JSON.
        return json.loads(text) if text and is_json else text


class MetricsMinio(LocalMinio):
    """LocalMinio with its Prometheus metrics readable without a token."""

    def _environment(self) -> dict[str, str]:
        env = super()._environment()
        env["MINIO_PROMETHEUS_AUTH_TYPE"] = "public"
        return env


def minio_client(server: LocalMinio) -> Any:
    """A boto3 S3 client of `server` (path-style, patient: a tar of 50,000 objects takes a
    while to unpack before MinIO answers its PUT)."""
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.credentials.access_key_id,
        aws_secret_access_key=server.credentials.secret_access_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 10},
            read_timeout=3600,
        ),
    )


def key_of(index: int, prefixes: int) -> str:
    """The key of object `index`, spread over `prefixes` prefixes as a real bucket's are."""
    return f"p{index % prefixes:03d}/object-{index:07d}"


def body_of(index: int, size: int) -> bytes:
    """Distinct bytes per object (its index first), the rest a fixed filler."""
    return index.to_bytes(8, "big") + b"m" * (size - 8)


def tar_of(indices: range, size: int, prefixes: int) -> bytes:
    """A tar of the objects `indices` (`key_of` names, `body_of` bytes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for index in indices:
            info = tarfile.TarInfo(key_of(index, prefixes))
            info.size = size
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(body_of(index, size)))
    return buffer.getvalue()


def seed_by_tar(
    s3: Any, bucket: str, count: int, size: int, prefixes: int, tar_objects: int = 50_000
) -> float:
    """Create `bucket` and fill it with `count` objects through MinIO's tar extraction (one
    PUT per `tar_objects`); returns the seconds it took."""
    started = time.monotonic()
    s3.create_bucket(Bucket=bucket)
    for first in range(0, count, tar_objects):
        chunk = range(first, min(first + tar_objects, count))
        s3.put_object(
            Bucket=bucket,
            Key=f"seed-{first}.tar",
            Body=tar_of(chunk, size, prefixes),
            Metadata={"snowball-auto-extract": "true"},
        )
        print(f"  seeded {chunk.stop:,} objects", file=sys.stderr, flush=True)
    return time.monotonic() - started


def listed(s3: Any, bucket: str) -> Iterator[tuple[str, int, str]]:
    """(key, size, ETag) of every object in `bucket`."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            yield item["Key"], int(item["Size"]), str(item["ETag"]).strip('"')


def check_copies(s3: Any, bucket: str, count: int, size: int, prefixes: int) -> int:
    """Every object `seed_by_tar` made is in `bucket`, with its size and the MD5 of its
    bytes as ETag; returns the count."""
    wanted_keys = {key_of(i, prefixes): i for i in range(count)}
    seen = 0
    for key, got_size, etag in listed(s3, bucket):
        index = wanted_keys.pop(key)
        assert got_size == size, (key, got_size)
        assert etag == hashlib.md5(body_of(index, size)).hexdigest(), (key, etag)
        seen += 1
    assert not wanted_keys, f"{len(wanted_keys)} objects missing on the target"
    return seen


_V3_LINE = re.compile(r'^minio_api_requests_total\{name="([^"]+)"[^}]*\}\s+([0-9.e+]+)$')


#: MinIO's API names -> AWS's, so both servers' tables use one vocabulary.
_MINIO_NAMES = {
    "PutObjectPart": "UploadPart",
    "CopyObjectPart": "UploadPartCopy",
    "NewMultipartUpload": "CreateMultipartUpload",
    "ListObjectsV1": "ListObjectsV1",
}


class MinioRequests:
    """Per-API request counts of a MinIO server, from /minio/metrics/v3/api/requests."""

    def __init__(self, endpoint_url: str) -> None:
        self.url = endpoint_url.rstrip("/") + "/minio/metrics/v3/api/requests"

    def _read(self) -> Counter[str]:
        with urllib.request.urlopen(self.url, timeout=30) as response:
            text = response.read().decode()
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            match = _V3_LINE.match(line.strip())
            if match:
                name = _MINIO_NAMES.get(match.group(1), match.group(1))
                counts[name] += int(float(match.group(2)))
        return counts

    def snapshot(self) -> Counter[str]:
        """Counts now; read until two reads agree (metrics may lag a request by a moment)."""
        previous = self._read()
        for _ in range(20):
            time.sleep(0.3)
            current = self._read()
            if current == previous:
                return current
            previous = current
        return previous

    @staticmethod
    def delta(before: Counter[str], after: Counter[str]) -> Counter[str]:
        out: Counter[str] = Counter()
        for name, value in after.items():
            if value - before.get(name, 0) > 0:
                out[name] = value - before.get(name, 0)
        return out


# werkzeug wraps 4xx/5xx request lines in ANSI colour codes: "\x1b[33mHEAD /b/k HTTP/1.1\x1b[0m" 404
_LOG_LINE = re.compile(
    r'"(?:\x1b\[[0-9;]*m)*(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d{3})'
)
_BUCKET_SUBRESOURCES = {
    "versioning": "BucketVersioning",
    "location": "BucketLocation",
    "uploads": "MultipartUploads",
    "policy": "BucketPolicy",
    "acl": "BucketAcl",
    "lifecycle": "BucketLifecycle",
    "encryption": "BucketEncryption",
    "object-lock": "ObjectLockConfig",
    "tagging": "BucketTagging",
}


def classify_moto(method: str, target: str, copy_hint: bool = False) -> str:
    """An S3 API name (MinIO's spelling) for one request line of moto's access log."""
    parsed = urllib.parse.urlsplit(target)
    path = parsed.path.lstrip("/")
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    has_key = "/" in path and path.split("/", 1)[1] != ""
    if path.startswith("moto-api"):
        return "moto-api"
    if not has_key:
        if method == "GET":
            for name, api in _BUCKET_SUBRESOURCES.items():
                if name in query:
                    return ("List" if name == "uploads" else "Get") + api
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjectsV1"
        if method == "POST" and "delete" in query:
            return "DeleteMultipleObjects"
        return {"PUT": "PutBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
            method, f"{method} bucket"
        )
    if method == "HEAD":
        return "HeadObject"
    if method == "GET":
        if "tagging" in query:
            return "GetObjectTagging"
        if "attributes" in query:
            return "GetObjectAttributes"
        if "uploadId" in query:
            return "ListObjectParts"
        return "GetObject"
    if method == "PUT":
        if "tagging" in query:
            return "PutObjectTagging"
        if "partNumber" in query:
            return "UploadPartCopy" if copy_hint else "UploadPart"
        return "CopyObject" if copy_hint else "PutObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        if "restore" in query:
            return "RestoreObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return f"{method} object"


class MotoRequests:
    """Requests moto served, counted from its access log between two snapshots.

    moto's access log does not show the x-amz-copy-source header, so a server-side
    CopyObject looks like a PutObject and UploadPartCopy like UploadPart: pass
    `copy_hint=True` for server-side runs to name them accordingly (inferred, not seen).
    """

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path

    def snapshot(self) -> int:
        time.sleep(0.3)  # let the server flush its last lines
        return self.log_path.stat().st_size

    def delta(self, before: int, after: int, copy_hint: bool = False) -> Counter[str]:
        counts: Counter[str] = Counter()
        with self.log_path.open("rb") as handle:
            handle.seek(before)
            data = handle.read(after - before).decode(errors="replace")
        for line in data.splitlines():
            match = _LOG_LINE.search(line)
            if match:
                counts[classify_moto(match.group(1), match.group(2), copy_hint)] += 1
        counts.pop("moto-api", None)
        return counts


# Where objmig's CPU goes. Each sample (a collapsed stack from py-spy) is charged twice: to
# the first matching *step* (which S3 call of the pipeline it serves) and to the first
# matching *layer* (which library burns it). Order matters: innermost concerns first.
_STEPS = (
    ("GetObjectTagging (copy plan)", ("get_tags (objmig/storage/",)),
    ("HeadObject + part HEADs (copy plan)", ("objmig/storage/copy/planning.py",)),
    ("HeadObject source (pipeline: before copy + re-check)", ("head_source (objmig/engine",)),
    ("HeadObject target (pipeline: before + after copy)", ("head_target (objmig/engine",)),
    ("server-side copy requests", ("objmig/storage/copy/server_side.py",)),
    ("GET + PUT / UploadPart (stream)", ("objmig/storage/copy/streamed.py",)),
    ("scan (listing + inventory)", ("objmig/engine/scan.py",)),
    ("ledger (claim / record / status)", ("asyncpg/", "objmig/ledger/")),
    ("progress view (rich)", ("rich/",)),
    ("start-up (imports)", ("_find_and_load",)),
)
_LAYERS = (
    ("botocore: SigV4 signing", ("botocore/auth.py", "botocore/signers.py")),
    ("botocore: response parsing", ("botocore/parsers.py",)),
    (
        "botocore: endpoint rules + user agent",
        ("botocore/regions.py", "aiobotocore/regions.py", "botocore/useragent.py"),
    ),
    ("botocore: serialising + validation", ("botocore/serialize.py", "botocore/validate.py")),
    ("hashing (MD5 / SHA-256)", ("hashlib", "calculate_md5", "_hash")),
    ("socket I/O (asyncio transports)", ("selector_events.py",)),
    ("aiohttp (HTTP client)", ("aiohttp/", "yarl/", "multidict/")),
    (
        "botocore / aiobotocore: rest (events, hooks, request dicts)",
        ("botocore/", "aiobotocore/", "aioboto3/"),
    ),
    ("asyncpg", ("asyncpg/",)),
    ("rich", ("rich/",)),
    ("asyncio event loop", ("asyncio/",)),
    ("objmig's own code", ("objmig/",)),
)


def _charge(stack: str, table: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    for name, patterns in table:
        if any(p in stack for p in patterns):
            return name
    return "other"


def summarise_profile(path: Path) -> dict[str, float]:
    """Share of samples per step ('step: ...') and per layer ('layer: ...'); '_samples'."""
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        counts["step: " + _charge(stack, _STEPS)] += samples
        counts["layer: " + _charge(stack, _LAYERS)] += samples
        if "_make_api_call (aiobotocore/client.py" in stack:
            counts["_in_sdk_call"] += samples
    out = {name: value / total for name, value in counts.items()} if total else {}
    out["_samples"] = float(total)
    return out


def format_profile(profile: dict[str, float]) -> str:
    lines = []
    for kind in ("step", "layer"):
        rows = sorted(
            ((v, k) for k, v in profile.items() if k.startswith(kind + ": ")), reverse=True
        )
        lines.append(f"      by {kind}:")
        lines += [f"      {share * 100:5.1f}%  {name[len(kind) + 2 :]}" for share, name in rows]
    lines.append(
        f"      {profile.get('_in_sdk_call', 0) * 100:.1f}% of samples inside an SDK call "
        f"(aiobotocore _make_api_call); {int(profile.get('_samples', 0))} samples at 100 Hz"
    )
    return "\n".join(lines)
