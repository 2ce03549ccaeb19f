"""A real, local Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager.

There is no kubelet and no scheduler; :mod:`tests.support.podrunner` plays both (it registers a
Node, binds pending pods to it and runs their containers as local processes). Everything runs
on loopback with free ports, in a throw-away state directory, as child processes in their own
process groups so teardown kills exactly what was started here and nothing else.

Used by the pytest fixtures in ``tests/fixtures/cluster.py`` and, by hand, through
``scripts/cluster up|down|env`` (which calls ``python -m tests.support.cluster``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.pki import make_cert, new_key, write_key

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_SCRIPT = REPO_ROOT / "scripts" / "k8s-tools.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")

#: Controllers the test cluster runs. Deliberately NOT node-lifecycle (the pod runner is not a
#: kubelet that could answer its health checks), nor the cloud / CSR / volume controllers.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "pod-garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",  # admin/edit/view roles aggregate CRD rules
)

#: Static bearer token of the cluster admin (member of system:masters); handy for plain HTTP.
ADMIN_USER = "objmig-admin"


class BinariesMissing(RuntimeError):
    """The Kubernetes binaries are not built/cached; ``scripts/k8s-tools.sh`` produces them."""


class ComponentDied(RuntimeError):
    """A control-plane process exited while we waited for it."""


# --------------------------------------------------------------------------------------------
# Locating the binaries
# --------------------------------------------------------------------------------------------


def pinned_k8s_version() -> str:
    """The Kubernetes version pinned in ``scripts/k8s-tools.sh`` (the single source of truth)."""
    match = re.search(r'^K8S_VERSION="(v[0-9.]+)"', TOOLS_SCRIPT.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError(f"no K8S_VERSION pin found in {TOOLS_SCRIPT}")
    return match.group(1)


def _has_all(directory: Path, names: Sequence[str] = BINARIES) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in names)


def cached_bin_dir() -> Path:
    """Where ``scripts/k8s-tools.sh`` puts the binaries (may not exist yet)."""
    cache = Path(os.environ.get("OBJMIG_CACHE") or Path.home() / ".cache" / "objmig")
    return cache / "k8s" / pinned_k8s_version() / "bin"


def find_bin_dir(*, build: bool = False, names: Sequence[str] = BINARIES) -> Path:
    """Return a directory holding etcd, kube-apiserver, kube-controller-manager and kubectl
    (or the binaries in ``names``: the real node also needs kube-scheduler and kubelet).

    Order: ``$KUBEBUILDER_ASSETS`` (if complete), then the k8s-tools cache. With ``build=True`` a
    missing cache is filled by running ``scripts/k8s-tools.sh`` (a cold build takes 10-25 min),
    otherwise :class:`BinariesMissing` is raised - reading the cache path directly keeps the
    common, warm case free of a subprocess.
    """
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and _has_all(Path(assets), names):
        return Path(assets)
    cached = cached_bin_dir()
    if _has_all(cached, names):
        return cached
    if not build:
        raise BinariesMissing(
            f"Kubernetes binaries ({', '.join(names)}) not found in {cached}"
            + (f" nor KUBEBUILDER_ASSETS={assets}" if assets else "")
            + f"; build them with {TOOLS_SCRIPT.relative_to(REPO_ROOT)} (cold: 10-25 min)"
        )
    out = subprocess.run([str(TOOLS_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    bin_dir = Path(out.stdout.strip().splitlines()[-1])
    if not _has_all(bin_dir, names):
        raise BinariesMissing(f"{TOOLS_SCRIPT} reported {bin_dir} but it is incomplete")
    return bin_dir


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A currently free loopback TCP port (racy by nature; start-up retries cover the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies.

    Without it a crashed or SIGKILLed pytest would leave etcd and the apiserver running forever.
    The libc function is resolved here, in the parent, so the child only makes one syscall.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    return preexec


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ComponentDied:
            raise  # waiting longer cannot help
        except Exception as exc:  # the thing polled is often "not up yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what or predicate!r}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise TimeoutError(msg)
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Paths of the certificates and keys the control plane uses."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path  # RSA private key: signs service-account tokens
    sa_pub: Path  # its public half: verifies them
    token_file: Path  # static token auth file (admin token)
    admin_token: str


def generate_pki(directory: Path) -> Pki:
    """Create a throw-away CA, apiserver serving cert, admin client cert and SA signing key."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM

    ca_key = new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "objmig-test-ca")])
    ca = make_cert(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)

    serving_key = new_key()
    serving = make_cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        serving_key.public_key(),
        ca_name,
        ca_key,
        sans=[
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),  # first IP of the service range
        ],
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
    )

    # Client certs authenticate as CN (user) / O (groups); system:masters bypasses RBAC.
    admin_key = new_key()
    admin = make_cert(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
            ]
        ),
        admin_key.public_key(),
        ca_name,
        ca_key,
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )

    sa_key = new_key()
    token = secrets.token_hex(24)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        token_file=directory / "tokens.csv",
        admin_token=token,
    )
    pki.ca_cert.write_bytes(ca.public_bytes(pem))
    write_key(pki.ca_key, ca_key)
    pki.serving_cert.write_bytes(serving.public_bytes(pem))
    write_key(pki.serving_key, serving_key)
    pki.admin_cert.write_bytes(admin.public_bytes(pem))
    write_key(pki.admin_key, admin_key)
    write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    # token,user,uid,"group1,group2"
    pki.token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    pki.token_file.chmod(0o600)
    return pki


def write_kubeconfig(path: Path, server: str, pki: Pki, *, context: str = "objmig-test") -> None:
    """Write a self-contained kubeconfig (certs inlined) for the admin user."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": ADMIN_USER,
                "user": {
                    "client-certificate-data": b64(pki.admin_cert),
                    "client-key-data": b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": context,
                "context": {"cluster": context, "user": ADMIN_USER, "namespace": "default"},
            }
        ],
        "current-context": context,
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


@dataclass
class Component:
    """One child process of the control plane, in its own process group, logging to a file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the process; stdout and stderr go to :attr:`log_path`."""
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                # Own session = own process group: stop() signals the whole group (children of
                # the component included) and never anything we did not start.
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),  # orphan protection, see there
            )

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the component's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL it. Idempotent."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: pgid == pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        # Also reap stragglers in the group (e.g. a leader that exited before its children).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


# --------------------------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------------------------


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (+ the pod runner) in ``state_dir``.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. Attributes of interest to
    tests: :attr:`kubeconfig`, :attr:`server`, :attr:`bin_dir`, :attr:`pod_logs_dir`.
    """

    bin_dir: Path
    state_dir: Path
    with_pod_runner: bool = True
    node_name: str = "objmig-node"
    start_timeout: float = 90.0
    components: list[Component] = field(default_factory=list)
    server: str = ""
    pki: Pki | None = None
    startup_seconds: float = 0.0

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (system:masters)."""
        return self.state_dir / "kubeconfig"

    @property
    def logs_dir(self) -> Path:
        """Logs of etcd, apiserver, controller-manager and pod runner."""
        return self.state_dir / "logs"

    @property
    def pod_logs_dir(self) -> Path:
        """Where the pod runner writes ``<namespace>_<pod>_<container>.log``."""
        return self.state_dir / "pod-logs"

    @property
    def pod_work_dir(self) -> Path:
        """Parent of each container's temporary working directory."""
        return self.state_dir / "pod-work"

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything and wait until the apiserver is ready and the node registered."""
        t0 = time.monotonic()
        for d in (self.state_dir, self.logs_dir, self.pod_logs_dir, self.pod_work_dir):
            d.mkdir(parents=True, exist_ok=True)
        try:
            self.pki = generate_pki(self.state_dir / "pki")
            self._start_etcd()
            self._start_apiserver()
            write_kubeconfig(self.kubeconfig, self.server, self.pki)
            self._start_controller_manager()
            self._start_nodes()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop components in reverse start order (pods first, etcd last)."""
        for comp in reversed(self.components):
            comp.stop()
        self.components.clear()
        reap_pod_processes(self.pod_work_dir)

    def check_alive(self) -> None:
        """Raise (with the log tail) if a component died - better than tests timing out."""
        for comp in self.components:
            if not comp.alive():
                raise ComponentDied(
                    f"{comp.name} is not running (exit {comp.proc and comp.proc.returncode}); "
                    f"log {comp.log_path}:\n{comp.log_tail()}"
                )

    # -- components ---------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Component:
        comp = Component(name, argv, self.logs_dir / f"{name}.log", env)
        comp.start()
        self.components.append(comp)
        return comp

    def _wait(self, comp: Component, predicate: Callable[[], Any], what: str) -> None:
        def check() -> Any:
            if not comp.alive():
                raise ComponentDied(
                    f"{comp.name} exited with {comp.proc and comp.proc.returncode} while "
                    f"waiting for {what}; log {comp.log_path}:\n{comp.log_tail()}"
                )
            return predicate()

        try:
            wait_until(check, timeout=self.start_timeout, what=what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log {comp.log_path}:\n{comp.log_tail()}") from None

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        comp = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                # Test data is disposable: skipping fsync makes etcd (and every write) much faster.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait(comp, lambda: _http_ok(f"{self.etcd_url}/health"), "etcd /health")

    def _start_nodes(self) -> None:
        """Start what runs pods (the pod runner here; a real kubelet in a subclass)."""
        if self.with_pod_runner:
            self._start_pod_runner()

    def _apiserver_args(self) -> list[str]:
        """Flags a subclass adds to or changes in the API server's command line."""
        # As envtest: pods get no projected token volume (there is no kubelet to mount it)
        # and need not wait for their ServiceAccount to exist.
        return ["--disable-admission-plugins=ServiceAccount"]

    def _controllers(self) -> tuple[str, ...]:
        """The kube-controller-manager controllers to run."""
        return CONTROLLERS

    def _start_apiserver(self) -> None:
        assert self.pki is not None
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        pki = self.pki
        comp = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={pki.token_file}",
                "--authorization-mode=RBAC",
                # TokenRequest needs an issuer plus the signing / verifying keys.
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                *self._apiserver_args(),
                "--allow-privileged=true",
                # One apiserver, no other instance to reconcile endpoints with.
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )
        self._wait(comp, lambda: self._api_ok("/readyz"), "kube-apiserver /readyz")

    def _start_controller_manager(self) -> None:
        assert self.pki is not None
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.state_dir / 'kcm-certs'}",
                "--leader-elect=false",
                f"--controllers={','.join(self._controllers())}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                # Tests create and finish many Jobs quickly; more workers shorten the tail.
                "--concurrent-job-syncs=10",
                "--concurrent-gc-syncs=10",
                "--v=1",
            ],
        )
        # Ready once it serves the Namespace objects' default ServiceAccount - a cheap proof that
        # informers synced and controllers are running.
        comp = self.components[-1]
        self._wait(
            comp,
            lambda: self.kubectl_ok("get", "serviceaccount", "default", "-n", "default"),
            "kube-controller-manager (default ServiceAccount)",
        )

    def _start_pod_runner(self) -> None:
        comp = self._spawn(
            "pod-runner",
            [
                sys.executable,
                "-m",
                "tests.support.podrunner",
                f"--kubeconfig={self.kubeconfig}",
                f"--node-name={self.node_name}",
                f"--log-dir={self.pod_logs_dir}",
                f"--work-dir={self.pod_work_dir}",
            ],
            env=repo_python_env(),
        )
        self._wait(
            comp,
            lambda: self.kubectl_ok(
                "wait", "--for=condition=Ready", f"node/{self.node_name}", "--timeout=1s"
            ),
            f"node {self.node_name} Ready",
        )

    # -- clients ------------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        return ssl.create_default_context(cafile=str(self.pki.ca_cert))

    def _api_ok(self, path: str) -> bool:
        assert self.pki is not None
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.pki.admin_token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=2, context=self._ssl_context()) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api_get(self, path: str) -> Any:
        """GET a JSON document from the apiserver as admin (e.g. ``/version``)."""
        assert self.pki is not None
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.pki.admin_token}"}
        )
        with urllib.request.urlopen(req, timeout=10, context=self._ssl_context()) as resp:
            return json.load(resp)

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises with kubectl's stderr when ``check`` fails."""
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, f"kubectl {' '.join(args)}: {proc.stderr}"
            )
        return proc

    def kubectl_ok(self, *args: str) -> bool:
        """True when kubectl succeeds (used for polling)."""
        return self.kubectl(*args, check=False, timeout=15).returncode == 0

    def kubectl_json(self, *args: str) -> Any:
        """``kubectl get ... -o json`` parsed."""
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def env(self) -> dict[str, str]:
        """Environment variables a client process needs to reach this cluster."""
        return {"KUBECONFIG": str(self.kubeconfig)}

    def apply_yaml(
        self,
        manifest: str | dict[str, Any] | Sequence[dict[str, Any]],
        namespace: str | None = None,
    ) -> str:
        """``kubectl apply --server-side`` one or more objects (YAML text or dicts).

        Server-side apply avoids the last-applied annotation, which is too small for big CRDs.
        """
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, dict):
            text = yaml.safe_dump(manifest)
        else:
            text = yaml.safe_dump_all(list(manifest))
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=objmig-tests"]
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, "-f", "-", input=text).stdout

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """stdout+stderr of a pod's container(s), as captured by the pod runner.

        ``kubectl logs`` cannot work (there is no kubelet API); read these files instead. With
        no ``container`` the logs of all its containers are concatenated (init ones included).
        """
        if container is not None:
            path = self.pod_logs_dir / f"{namespace}_{pod}_{container}.log"
            return path.read_text(errors="replace") if path.exists() else ""
        return "".join(
            p.read_text(errors="replace")
            for p in sorted(
                self.pod_logs_dir.glob(f"{glob_escape(namespace)}_{glob_escape(pod)}_*.log")
            )
            # pod names cannot contain "_", so the prefix is unambiguous
        )

    def namespace_pod_logs(self, namespace: str) -> dict[str, str]:
        """Every captured container log of a namespace's pods, by ``<pod>/<container>``."""
        logs = {}
        for path in sorted(self.pod_logs_dir.glob(f"{glob_escape(namespace)}_*.log")):
            _, pod, container = path.stem.split("_", 2)
            logs[f"{pod}/{container}"] = path.read_text(errors="replace")
        return logs

    @contextlib.asynccontextmanager
    async def api_client(self) -> AsyncIterator[Any]:
        """A ``kubernetes_asyncio`` ApiClient for this cluster (async context manager)."""
        from kubernetes_asyncio import client, config

        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        async with client.ApiClient(configuration=cfg) as api:
            yield api


def reap_pod_processes(pod_work_dir: Path) -> int:
    """SIGKILL container processes a dead pod runner left behind; return how many.

    The runner kills its containers on a normal shutdown. If it was SIGKILLed, only each
    container's main process dies (pdeathsig); its children live on. The runner leaves the
    process-group id of every running container in ``<container workdir>/.podrunner-pgid``;
    a process is killed only if it is in such a group AND its cwd is inside ``pod_work_dir``,
    so nothing we did not start is touched even if a pgid was reused.
    """
    from tests.support.podrunner import PGID_FILE

    pgids: set[int] = set()
    for crumb in pod_work_dir.glob(f"*/*/{PGID_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            pgids.add(int(crumb.read_text()))
    if not pgids:
        return 0
    root = pod_work_dir.resolve()
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Field 5 of /proc/PID/stat is the pgid; split after the ")" ending the comm field.
            pgid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
            if pgid not in pgids or not (entry / "cwd").resolve().is_relative_to(root):
                continue
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
        except (OSError, ValueError, IndexError):
            continue
    return killed


def repo_python_env() -> dict[str, str]:
    """This environment, with the repository on PYTHONPATH (for ``python -m tests.support...``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --------------------------------------------------------------------------------------------
# `scripts/cluster up|down|env|status`: a detached supervisor keeps the cluster for humans
# --------------------------------------------------------------------------------------------


def default_state_dir() -> Path:
    """Where ``scripts/cluster`` keeps its cluster (override with ``OBJMIG_CLUSTER_DIR``)."""
    env = os.environ.get("OBJMIG_CLUSTER_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"objmig-cluster-{os.getuid()}"


def _supervisor_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / "supervisor.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    # Guard against pid reuse: the process must be our supervisor for this state dir.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if b"serve" in cmdline and str(state_dir).encode() in cmdline else None


def _serve(state_dir: Path) -> int:
    """Run the control plane in the foreground until SIGTERM/SIGINT (the ``up`` daemon)."""
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    (state_dir / "ready").unlink(missing_ok=True)
    (state_dir / "supervisor.pid").write_text(f"{os.getpid()}\n")
    cp = ControlPlane(bin_dir=find_bin_dir(build=True), state_dir=state_dir)
    try:
        cp.start()
        (state_dir / "ready").write_text(
            json.dumps({"server": cp.server, "startup_seconds": round(cp.startup_seconds, 2)})
        )
        print(f"control plane up in {cp.startup_seconds:.1f}s at {cp.server}", flush=True)
        while not stop:
            time.sleep(0.5)
            dead = [c.name for c in cp.components if not c.alive()]
            if dead:
                print(f"component(s) died: {dead}; shutting down", flush=True)
                return 1
        return 0
    finally:
        cp.stop()
        (state_dir / "ready").unlink(missing_ok=True)
        (state_dir / "supervisor.pid").unlink(missing_ok=True)


def _up(state_dir: Path) -> int:
    if _supervisor_pid(state_dir) and (state_dir / "ready").exists():
        print(f"export KUBECONFIG={state_dir / 'kubeconfig'}")
        return 0
    if state_dir.exists():
        shutil.rmtree(state_dir)  # stale state of a cluster that is gone
    state_dir.mkdir(parents=True)
    find_bin_dir(build=True)  # build in the foreground so the user sees progress
    with (state_dir / "supervisor.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cluster", "serve", "--dir", str(state_dir)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlive this shell command
        )
    t0 = time.monotonic()
    while not (state_dir / "ready").exists():
        if proc.poll() is not None:
            print(
                f"cluster failed to start; see {state_dir}/supervisor.log and {state_dir}/logs",
                file=sys.stderr,
            )
            print((state_dir / "supervisor.log").read_text()[-3000:], file=sys.stderr)
            return 1
        if time.monotonic() - t0 > 180:
            print("cluster did not become ready in 180s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    info = json.loads((state_dir / "ready").read_text())
    print(f"# control plane up in {info['startup_seconds']}s at {info['server']}", file=sys.stderr)
    print(f"# pod logs: {state_dir / 'pod-logs'}", file=sys.stderr)
    print(f"export KUBECONFIG={state_dir / 'kubeconfig'}")
    return 0


def _down(state_dir: Path) -> int:
    pid = _supervisor_pid(state_dir)
    if pid is None:
        print("no cluster running", file=sys.stderr)
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _supervisor_pid(state_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _supervisor_pid(state_dir):
        os.killpg(pid, signal.SIGKILL)  # the supervisor's own group (start_new_session)
    print("cluster stopped", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``scripts/cluster``."""
    parser = argparse.ArgumentParser(prog="scripts/cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env", "status", "serve"])
    parser.add_argument("--dir", type=Path, default=None, help="state directory")
    args = parser.parse_args(argv)
    state_dir: Path = (args.dir or default_state_dir()).resolve()
    if args.command == "serve":
        return _serve(state_dir)
    if args.command == "up":
        return _up(state_dir)
    if args.command == "down":
        return _down(state_dir)
    running = _supervisor_pid(state_dir) is not None and (state_dir / "ready").exists()
    if args.command == "env":
        if not running:
            print("no cluster running; start one with scripts/cluster up", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={state_dir / 'kubeconfig'}")
        return 0
    # status
    print("running" if running else "stopped", state_dir)
    return 0 if running else 1


@contextlib.contextmanager
def running_control_plane(state_dir: Path, bin_dir: Path | None = None) -> Iterator[ControlPlane]:
    """Context manager: a started :class:`ControlPlane`, stopped on exit."""
    cp = ControlPlane(bin_dir=bin_dir or find_bin_dir(), state_dir=state_dir)
    with cp:
        yield cp


if __name__ == "__main__":
    sys.exit(main())
