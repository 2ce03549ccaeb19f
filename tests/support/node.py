"""A real Kubernetes node for tests: kube-scheduler, kubelet, containerd and runc.

:class:`NodeCluster` is a :class:`~tests.support.cluster.ControlPlane` whose pods are run by a
real kubelet through containerd and runc, from images imported into containerd (the objmig
image built from the Dockerfile by ``scripts/image.sh``, and a locally built pause image), and
scheduled by a real kube-scheduler. Nothing is pulled: pods use ``imagePullPolicy:
IfNotPresent`` and their images are already there.

The node lives in namespaces of its own, created by ``unshare`` for the node's init process
(``python -m tests.support.node init``, PID 1 of a new PID namespace):

* **network**: a fresh network namespace with only a loopback device (holding the node IP
  ``10.88.0.2`` and the ``kubernetes`` Service IP ``10.0.0.1``) and, once the first pod runs,
  the CNI bridge ``cni0`` of the pod network ``10.244.0.0/24``. It has no default route, so
  nothing on the node can reach anything outside it. The control plane, PostgreSQL and MinIO
  stay on the host's loopback; relays (``python -m tests.support.node relay``) carry the few
  connections across: ``10.0.0.1:443`` in the node to the API server (the kubelet's and the
  pods' in-cluster address), ``10.88.0.2:<port>`` to a host loopback port the test exposes
  (:meth:`NodeCluster.expose`), and the API server's own connections to the kubelet
  (logs, exec, port-forward) through an HTTP CONNECT proxy on a unix socket that the API
  server's egress selector uses;
* **mount**: private, so the kubelet's and containerd's fixed paths (``/var/lib/kubelet``,
  ``/var/log/containers``, ``/run``) are the node's own and every mount they make (overlay
  root filesystems, tmpfs volumes, netns bind mounts) goes away with the node;
* **PID**: when the init process dies, the kernel kills every process of the node: kubelet,
  containerd, shims and containers. A SIGKILLed pytest leaves nothing running.

Host-wide state the node touches, and how it is undone: cgroup directories
``/sys/fs/cgroup/<controller>/objmig-node-<pid>-<token>`` (the kubelet's ``cgroupRoot``;
removed by :meth:`NodeCluster.stop`, and by the next node if a killed session left them), and
the empty mount points ``/var/lib/kubelet`` and ``/var/log/containers``. The kubelet wants
``vm.overcommit_memory=1``, ``kernel.panic=10`` and ``kernel.panic_on_oops=1`` and would set
them host-wide; in the node's mount namespace it reads those values from bind-mounted files
instead, so the host's settings stay as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import (
    BINARIES,
    CONTROLLERS,
    REPO_ROOT,
    Component,
    ControlPlane,
    free_port,
    repo_python_env,
    wait_until,
)

NODE_NAME = "objmig-node"
NODE_IP = "10.88.0.2"
POD_SUBNET = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
#: The ``kubernetes`` Service's ClusterIP: the first address of ControlPlane's service range.
API_SERVICE_IP = "10.0.0.1"
NODE_BINARIES = (*BINARIES, "kube-scheduler", "kubelet")
RUNTIME_COMMANDS = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "unshare", "ip")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local")
IMAGE_SCRIPT = REPO_ROOT / "scripts" / "image.sh"
CGROUP_PREFIX = "objmig-node-"
#: What the kubelet would write host-wide (``setupKernelTunables``) if it read anything else.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}
#: containerd's namespace for Kubernetes (CRI) containers and images.
CRI_NAMESPACE = "k8s.io"

_CLONE_NEWNET = 0x40000000


class NodeUnavailable(RuntimeError):
    """Something the real node needs is missing on this machine (the message says what)."""


# --------------------------------------------------------------------------------------------
# Images and prerequisites
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    """The OCI archives ``scripts/image.sh`` produced and the references inside them."""

    directory: Path
    objmig: str
    pause: str

    @property
    def archives(self) -> list[Path]:
        return [self.directory / "pause.oci.tar", self.directory / "objmig.oci.tar"]

    @property
    def objmig_repository(self) -> str:
        return self.objmig.rpartition(":")[0]

    @property
    def objmig_tag(self) -> str:
        return self.objmig.rpartition(":")[2]


def build_images() -> Images:
    """Run ``scripts/image.sh`` (a cache lookup when the inputs did not change)."""
    try:
        out = subprocess.run(
            [str(IMAGE_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True, timeout=1800
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise NodeUnavailable(f"{IMAGE_SCRIPT.name} failed: {exc}") from exc
    directory = Path(out.stdout.strip().splitlines()[-1])
    refs = dict(
        line.split("=", 1) for line in (directory / "images.env").read_text().split() if line
    )
    return Images(directory, refs["OBJMIG_IMAGE"], refs["PAUSE_IMAGE"])


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run the node (empty when nothing)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (namespaces, cgroups, mounts)")
    missing += [
        f"{cmd} (scripts/node-runtime.sh)" for cmd in RUNTIME_COMMANDS if not shutil.which(cmd)
    ]
    missing += [
        f"CNI plugin {CNI_BIN_DIR / plugin}"
        for plugin in CNI_PLUGINS
        if not (CNI_BIN_DIR / plugin).exists()
    ]
    if not cgroup_hierarchies():
        missing.append("a cgroup filesystem under /sys/fs/cgroup")
    return missing


# --------------------------------------------------------------------------------------------
# cgroups
# --------------------------------------------------------------------------------------------


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: each v1 controller's, and the v2 one if mounted."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mountpoint, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2") and mountpoint.startswith("/sys/fs/cgroup"):
            found.append(Path(mountpoint))
    return found


def create_cgroup_root(name: str) -> None:
    """Create the kubelet's ``cgroupRoot`` in every hierarchy (it refuses to start without).

    A new v1 cpuset cgroup starts with no CPUs and no memory nodes; it gets its parent's.
    """
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / name
        path.mkdir(exist_ok=True)
        for key in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / key).exists() and not (path / key).read_text().strip():
                (path / key).write_text((hierarchy / key).read_text())


def remove_cgroup_root(name: str, timeout: float = 15.0) -> None:
    """Remove a cgroup root and everything below it once no process is left in it."""
    deadline = time.monotonic() + timeout
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        while root.exists():
            # Deepest first: a cgroup directory can only be removed once it has no children.
            for directory in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if directory.is_dir():
                    with contextlib.suppress(OSError):
                        directory.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()
            if not root.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the kernel is still tearing down the node's last processes


def reap_stale_cgroup_roots() -> None:
    """Remove cgroup roots of nodes whose test session is gone (killed before its clean-up).

    The name carries the pytest process's pid; a root is stale only if that process is dead,
    so a node of a concurrent session is never touched.
    """
    names = set()
    for hierarchy in cgroup_hierarchies():
        for path in hierarchy.glob(f"{CGROUP_PREFIX}*"):
            match = re.fullmatch(rf"{CGROUP_PREFIX}(\d+)-[0-9a-f]+", path.name)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                names.add(path.name)
    for name in names:
        remove_cgroup_root(name, timeout=2.0)


# --------------------------------------------------------------------------------------------
# Configuration files
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitConfig:
    """What the node's init process needs; written as JSON next to the node's state."""

    state_dir: str
    node_name: str
    kubelet: str
    kubelet_config: str
    kubelet_kubeconfig: str
    containerd_config: str
    containerd_socket: str
    archives: list[str]

    @classmethod
    def load(cls, path: Path) -> InitConfig:
        return cls(**json.loads(path.read_text()))


def containerd_config(state: Path, socket_path: Path, pause_image: str, cni_conf_dir: Path) -> str:
    """containerd 1.6's config (version 2): everything under the node's state directory."""
    return f"""version = 2
root = "{state / "containerd"}"
# /run is the node's own tmpfs: runc state, shim sockets and pod netns mounts stay private.
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{socket_path}"

[plugins."io.containerd.grpc.v1.cri"]
  # Built here (scripts/pause); registry.k8s.io/pause is not reachable.
  sandbox_image = "{pause_image}"
  # Root on this VM lacks CAP_SYS_RESOURCE, so runc cannot lower a process's oom_score_adj
  # below containerd's own (0): pod sandboxes (-998) and Guaranteed containers (-997) would
  # fail to start. This clamps them to 0, as rootless containerd does.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd here: the kubelet and runc both use the cgroupfs driver.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf_dir}"
"""


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    """A bridge in the node's network namespace; pods route everything via the node."""
    return {
        "cniVersion": "1.0.0",
        "name": "objmig-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                # No NAT and no iptables: nothing leaves the node's namespace anyway.
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


def kubelet_config(
    *, state: Path, ca_file: Path, socket_path: Path, cgroup_root: str
) -> dict[str, Any]:
    """KubeletConfiguration for this node (see docs/testing-kubernetes.md for each choice)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The API server authenticates with the admin client certificate (logs, exec).
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "address": NODE_IP,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "containerRuntimeEndpoint": f"unix://{socket_path}",
        # This kernel mounts cgroup v1 controllers (plus a v2 hierarchy with only hugetlb):
        # a hybrid, which the kubelet treats as v1 and, from v1.35 on, refuses unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "podLogsDir": str(state / "pod-logs"),
        # Pods' resolv.conf names the node IP, where nothing answers: lookups fail at once
        # instead of reaching the host's resolver (and no MissingClusterDNS warning per pod).
        "clusterDNS": [NODE_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": "",
        "makeIPTablesUtilChains": False,
        # A shared development disk is often fuller than the defaults (10 % / 15 % free)
        # allow; evicting test pods for it would only make tests flaky.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }


def egress_selector_config(socket_path: Path) -> dict[str, Any]:
    """The API server reaches nodes and pods only through the node's CONNECT proxy."""
    return {
        "apiVersion": "apiserver.k8s.io/v1beta1",
        "kind": "EgressSelectorConfiguration",
        "egressSelections": [
            {
                "name": "cluster",
                "connection": {
                    "proxyProtocol": "HTTPConnect",
                    "transport": {"uds": {"udsName": str(socket_path)}},
                },
            }
        ],
    }


# --------------------------------------------------------------------------------------------
# The node's init process (runs inside the new namespaces)
# --------------------------------------------------------------------------------------------


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)


def _setup_mounts(state: Path) -> None:
    # unshare gave us a private copy of the host's mounts; these stay in the node.
    _run("mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/run")
    # containerd's content and snapshots in memory: importing the images took 20 s on the busy
    # shared disk, 3-5 s into memory; and they go with the node.
    (state / "containerd").mkdir(exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", "mode=700,size=4g", "tmpfs", str(state / "containerd"))
    for target, source in (
        (Path("/var/lib/kubelet"), state / "kubelet"),
        (Path("/var/log/containers"), state / "container-logs"),
    ):
        source.mkdir(parents=True, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)  # an empty mount point on the host
        _run("mount", "--bind", str(source), str(target))
    sysctls = state / "sysctls"
    sysctls.mkdir(exist_ok=True)
    for name, value in KUBELET_SYSCTLS.items():
        fake = sysctls / name.replace("/", ".")
        fake.write_text(f"{value}\n")
        _run("mount", "--bind", "-o", "ro", str(fake), f"/proc/sys/{name}")


def _setup_network() -> None:
    _run("ip", "link", "set", "lo", "up")
    for address in (NODE_IP, API_SERVICE_IP):
        _run("ip", "addr", "add", f"{address}/32", "dev", "lo")


def _wait_connectable(address: tuple[str, int] | str, timeout: float, what: str) -> None:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET

    def ok() -> bool:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            return sock.connect_ex(address) == 0

    wait_until(ok, timeout=timeout, interval=0.1, what=what)


def node_init(config: InitConfig) -> int:
    """PID 1 of the node: set up, start containerd and the kubelet, reap, stop on SIGTERM."""
    state = Path(config.state_dir)
    children: dict[int, str] = {}

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def spawn(name: str, argv: list[str]) -> None:
        with (state / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        children[proc.pid] = name

    def note(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    try:
        _setup_mounts(state)
        _setup_network()
        spawn("containerd", ["containerd", "--config", config.containerd_config])
        _wait_connectable(config.containerd_socket, 30, "containerd's socket")
        note("containerd up")
        for archive in config.archives:
            _run(
                "ctr", "--address", config.containerd_socket, "-n", CRI_NAMESPACE,
                "images", "import", archive,
            )  # fmt: skip
        note("images imported")
        # The relay to the API server is the test fixture's to start; the kubelet's first
        # requests would only fail and back off without it.
        _wait_connectable((API_SERVICE_IP, 443), 60, "the API server relay")
        spawn(
            "kubelet",
            [
                config.kubelet,
                f"--config={config.kubelet_config}",
                f"--kubeconfig={config.kubelet_kubeconfig}",
                f"--hostname-override={config.node_name}",
                f"--node-ip={NODE_IP}",
                "--v=2",
            ],
        )
        note("kubelet started")
        while True:
            pid, status = os.waitpid(-1, 0)
            name = children.pop(pid, None)
            if name is not None:
                # Either daemon dying ends the node; the fixture reports it with the logs.
                note(f"{name} exited ({status}); stopping the node")
                return 1
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # Returning ends PID 1: the kernel kills whatever is left in the node.


# --------------------------------------------------------------------------------------------
# Relays between the host's network namespace and the node's
# --------------------------------------------------------------------------------------------


def _setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def _in_netns(netns_fd: int, home_fd: int) -> Iterator[None]:
    """Create sockets in the node's namespace: a socket stays in the one it was made in."""
    _setns(netns_fd)
    try:
        yield
    finally:
        _setns(home_fd)


def _split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy both ways until both are done; a half-close is passed on, an error ends both."""
    writers = (client[1], upstream[1])

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(256 * 1024):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
                return
        except OSError:
            pass
        for each in writers:
            each.close()

    try:
        await asyncio.gather(pipe(client[0], upstream[1]), pipe(upstream[0], client[1]))
    finally:
        for each in writers:
            with contextlib.suppress(OSError):
                each.close()


async def _connect(
    address: tuple[str, int], sock: socket.socket | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), 10)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def _relay(args: argparse.Namespace) -> None:
    """Bind every listening socket, say so in the ready file, then serve until killed."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    netns = os.open(args.netns, os.O_RDONLY)
    into = []
    for spec in args.into:
        listen, _, target = spec.partition("=")
        with _in_netns(netns, home):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(_split_address(listen))
            sock.listen(256)
        into.append((sock, _split_address(target)))
    proxy = None
    if args.connect_proxy:
        Path(args.connect_proxy).unlink(missing_ok=True)
        proxy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        proxy.bind(args.connect_proxy)
        proxy.listen(256)
    Path(args.ready_file).touch()
    asyncio.run(_serve_relay(into, proxy, netns, home))


async def _serve_relay(
    into: list[tuple[socket.socket, tuple[str, int]]],
    proxy: socket.socket | None,
    netns: int,
    home: int,
) -> None:
    servers = []
    for sock, target in into:

        async def forward_into(
            reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter,
            target: tuple[str, int] = target,
        ) -> None:
            try:
                upstream = await _connect(target)
            except (OSError, TimeoutError):
                writer.close()
                return
            await _splice((reader, writer), upstream)

        servers.append(await asyncio.start_server(forward_into, sock=sock))

    async def connect_into(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                raise ValueError(method)
            with _in_netns(netns, home):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream = await _connect(_split_address(target), sock)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await _splice((reader, writer), upstream)

    if proxy is not None:
        servers.append(await asyncio.start_unix_server(connect_into, sock=proxy))
    await asyncio.gather(*(server.serve_forever() for server in servers))


# --------------------------------------------------------------------------------------------
# The cluster with a real node
# --------------------------------------------------------------------------------------------


@dataclass
class Relay:
    """One relay process; :meth:`stop` and :meth:`start` cut and restore its connections."""

    component: Component
    ready_file: Path

    def start(self, timeout: float = 30) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.component.start()
        wait_until(
            lambda: self._check() and self.ready_file.exists(),
            timeout=timeout,
            interval=0.05,
            what=f"relay {self.component.name}",
        )

    def _check(self) -> bool:
        if not self.component.alive():
            raise RuntimeError(f"relay {self.component.name} died:\n{self.component.log_tail()}")
        return True

    def stop(self) -> None:
        self.component.stop(timeout=5)


@dataclass
class NodeCluster(ControlPlane):
    """A control plane plus kube-scheduler and one real node (see the module docstring)."""

    images: Images | None = None
    with_pod_runner: bool = False
    node_name: str = NODE_NAME
    cgroup_root: str = ""
    node_startup_seconds: float = 0.0
    relays: dict[int, Relay] = field(default_factory=dict)

    # -- paths --------------------------------------------------------------------------------

    @property
    def node_dir(self) -> Path:
        return self.state_dir / "node"

    @property
    def containerd_socket(self) -> Path:
        return self.node_dir / "containerd.sock"

    @property
    def egress_socket(self) -> Path:
        return self.state_dir / "egress.sock"

    @property
    def pod_logs_dir(self) -> Path:
        """The kubelet's ``podLogsDir``: ``<namespace>_<pod>_<uid>/<container>/<n>.log``."""
        return self.node_dir / "pod-logs"

    # -- ControlPlane hooks -------------------------------------------------------------------

    def _apiserver_args(self) -> list[str]:
        assert self.pki is not None
        egress = self.state_dir / "egress-selector.yaml"
        egress.write_text(yaml.safe_dump(egress_selector_config(self.egress_socket)))
        # The ServiceAccount admission plugin stays on: the kubelet mounts the tokens.
        return [
            f"--egress-selector-config-file={egress}",
            f"--kubelet-client-certificate={self.pki.admin_cert}",
            f"--kubelet-client-key={self.pki.admin_key}",
            # The node's name is not resolvable and must not be looked up: its IP it is.
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _controllers(self) -> tuple[str, ...]:
        # Removes the not-ready taint once the kubelet reports Ready, as in any cluster; binds
        # claims to (statically made) PersistentVolumes, and lets them go when deleted.
        return (
            *CONTROLLERS,
            "node-lifecycle-controller",
            "persistentvolume-binder-controller",
            "persistentvolume-protection-controller",
            "persistentvolumeclaim-protection-controller",
        )

    def _start_nodes(self) -> None:
        assert self.images is not None, "NodeCluster needs images"
        t0 = time.monotonic()
        self._start_scheduler()
        self._start_node()
        self.node_startup_seconds = time.monotonic() - t0

    def stop(self) -> None:
        for relay in self.relays.values():
            relay.stop()
        self.relays.clear()
        super().stop()
        if self.cgroup_root:
            remove_cgroup_root(self.cgroup_root)

    # -- components ---------------------------------------------------------------------------

    def _start_scheduler(self) -> None:
        port = free_port()
        comp = self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--v=1",
            ],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its self-signed serving cert, on loopback

        def ready() -> bool:
            url = f"https://127.0.0.1:{port}/readyz"
            with urllib.request.urlopen(url, timeout=2, context=insecure) as response:
                return bool(response.status == 200)

        self._wait(comp, ready, "kube-scheduler /readyz")

    def _start_node(self) -> None:
        assert self.images is not None
        assert self.pki is not None
        node = self.node_dir
        node.mkdir(parents=True, exist_ok=True)
        (node / "pod-logs").mkdir(exist_ok=True)
        cni_dir = node / "cni"
        cni_dir.mkdir(exist_ok=True)
        (cni_dir / "10-objmig.conflist").write_text(json.dumps(cni_config(node / "ipam")))
        (node / "containerd.toml").write_text(
            containerd_config(node, self.containerd_socket, self.images.pause, cni_dir)
        )
        reap_stale_cgroup_roots()
        self.cgroup_root = f"{CGROUP_PREFIX}{os.getpid()}-{os.urandom(3).hex()}"
        create_cgroup_root(self.cgroup_root)
        (node / "kubelet.yaml").write_text(
            yaml.safe_dump(
                kubelet_config(
                    state=node,
                    ca_file=self.pki.ca_cert,
                    socket_path=self.containerd_socket,
                    cgroup_root=self.cgroup_root,
                )
            )
        )
        kubeconfig = yaml.safe_load(self.kubeconfig.read_text())
        for cluster in kubeconfig["clusters"]:
            cluster["cluster"]["server"] = f"https://{API_SERVICE_IP}:443"
        (node / "kubelet.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        init = InitConfig(
            state_dir=str(node),
            node_name=self.node_name,
            kubelet=str(self.bin_dir / "kubelet"),
            kubelet_config=str(node / "kubelet.yaml"),
            kubelet_kubeconfig=str(node / "kubelet.kubeconfig"),
            containerd_config=str(node / "containerd.toml"),
            containerd_socket=str(self.containerd_socket),
            archives=[str(path) for path in self.images.archives],
        )
        (node / "init.json").write_text(json.dumps(asdict(init), indent=2))

        comp = self._spawn(
            "node",
            [
                "unshare", "--mount", "--pid", "--net", "--fork", "--mount-proc",
                # The init process dies with unshare (SIGKILLed with pytest: pdeathsig).
                "--kill-child",
                sys.executable, "-m", "tests.support.node", "init", str(node / "init.json"),
            ],
            env=repo_python_env(),
        )  # fmt: skip
        self._wait(comp, lambda: self.init_pid() is not None, "the node's init process")
        self._start_relay(
            "relay-api",
            [f"--into={API_SERVICE_IP}:443={_split_host(self.server)}"],
            ["--connect-proxy", str(self.egress_socket)],
        )
        self._wait(
            comp,
            lambda: self.kubectl_ok(
                "wait", "--for=condition=Ready", f"node/{self.node_name}", "--timeout=1s"
            ),
            f"node {self.node_name} Ready",
        )
        # The node-lifecycle controller lifts the not-ready taint shortly after Ready.
        self._wait(
            comp,
            lambda: not self.kubectl_json("get", "node", self.node_name)["spec"].get("taints"),
            f"node {self.node_name} untainted",
        )

    def init_pid(self) -> int | None:
        """The host pid of the node's init process (unshare's only child)."""
        comp = next(c for c in self.components if c.name == "node")
        if comp.proc is None:
            return None
        children = Path(f"/proc/{comp.proc.pid}/task/{comp.proc.pid}/children")
        with contextlib.suppress(OSError, ValueError):
            pids = children.read_text().split()
            return int(pids[0]) if pids else None
        return None

    def _start_relay(
        self, name: str, into: Sequence[str], extra: Sequence[str] = (), *, vital: bool = True
    ) -> Relay:
        """Start a relay; a vital one is checked by :meth:`check_alive` like a component."""
        pid = self.init_pid()
        assert pid is not None
        ready = self.state_dir / f"{name}.ready"
        comp = Component(
            name,
            [
                sys.executable, "-m", "tests.support.node", "relay",
                f"--netns=/proc/{pid}/ns/net", f"--ready-file={ready}", *into, *extra,
            ],
            self.logs_dir / f"{name}.log",
            repo_python_env(),
        )  # fmt: skip
        if vital:
            self.components.append(comp)
        relay = Relay(comp, ready)
        relay.start()
        return relay

    # -- for tests ----------------------------------------------------------------------------

    def expose(self, port: int) -> str:
        """Make host ``127.0.0.1:port`` reachable from the node as ``10.88.0.2:port``.

        Returns that address. Idempotent; :meth:`relay` gives the relay to cut it.
        """
        if port not in self.relays:
            self.relays[port] = self._start_relay(
                f"relay-{port}", [f"--into={NODE_IP}:{port}=127.0.0.1:{port}"], vital=False
            )
        return f"{NODE_IP}:{port}"

    def relay(self, port: int) -> Relay:
        return self.relays[port]

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ctr`` against the node's containerd, in the Kubernetes namespace."""
        return subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "-n", CRI_NAMESPACE, *args],
            capture_output=True, text=True, check=check, timeout=60,
        )  # fmt: skip

    def signal_container(self, container_id: str, signame: str) -> None:
        """Send a signal to a container's main process (``containerd://<id>`` or ``<id>``)."""
        self.ctr("task", "kill", "--signal", signame, container_id.removeprefix("containerd://"))

    def container_host_pid(self, container_id: str) -> int:
        """The host pid of a container's main process (found by its cgroup path)."""
        cid = container_id.removeprefix("containerd://")
        candidates = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if cid in (proc / "cgroup").read_text():
                    candidates.append(int(proc.name))
        if not candidates:
            raise LookupError(f"no process in container {cid}")
        return min(candidates)  # the container's first process: its PID 1

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output (all its restarts), without the CRI log prefixes."""
        texts = []
        for directory in sorted(self.pod_logs_dir.glob(f"{namespace}_{pod}_*")):
            for sub in sorted(directory.iterdir()):
                if container is not None and sub.name != container:
                    continue
                for log in sorted(sub.glob("*.log"), key=lambda p: int(p.stem)):
                    texts.append(_strip_cri(log.read_text(errors="replace")))
        return "".join(texts)

    def namespace_pod_logs(self, namespace: str) -> dict[str, str]:
        logs = {}
        for directory in sorted(self.pod_logs_dir.glob(f"{namespace}_*")):
            pod = directory.name.split("_")[1]
            for sub in sorted(directory.iterdir()):
                logs[f"{pod}/{sub.name}"] = self.pod_log(namespace, pod, sub.name)
        return logs


def _split_host(server: str) -> str:
    """``https://127.0.0.1:6443`` -> ``127.0.0.1:6443``."""
    return server.split("://", 1)[1]


def _strip_cri(text: str) -> str:
    """CRI log lines are ``<time> <stream> <P|F> <text>``; keep the text."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4:
            out.append(parts[3] + ("\n" if parts[2] == "F" else ""))
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Command line: the node's init process and the relays
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.node")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="PID 1 of the node's namespaces (started by unshare)")
    init.add_argument("config", type=Path)
    relay = sub.add_parser("relay", help="carry TCP between the host and the node namespace")
    relay.add_argument("--netns", required=True, help="/proc/<pid>/ns/net of the node")
    relay.add_argument("--ready-file", required=True)
    relay.add_argument(
        "--into", action="append", default=[],
        help="LISTEN=TARGET: listen at LISTEN in the node, connect to TARGET on the host",
    )  # fmt: skip
    relay.add_argument(
        "--connect-proxy", help="unix socket for HTTP CONNECT into the node (API server egress)"
    )
    args = parser.parse_args(argv)
    if args.command == "init":
        return node_init(InitConfig.load(args.config))
    _relay(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
