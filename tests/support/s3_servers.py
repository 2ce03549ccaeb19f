"""The S3 servers of the compatibility suite besides moto and MinIO: SeaweedFS, versitygw,
Garage, and MinIO serving HTTPS with a certificate from a private CA the test makes.

Each runs as a child process on loopback ports (see `objmig.local.s3server.ChildServer`),
with a throw-away data directory, from the binary its `scripts/<tool>.sh` built and cached.
`find_*` return None when the binary is missing; the fixtures then skip (or fail under
CI=true, see `tests/fixtures/s3.py`).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

from objmig.local.s3server import (
    LOOPBACK,
    ChildServer,
    LocalMinio,
    ServerStartError,
    find_cached_binary,
    free_port,
)
from objmig.storage.endpoint import Credentials
from tests.support.pki import generate_server_pki


def find_weed() -> str | None:
    return find_cached_binary("seaweedfs", "weed", "SEAWEEDFS_BIN_DIR")


def find_versitygw() -> str | None:
    return find_cached_binary("versitygw", "versitygw", "VERSITYGW_BIN_DIR")


def find_garage() -> str | None:
    return find_cached_binary("garage", "garage", "GARAGE_BIN_DIR")


class TlsMinio(LocalMinio):
    """MinIO over HTTPS, its certificate signed by a CA made for this server alone.

    `ca_bundle` is that CA (PEM): clients that are not given it must refuse the server.
    Over HTTPS MinIO also accepts SSE-C.
    """

    name = "minio-tls"
    scheme = "https"

    def __init__(self, port: int | None = None, *, startup_timeout: float = 60.0) -> None:
        super().__init__(port, startup_timeout=startup_timeout)
        self.pki = generate_server_pki(self._workdir / "certs", common_name="minio-tls")
        self.ca_bundle = self.pki.ca_cert.read_text()

    def _command(self, port: int) -> list[str]:
        # MinIO looks for public.crt and private.key in --certs-dir.
        return [*super()._command(port), "--certs-dir", str(self.pki.cert.parent)]


class LocalSeaweedFS(ChildServer):
    """SeaweedFS in one process (`weed server`: master, volume server, filer and the S3
    gateway), with one identity allowed everything."""

    name = "seaweedfs"
    credentials = Credentials("objmig-weed", "objmig-weed-secret")

    def __init__(self, port: int | None = None, *, startup_timeout: float = 120.0) -> None:
        super().__init__(port, startup_timeout=startup_timeout)
        found = find_weed()
        if found is None:
            raise FileNotFoundError("no weed binary: run scripts/seaweedfs.sh")
        self.binary = found

    def _command(self, port: int) -> list[str]:
        data = self._workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self._workdir / "s3.json"
        identity = {
            "name": "objmig",
            "credentials": [
                {
                    "accessKey": self.credentials.access_key_id,
                    "secretKey": self.credentials.secret_access_key,
                }
            ],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        grpc = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        return [
            self.binary,
            "server",
            f"-dir={data}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={grpc['master']}",
            # Small volumes: the default 30 GB each is preallocated lazily, but a test
            # writes a few MiB.
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={grpc['volume']}",
            "-volume.max=20",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={grpc['filer']}",
            "-s3",
            f"-s3.port={port}",
            f"-s3.port.grpc={grpc['s3']}",
            # Its Iceberg and Lance catalogs listen on fixed ports by default: not wanted.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ]


class LocalVersityGW(ChildServer):
    """versitygw's POSIX backend on a directory, with one root identity; versioning on
    (it needs a directory of its own for the versions)."""

    name = "versitygw"
    credentials = Credentials("objmig-versity", "objmig-versity-secret")

    def __init__(self, port: int | None = None, *, startup_timeout: float = 60.0) -> None:
        super().__init__(port, startup_timeout=startup_timeout)
        found = find_versitygw()
        if found is None:
            raise FileNotFoundError("no versitygw binary: run scripts/versitygw.sh")
        self.binary = found

    def _command(self, port: int) -> list[str]:
        data = self._workdir / "data"
        versions = self._workdir / "versions"
        data.mkdir(parents=True, exist_ok=True)
        versions.mkdir(parents=True, exist_ok=True)
        return [
            self.binary,
            "--access",
            self.credentials.access_key_id,
            "--secret",
            self.credentials.secret_access_key,
            "--port",
            f"{LOOPBACK}:{port}",
            "--quiet",
            "posix",
            "--versioning-dir",
            str(versions),
            str(data),
        ]


class LocalGarage(ChildServer):
    """A one-node Garage cluster (SQLite metadata) with one key allowed to create buckets.

    Garage needs a cluster layout before it serves anything: after the process starts,
    `garage layout assign` gives the node all of a small capacity and `garage layout apply`
    makes it current; the key is imported with fixed credentials.
    """

    name = "garage"
    # Garage's key ids are "GK" and 24 hex digits, its secrets 64 hex digits.
    credentials = Credentials("GK0b6a1d5e6f7a8b9c0d1e2f30", "5" * 64)

    def __init__(self, port: int | None = None, *, startup_timeout: float = 120.0) -> None:
        super().__init__(port, startup_timeout=startup_timeout)
        found = find_garage()
        if found is None:
            raise FileNotFoundError("no garage binary: run scripts/garage.sh")
        self.binary = found
        self._config = self._workdir / "garage.toml"

    def _command(self, port: int) -> list[str]:
        rpc, admin = free_port(), free_port()
        self._config.write_text(
            "\n".join(
                [
                    f'metadata_dir = "{self._workdir / "meta"}"',
                    f'data_dir = "{self._workdir / "data"}"',
                    'db_engine = "sqlite"',
                    "replication_factor = 1",
                    f'rpc_bind_addr = "{LOOPBACK}:{rpc}"',
                    f'rpc_public_addr = "{LOOPBACK}:{rpc}"',
                    f'rpc_secret = "{secrets.token_hex(32)}"',
                    "",
                    "[s3_api]",
                    # The region objmig signs with for stores that do not care.
                    's3_region = "us-east-1"',
                    f'api_bind_addr = "{LOOPBACK}:{port}"',
                    "",
                    "[admin]",
                    f'api_bind_addr = "{LOOPBACK}:{admin}"',
                    f'admin_token = "{secrets.token_hex(16)}"',
                    "",
                ]
            )
        )
        return [self.binary, "-c", str(self._config), "server"]

    def _garage(self, *args: str) -> str:
        done = subprocess.run(
            [self.binary, "-c", str(self._config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise ServerStartError(f"garage {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            # `garage status` answers once the node serves RPC (`node id` reads a file).
            if self._process is not None and self._process.poll() is not None:
                raise ServerStartError(f"garage exited:\n{self.log_tail()}")
            try:
                self._garage("status")
                break
            except ServerStartError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        node = self._garage("node", "id", "-q").strip().split("@")[0]
        self._garage("layout", "assign", "-z", "dc1", "-c", "1G", node)
        self._garage("layout", "apply", "--version", "1")
        self._garage(
            "key",
            "import",
            "--yes",
            "-n",
            "objmig",
            self.credentials.access_key_id,
            self.credentials.secret_access_key,
        )
        self._garage("key", "allow", "--create-bucket", self.credentials.access_key_id)
        super()._wait_ready(port)
