"""Test-only stand-in for kube-scheduler + kubelet: runs pods' containers as local processes.

The local control plane (``tests/support/cluster.py``) has no nodes. This process:

* registers one Ready Node (with capacity, a Lease kept fresh and its status heartbeat);
* binds every pending pod whose ``schedulerName`` is ``default-scheduler`` (and whose
  ``nodeSelector`` matches the node's labels, and which has no scheduling gates) to that node;
* runs each container of a pod bound to the node as a local process group: ``command`` +
  ``args`` (``$(VAR)`` expanded), ``env`` / ``envFrom`` including Secret, ConfigMap, downward-API
  ``fieldRef`` and ``resourceFieldRef`` sources, in a fresh temporary working directory. The
  image is ignored, except that a container without ``command`` whose image is ``objmig[:tag]``
  runs ``objmig``. ``objmig``, ``python`` and ``python3`` resolve to the test virtualenv (the
  virtualenv's bin directory is first on the pods' PATH); other commands come from PATH;
* reports pod status like a kubelet: Pending -> Running (containers running + ready, Ready
  condition) -> Succeeded / Failed with each container's real exit code (128+N when killed by
  signal N), reason ``Completed`` / ``Error``, ``startedAt`` / ``finishedAt``. Conditions it does
  not own (e.g. ``DisruptionTarget`` added by the eviction API or pod GC) are preserved because
  status is written with a strategic-merge patch keyed by condition type;
* honours deletion: a pod with ``deletionTimestamp`` gets SIGTERM, then SIGKILL after
  ``deletionGracePeriodSeconds``, its terminated status is reported, then it is deleted with
  grace 0 (what the kubelet's status manager does) - the Job controller then sees a failed pod
  and replaces it;
* writes each container's stdout+stderr to ``<log-dir>/<namespace>_<pod>_<container>.log``.

Restart policies: ``Never`` (what Jobs use) is exact; ``OnFailure`` and ``Always`` restart the
container in place with a capped back-off and ``restartCount`` (enough for Deployments). Not
supported: volumes / volumeMounts beyond one check (no filesystem isolation at all: a volume
is the directory its mountPath names on this machine; a pod whose persistentVolumeClaim does
not exist stays Pending in ContainerCreating, as a kubelet's pod waiting to mount it), probes
(containers are ready as soon as they run), sidecar init containers, pod-level
``activeDeadlineSeconds``, resource limits enforcement, ``kubectl logs/exec/port-forward``
(there is no kubelet API), a pod IP of its own (every pod reports 127.0.0.1 and shares the
host network), mounted service-account tokens.

Run: ``python -m tests.support.podrunner --kubeconfig K --node-name N --log-dir D --work-dir W``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import datetime as dt
import json
import logging
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

log = logging.getLogger("podrunner")

DEFAULT_SCHEDULER = "default-scheduler"
#: Environment variables of the runner that pods inherit (a container's environment is
#: otherwise only what its spec says). Extend with OBJMIG_PODRUNNER_PASS_ENV=A,B,C.
PASS_ENV = ("LANG", "LC_ALL", "TZ", "TMPDIR", "COVERAGE_PROCESS_START")
VENV_BIN = Path(sys.executable).parent
#: Commands mapped to the local installation (the "image" of our worker pods).
LOCAL_COMMANDS = {"objmig": VENV_BIN / "objmig", "python": Path(sys.executable)}
LOCAL_COMMANDS["python3"] = LOCAL_COMMANDS["python"]

Json = dict[str, Any]
#: Written into a running container's working directory: its process-group id.
PGID_FILE = ".podrunner-pgid"


def now() -> str:
    """RFC 3339 timestamp, second precision, as the API serialises metav1.Time."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """metav1.MicroTime (used by Leases)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------
# Minimal async Kubernetes client (raw JSON: field names stay as in the API docs)
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer from the apiserver."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class KubeClient:
    """Tiny aiohttp client; kubeconfig parsing is delegated to ``kubernetes_asyncio``."""

    def __init__(self, server: str, ssl_ctx: ssl.SSLContext, headers: dict[str, str]) -> None:
        self.server = server.rstrip("/")
        self._ssl = ssl_ctx
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    async def from_kubeconfig(cls, path: str) -> KubeClient:
        """Build a client from a kubeconfig (client certs and/or bearer token)."""
        cfg = k8s_client.Configuration()
        await k8s_config.load_kube_config(config_file=path, client_configuration=cfg)
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if not cfg.verify_ssl:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {"Accept": "application/json", "User-Agent": "objmig-podrunner"}
        token = (cfg.api_key or {}).get("BearerToken") or (cfg.api_key or {}).get("authorization")
        if token:
            headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        return cls(str(cfg.host), ctx, headers)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared HTTP session (created lazily inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers, connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32)
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        """One API call; returns the decoded JSON answer or raises :class:`ApiError`."""
        data = None if body is None else json.dumps(body)
        async with self.session.request(
            method,
            self.server + path,
            data=data,
            params=params,
            headers={"Content-Type": content_type} if data is not None else None,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            text = await resp.text()
            if resp.status >= 300:
                raise ApiError(resp.status, text)
            return json.loads(text) if text else {}

    async def get(self, path: str) -> Json:
        """GET."""
        return await self.request("GET", path)

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Json]:
        """Yield watch events from ``resource_version`` until the server closes the stream."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "240",
        }
        async with self.session.get(
            self.server + path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
        ) as resp:
            if resp.status != 200:
                raise ApiError(resp.status, await resp.text())
            # Own line splitting: aiohttp's readline caps line length, a pod can be large.
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)


def pod_path(ns: str, name: str, sub: str = "") -> str:
    """API path of a pod (or one of its subresources)."""
    return f"/api/v1/namespaces/{quote(ns)}/pods/{quote(name)}" + (f"/{sub}" if sub else "")


# --------------------------------------------------------------------------------------------
# Container environment
# --------------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The pod's spec cannot be turned into a process yet (kubelet: CreateContainerConfigError)."""

    reason = "CreateContainerConfigError"


class VolumeError(ConfigError):
    """A volume the pod needs is not there yet (kubelet: waits in ContainerCreating)."""

    reason = "ContainerCreating"


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_FIELD_MAP = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_SUFFIX: dict[str, int | Decimal] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined vars are replaced, ``$$`` escapes, rest kept."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(repl, text)


def parse_quantity(q: str) -> Decimal:
    """Parse a resource.Quantity like ``500m``, ``2Gi``, ``1e3``."""
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ConfigError(f"cannot parse quantity {q!r}")
    return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2)])


class EnvResolver:
    """Resolves a container's environment; caches Secrets / ConfigMaps for one pod start."""

    def __init__(self, kube: KubeClient, pod: Json, node: Json) -> None:
        self.kube = kube
        self.pod = pod
        self.node = node
        self.ns = pod["metadata"]["namespace"]
        self._cache: dict[tuple[str, str], Json | None] = {}

    async def _source(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        key = (kind, name)
        if key not in self._cache:
            plural = "secrets" if kind == "Secret" else "configmaps"
            try:
                self._cache[key] = await self.kube.get(
                    f"/api/v1/namespaces/{quote(self.ns)}/{plural}/{quote(name)}"
                )
            except ApiError as exc:
                if exc.status != 404:
                    raise
                self._cache[key] = None
        obj = self._cache[key]
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        if kind == "Secret":
            return {
                k: base64.b64decode(v).decode("utf-8", "surrogateescape")
                for k, v in (obj.get("data") or {}).items()
            }
        data = dict(obj.get("data") or {})
        for k, v in (obj.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v).decode("utf-8", "surrogateescape")
        return data

    async def _key_ref(self, kind: str, ref: Json) -> str | None:
        optional = bool(ref.get("optional"))
        data = await self._source(kind, ref.get("name", ""), optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {self.ns}/{ref['name']}")
        return data[ref["key"]]

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple: dict[str, Callable[[], str]] = {
            "metadata.name": lambda: meta["name"],
            "metadata.namespace": lambda: meta["namespace"],
            "metadata.uid": lambda: meta["uid"],
            "spec.nodeName": lambda: spec.get("nodeName", ""),
            "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
            "status.hostIP": lambda: "127.0.0.1",
            "status.hostIPs": lambda: "127.0.0.1",
            "status.podIP": lambda: "127.0.0.1",
            "status.podIPs": lambda: "127.0.0.1",
        }
        if path in simple:
            return simple[path]()
        m = _FIELD_MAP.match(path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        raise ConfigError(f"unsupported fieldRef.fieldPath {path!r}")

    def _resource(self, container: Json, ref: Json) -> str:
        resource = ref["resource"]  # e.g. limits.cpu, requests.memory
        kind, _, name = resource.partition(".")
        res = container.get("resources") or {}
        value = (res.get(kind) or {}).get(name)
        if value is None and kind == "requests":
            value = (res.get("limits") or {}).get(name)
        if value is None:  # kubelet falls back to node allocatable
            value = (self.node["status"]["allocatable"]).get(name, "0")
        divisor = parse_quantity(ref.get("divisor") or "1")
        return str(math.ceil(parse_quantity(value) / divisor))

    async def resolve(self, container: Json, base: dict[str, str]) -> dict[str, str]:
        """The container's full environment: base, then envFrom, then env (later wins)."""
        env = dict(base)
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                ref, kind = src["configMapRef"], "ConfigMap"
            elif "secretRef" in src:
                ref, kind = src["secretRef"], "Secret"
            else:
                continue
            data = await self._source(kind, ref.get("name", ""), bool(ref.get("optional")))
            for k, v in (data or {}).items():
                if _ENV_NAME.match(prefix + k):  # kubelet skips invalid names too
                    env[prefix + k] = v
        for var in container.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value", ""), env)
                continue
            vf = var["valueFrom"]
            value: str | None
            if "fieldRef" in vf:
                value = self._field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                value = self._resource(container, vf["resourceFieldRef"])
            elif "secretKeyRef" in vf:
                value = await self._key_ref("Secret", vf["secretKeyRef"])
            elif "configMapKeyRef" in vf:
                value = await self._key_ref("ConfigMap", vf["configMapKeyRef"])
            else:
                raise ConfigError(f"unsupported valueFrom for env {name}: {vf}")
            if value is not None:
                env[name] = value
        return env


def resolve_argv(container: Json, env: dict[str, str]) -> list[str]:
    """command + args, expanded, with the executable mapped to the local installation."""
    command = [expand(c, env) for c in container.get("command") or []]
    args = [expand(a, env) for a in container.get("args") or []]
    if not command:
        # We cannot read an image's ENTRYPOINT; our own image's is `objmig`.
        image = container.get("image", "")
        repo = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
        if repo != "objmig":
            raise ConfigError(
                f"container {container['name']}: image {image!r} has no known entrypoint; "
                "the pod runner needs an explicit command"
            )
        command = ["objmig"]
    exe = command[0]
    base = os.path.basename(exe)
    if base in LOCAL_COMMANDS and (not os.path.isabs(exe) or not os.path.exists(exe)):
        resolved: str | None = str(LOCAL_COMMANDS[base])
    elif os.path.isabs(exe) and os.access(exe, os.X_OK):
        resolved = exe
    else:
        # A path inside an image (e.g. /usr/local/bin/tool) is looked up by name on PATH.
        resolved = shutil.which(base, path=env.get("PATH"))
    if resolved is None:
        raise FileNotFoundError(f'exec: "{exe}": executable file not found in $PATH')
    return [resolved, *command[1:], *args]


# --------------------------------------------------------------------------------------------
# Pods
# --------------------------------------------------------------------------------------------


def _pdeathsig() -> Callable[[], None]:
    """preexec_fn: SIGKILL the container if the runner dies (no orphans after a crash)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG

    return preexec


@dataclass
class ContainerRun:
    """Runtime state of one container, rendered as a v1.ContainerStatus."""

    spec: Json
    init: bool = False
    restart_count: int = 0
    state: Json = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Json = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    final: bool = False  # terminated and will not be restarted

    @property
    def name(self) -> str:
        """Container name."""
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        """True while its process runs."""
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        """Exit code once terminated."""
        term = self.state.get("terminated")
        return None if term is None else int(term["exitCode"])

    def status(self, pod_uid: str) -> Json:
        """v1.ContainerStatus."""
        image = self.spec.get("image", "")
        st: Json = {
            "name": self.name,
            "image": image,
            "imageID": f"local://{image}",
            "containerID": f"podrunner://{pod_uid}/{self.name}/{self.restart_count}",
            "ready": self.running and not self.init,
            "started": self.running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if "waiting" in self.state and self.state["waiting"].get("reason") == "ContainerCreating":
            del st["containerID"]
        return st


class PodWorker:
    """Runs one pod: its init containers in order, then its containers in parallel."""

    def __init__(self, runner: PodRunner, pod: Json) -> None:
        self.runner = runner
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        spec = pod["spec"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        self.init_containers = [
            ContainerRun(c, init=True) for c in spec.get("initContainers") or []
        ]
        self.containers = [ContainerRun(c) for c in spec.get("containers") or []]
        self.initialized = not self.init_containers
        self.failed_init = False
        self.start_time = now()
        self.terminating = asyncio.Event()
        self.grace = 30.0
        self.gone = False  # the API object vanished: nobody to report to
        self.config_error: str | None = None
        self._conds: dict[str, tuple[str, str]] = {}
        self._write_lock = asyncio.Lock()
        self.workdir = runner.work_dir / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.task: asyncio.Task[None] | None = None

    # -- events from the watch ----------------------------------------------------------------

    def update(self, pod: Json) -> None:
        """A newer version of the pod: notice a deletion request."""
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and not self.terminating.is_set():
            self.grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            log.info("%s/%s: deletion requested (grace %ss)", self.ns, self.name, self.grace)
            self.terminating.set()

    def vanished(self) -> None:
        """The pod object was removed (force delete): stop without grace, report nothing."""
        self.gone = True
        self.grace = 0
        self.terminating.set()

    # -- status -------------------------------------------------------------------------------

    def _all_runs(self) -> list[ContainerRun]:
        return [*self.init_containers, *self.containers]

    def phase(self) -> str:
        """Pod phase as the kubelet computes it for our simplified lifecycle."""
        if self.failed_init:
            return "Failed"
        if not self.initialized:
            return "Pending"
        if self.containers and all(c.final for c in self.containers):
            return "Succeeded" if all(c.exit_code == 0 for c in self.containers) else "Failed"
        if any(c.running or c.restart_count > 0 or c.final for c in self.containers):
            return "Running"
        return "Pending"

    def _cond(self, ctype: str, ok: bool, reason: str | None = None, msg: str = "") -> Json:
        status = "True" if ok else "False"
        prev = self._conds.get(ctype)
        if prev is None or prev[0] != status:
            self._conds[ctype] = (status, now())
        # Explicit nulls: the strategic merge keeps fields we omit, so a condition that turns
        # True would otherwise keep the reason/message of its False past.
        return {
            "type": ctype,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self._conds[ctype][1],
            "reason": reason or None,
            "message": msg or None,
        }

    def status(self) -> Json:
        """The v1.PodStatus we own (conditions of other writers are left alone by the patch)."""
        phase = self.phase()
        not_ready = [c.name for c in self.containers if not c.running]
        ready = not not_ready and phase == "Running"
        if phase == "Succeeded":
            reason: str | None = "PodCompleted"
            msg = ""
        elif ready:
            reason, msg = None, ""
        else:
            reason, msg = "ContainersNotReady", f"containers with unready status: {not_ready}"
        uninit = [c.name for c in self.init_containers if c.exit_code != 0]
        status: Json = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                self._cond("PodReadyToStartContainers", True),
                self._cond(
                    "Initialized",
                    self.initialized,
                    None if self.initialized else "ContainersNotInitialized",
                    "" if self.initialized else f"containers with incomplete status: {uninit}",
                ),
                self._cond("ContainersReady", ready, reason, msg),
                self._cond("Ready", ready, reason, msg),
                self._cond("PodScheduled", True),
            ],
            "containerStatuses": [c.status(self.uid) for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status(self.uid) for c in self.init_containers]
        status["message"] = self.config_error  # null clears a stale one (strategic merge)
        return status

    async def write_status(self) -> None:
        """PATCH pods/status (strategic merge: our condition types only, others preserved)."""
        if self.gone:
            return
        async with self._write_lock:
            try:
                await self.runner.kube.request(
                    "PATCH",
                    pod_path(self.ns, self.name, "status"),
                    {"metadata": {"uid": self.uid}, "status": self.status()},
                    content_type="application/strategic-merge-patch+json",
                )
            except ApiError as exc:
                if exc.status == 404:
                    self.vanished()
                else:
                    log.warning("%s/%s: status update failed: %s", self.ns, self.name, exc)

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Whole pod lifetime; always ends with a terminal status (and deletion if asked)."""
        killer = asyncio.create_task(self._kill_on_termination())
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            envs = await self._prepare()
            if envs is not None:
                for c in self.init_containers:
                    code = await self._run_container(c, envs[c.name])
                    if self.terminating.is_set():
                        break
                    if code != 0:
                        # Exact for restartPolicy Never. (A kubelet would retry init containers
                        # under OnFailure/Always; we fail the pod instead: documented limit.)
                        self.failed_init = True
                        break
                else:
                    self.initialized = True
                if self.initialized and not self.terminating.is_set():
                    await self.write_status()
                    await asyncio.gather(
                        *(self._run_container(c, envs[c.name]) for c in self.containers)
                    )
            self._finish_unstarted()
            await self.write_status()
            log.info("%s/%s: %s", self.ns, self.name, self.phase())
            if self.terminating.is_set() and not self.gone:
                await self._delete_now()
        except Exception:
            log.exception("%s/%s: pod worker crashed", self.ns, self.name)
        finally:
            killer.cancel()
            for c in self._all_runs():
                await self._kill(c, signal.SIGKILL)

    async def _check_claims(self) -> None:
        """Every persistentVolumeClaim the pod mounts must exist (what the kubelet waits for
        before it mounts it; the mount itself is the mountPath directory on this machine)."""
        ns = self.pod["metadata"]["namespace"]
        for volume in self.pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is None:
                continue
            try:
                await self.runner.kube.get(
                    f"/api/v1/namespaces/{quote(ns)}/persistentvolumeclaims/{quote(claim)}"
                )
            except ApiError as exc:
                if exc.status != 404:
                    raise
                raise VolumeError(
                    f'persistentvolumeclaim "{claim}" not found (volume {volume["name"]})'
                ) from None

    def _finish_unstarted(self) -> None:
        """Containers that never ran in a terminated pod: what kubelet reports for them."""
        for c in self._all_runs():
            if not c.final and "terminated" not in c.state:
                c.state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "ContainerStatusUnknown",
                        "message": "The container could not be located when the pod was terminated",
                    }
                }
            c.final = True

    async def _prepare(self) -> dict[str, dict[str, str]] | None:
        """Resolve every container's env, retrying while Secrets/ConfigMaps are missing."""
        base = {**self.runner.base_env(self.pod), "HOME": str(self.workdir)}
        while not self.terminating.is_set():
            try:
                await self._check_claims()
                resolver = EnvResolver(self.runner.kube, self.pod, self.runner.node)
                envs = {c.name: await resolver.resolve(c.spec, base) for c in self._all_runs()}
                self.config_error = None
                return envs
            except ConfigError as exc:
                # Like kubelet: stay Pending (CreateContainerConfigError, or ContainerCreating
                # while a volume is missing) and retry.
                self.config_error = str(exc)
                for c in self._all_runs():
                    c.state = {"waiting": {"reason": exc.reason, "message": str(exc)}}
                await self.write_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.terminating.wait(), 2)
        return None

    async def _run_container(self, c: ContainerRun, env: dict[str, str]) -> int:
        """Run (and, per restartPolicy, restart) one container; returns its last exit code."""
        backoff = 1.0
        while True:
            code = await self._exec_once(c, env)
            restart = not c.init and (
                self.restart_policy == "Always"
                or (self.restart_policy == "OnFailure" and code != 0)
            )
            if not restart or self.terminating.is_set():
                c.final = True
                await self.write_status()
                return code
            c.last_state = c.state
            c.restart_count += 1
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff:.0f}s restarting failed container",
                }
            }
            await self.write_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.terminating.wait(), backoff)
            if self.terminating.is_set():
                c.state, c.final = c.last_state, True
                await self.write_status()
                return code
            backoff = min(backoff * 2, 10.0)

    async def _exec_once(self, c: ContainerRun, env: dict[str, str]) -> int:
        started = now()
        workdir = self.workdir / c.name
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.runner.log_dir / f"{self.ns}_{self.name}_{c.name}.log"
        try:
            argv = resolve_argv(c.spec, env)
            with log_path.open("ab") as out:
                c.proc = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Own process group: deletion signals reach the whole container.
                    start_new_session=True,
                    preexec_fn=_pdeathsig(),
                )
        except (OSError, ConfigError) as exc:
            # What containerd reports when exec fails: terminated, 128, StartError.
            with log_path.open("a") as out:
                out.write(f"podrunner: {exc}\n")
            c.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": str(exc),
                    "startedAt": started,
                    "finishedAt": now(),
                }
            }
            return 128
        if self.terminating.is_set():
            # Deletion raced with the start: the SIGTERM round already happened.
            await self._kill(c, signal.SIGKILL)
        c.state = {"running": {"startedAt": started}}
        log.info("%s/%s/%s: started pid %s: %s", self.ns, self.name, c.name, c.proc.pid, argv)
        await self.write_status()
        # Breadcrumb for ControlPlane.stop(): if this runner is SIGKILLed, pdeathsig only reaches
        # the container's main process; its children are found again through this file.
        pgid_file = workdir / PGID_FILE
        pgid_file.write_text(f"{c.proc.pid}\n")
        rc = await c.proc.wait()
        # The main process is gone; like a container runtime, kill what it left behind.
        await self._kill(c, signal.SIGKILL)
        pgid_file.unlink(missing_ok=True)
        code = 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N, as runtimes report
        term: Json = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
            "containerID": f"podrunner://{self.uid}/{c.name}/{c.restart_count}",
        }
        c.state = {"terminated": term}
        c.proc = None
        log.info("%s/%s/%s: exited %s", self.ns, self.name, c.name, code)
        return code

    async def _kill(self, c: ContainerRun, sig: int) -> None:
        if c.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(c.proc.pid, sig)

    async def _kill_on_termination(self) -> None:
        """On deletion: SIGTERM every container, SIGKILL after the grace period."""
        await self.terminating.wait()
        for c in self._all_runs():
            await self._kill(c, signal.SIGTERM)
        waits = [asyncio.ensure_future(c.proc.wait()) for c in self._all_runs() if c.proc]
        if waits:
            await asyncio.wait(waits, timeout=max(self.grace, 0.01))
        for c in self._all_runs():
            await self._kill(c, signal.SIGKILL)

    async def _delete_now(self) -> None:
        """Final step of graceful deletion: remove the object (kubelet deletes with grace 0)."""
        try:
            await self.runner.kube.request(
                "DELETE",
                pod_path(self.ns, self.name),
                {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("%s/%s: delete failed: %s", self.ns, self.name, exc)


# --------------------------------------------------------------------------------------------
# Node, scheduling, watch loop
# --------------------------------------------------------------------------------------------


class PodRunner:
    """The fake node: registers itself, binds pods, runs them."""

    def __init__(self, kube: KubeClient, node_name: str, log_dir: Path, work_dir: Path) -> None:
        self.kube = kube
        self.node_name = node_name
        self.log_dir = log_dir
        self.work_dir = work_dir
        self.workers: dict[str, PodWorker] = {}
        self.done: set[str] = set()  # uids of pods we finished; forgotten on DELETED
        self.binding: set[str] = set()
        self.node: Json = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self.labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                os.uname().machine, os.uname().machine
            ),
        }
        self.api_host, self.api_port = split_server(kube.server)

    def base_env(self, pod: Json) -> dict[str, str]:
        """Environment every container starts from (before its own env)."""
        env = {
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", os.defpath)]),
            "HOSTNAME": pod["metadata"]["name"],
            # What the kubelet injects; with no SA token mounted, in-cluster auth still fails.
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": self.api_port,
            "KUBERNETES_SERVICE_PORT_HTTPS": self.api_port,
        }
        extra = [n for n in os.environ.get("OBJMIG_PODRUNNER_PASS_ENV", "").split(",") if n]
        for name in (*PASS_ENV, *extra):
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- node ---------------------------------------------------------------------------------

    def _node_conditions(self) -> list[Json]:
        t = now()

        def cond(ctype: str, status: str, reason: str, msg: str) -> Json:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": msg,
                "lastHeartbeatTime": t,
                "lastTransitionTime": self._node_started,
            }

        return [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            cond("Ready", "True", "KubeletReady", "objmig pod runner is posting ready status"),
        ]

    async def register_node(self) -> None:
        """Create (or refresh) our Node, Ready and untainted, plus its Lease."""
        self._node_started = now()
        version = (await self.kube.get("/version")).get("gitVersion", "v0.0.0")
        resources = {"cpu": "32", "memory": "128Gi", "pods": "500", "ephemeral-storage": "500Gi"}
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": self._node_conditions(),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "objmig",
                "systemUUID": "objmig",
                "bootID": "objmig",
                "kernelVersion": os.uname().release,
                "osImage": "objmig pod runner",
                "containerRuntimeVersion": "podrunner://1",
                "kubeletVersion": version,  # version-skew checks compare against it
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self.labels["kubernetes.io/arch"],
            },
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.labels},
            "spec": {},
            "status": status,
        }
        try:
            await self.kube.request("POST", "/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        # The TaintNodesByCondition admission plugin taints new nodes not-ready; the node
        # lifecycle controller (not run here) would lift it. We do, so the node looks normal.
        await self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}",
            {"spec": {"taints": []}},
            content_type="application/merge-patch+json",
        )
        self.node = await self.kube.request(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            {"status": status},
            content_type="application/merge-patch+json",
        )
        await self._renew_lease()

    async def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": 40,
            "renewTime": now_micro(),
        }
        try:
            await self.kube.request(
                "PATCH", path, {"spec": spec}, content_type="application/merge-patch+json"
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            await self.kube.request(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {"metadata": {"name": self.node_name}, "spec": spec},
            )

    async def heartbeat(self) -> None:
        """Keep Lease and Ready condition fresh (matters only if node-lifecycle ever runs)."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 10)
            if self._stop.is_set():
                return
            try:
                await self._renew_lease()
                await self.kube.request(
                    "PATCH",
                    f"/api/v1/nodes/{self.node_name}/status",
                    {"status": {"conditions": self._node_conditions()}},
                    content_type="application/strategic-merge-patch+json",
                )
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.warning("heartbeat failed: %s", exc)

    # -- scheduling ---------------------------------------------------------------------------

    def _schedulable(self, pod: Json) -> bool:
        spec = pod["spec"]
        if spec.get("schedulerName", DEFAULT_SCHEDULER) != DEFAULT_SCHEDULER:
            return False
        if spec.get("schedulingGates"):
            return False
        selector = spec.get("nodeSelector") or {}
        return all(self.labels.get(k) == v for k, v in selector.items())

    async def bind(self, pod: Json) -> None:
        """POST pods/binding: what kube-scheduler does once it picked a node."""
        meta = pod["metadata"]
        try:
            await self.kube.request(
                "POST",
                pod_path(meta["namespace"], meta["name"], "binding"),
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": meta["name"], "uid": meta["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
                },
            )
        except ApiError as exc:
            if exc.status not in (404, 409):  # gone, or already bound
                log.warning("bind %s/%s failed: %s", meta["namespace"], meta["name"], exc)
        finally:
            self.binding.discard(meta["uid"])

    # -- pods ---------------------------------------------------------------------------------

    def on_pod(self, event: str, pod: Json) -> None:
        """React to one watch event (level-triggered: safe to call with any pod version)."""
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        phase = pod.get("status", {}).get("phase", "Pending")
        node = spec.get("nodeName")
        if event == "DELETED":
            worker = self.workers.pop(uid, None)
            if worker is not None:
                worker.vanished()
            self.done.discard(uid)
            shutil.rmtree(self.work_dir / f"{meta['namespace']}_{meta['name']}_{uid[:8]}", True)
            return
        if not node:
            if (
                phase == "Pending"
                and not meta.get("deletionTimestamp")
                and uid not in self.binding
                and self._schedulable(pod)
            ):
                self.binding.add(uid)
                self._spawn(self.bind(pod))
            return
        if node != self.node_name:
            return
        worker = self.workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        if uid in self.done or phase in ("Succeeded", "Failed"):
            # Terminal pod being deleted with a grace period: finish the deletion.
            if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds"):
                self._spawn(self._delete(meta["namespace"], meta["name"], uid))
            return
        worker = PodWorker(self, pod)
        if phase != "Pending":
            # Running on our node but unknown to us: a previous runner started it. Its
            # processes died with that runner, so report it terminated.
            worker.terminating.set()
        self.workers[uid] = worker
        worker.update(pod)
        worker.task = self._spawn(self._run_worker(worker))

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        finally:
            self.done.add(worker.uid)
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]

    async def _delete(self, ns: str, name: str, uid: str) -> None:
        with contextlib.suppress(ApiError):
            await self.kube.request(
                "DELETE",
                pod_path(ns, name),
                {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
            )

    async def watch_pods(self) -> None:
        """List+watch all pods forever (re-list after a 410 Gone or a broken stream)."""
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listing = await self.kube.get("/api/v1/pods")
                    rv = listing["metadata"]["resourceVersion"]
                    present = {p["metadata"]["uid"] for p in listing["items"]}
                    for uid in [u for u in self.workers if u not in present]:
                        self.workers.pop(uid).vanished()
                    for pod in listing["items"]:
                        self.on_pod("ADDED", pod)
                async for ev in self.kube.watch("/api/v1/pods", rv):
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        if obj.get("code") == 410:
                            rv = None
                            break
                        raise ApiError(int(obj.get("code", 500)), json.dumps(obj))
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] != "BOOKMARK":
                        self.on_pod(ev["type"], obj)
            except (ApiError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("pod watch broke (%s); re-listing", exc)
                rv = None
                await asyncio.sleep(0.5)

    async def run(self) -> None:
        """Register the node and serve pods until :meth:`stop`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        await self.register_node()
        log.info("node %s registered and Ready", self.node_name)
        watcher = self._spawn(self.watch_pods())
        self._spawn(self.heartbeat())
        await self._stop.wait()
        watcher.cancel()
        # Shutting down: stop every pod's processes quickly (the cluster is going away).
        for worker in list(self.workers.values()):
            worker.vanished()
        pending = [w.task for w in self.workers.values() if w.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await self.kube.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop.set()


def split_server(server: str) -> tuple[str, str]:
    """Host and port of the apiserver URL (``https://127.0.0.1:6443`` -> 127.0.0.1, 6443)."""
    parts = urlsplit(server)
    return parts.hostname or "127.0.0.1", str(parts.port or 443)


async def amain(args: argparse.Namespace) -> None:
    """Run until SIGTERM/SIGINT."""
    kube = await KubeClient.from_kubeconfig(args.kubeconfig)
    runner = PodRunner(kube, args.node_name, Path(args.log_dir), Path(args.work_dir))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    await runner.run()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", default="objmig-node")
    parser.add_argument("--log-dir", required=True, help="per-container log files go here")
    parser.add_argument("--work-dir", required=True, help="containers' working directories")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
