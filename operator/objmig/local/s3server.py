"""Local S3 servers for the demo, the tests and the benchmarks.

`LocalS3Server` runs moto's server mode and `LocalMinio` a MinIO binary (built by
`scripts/minio.sh`), each as a child process on a free loopback port.

Why a subprocess rather than moto's `ThreadedMotoServer`: moto is pure Python, and in a
thread of the test (or demo) process it would compete for the GIL with the client under
test, which then measures moto's speed rather than its own and can even time out under
load. A separate process also gives a clean state per server and dies with `stop()`.
"""

from __future__ import annotations

import contextlib
import glob
import os
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
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from objmig.storage.endpoint import Credentials, Endpoint

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """A local server did not become ready."""


class ChildServer:
    """A server child process on a loopback port, with readiness polling and a log file.

    Subclasses say how to start it (`_command`, `_environment`); the tests' other S3
    servers (`tests/support/s3_servers.py`) are subclasses too. One served over HTTPS sets
    `scheme` and gives the CA its certificate chains to as `ca_bundle` (PEM).
    """

    name = "server"
    health_path = "/"
    credentials = Credentials("objmig-test", "objmig-test-secret")
    scheme = "http"
    ca_bundle: str | None = None

    def __init__(self, port: int | None = None, *, startup_timeout: float = 60.0) -> None:
        self.port = port
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix=f"objmig-{self.name}-"))
        self._log_path = self._workdir / f"{self.name}.log"
        self._log: IO[bytes] | None = None

    # -- to be provided by subclasses
    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    # -- public API
    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} is not started")
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    def endpoint(
        self, credentials: Credentials | None = None, *, virtual: bool = False
    ) -> Endpoint:
        """An `Endpoint` for this server (path-style, us-east-1, test credentials).

        `virtual`: virtual-hosted addressing, on `http://localhost:PORT`, so that a bucket
        is `BUCKET.localhost`, which both S3 clients take for the loopback interface.
        """
        return Endpoint(
            url=f"http://localhost:{self.port}" if virtual else self.endpoint_url,
            region="us-east-1",
            addressing_style="virtual" if virtual else "path",
            credentials=credentials or self.credentials,
            ca_bundle=self.ca_bundle,
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        """Start the child and wait until it answers; retry on a port taken meanwhile."""
        if self.running:
            return self
        attempts = 1 if self.port is not None else 3
        last_error: Exception | None = None
        for _ in range(attempts):
            port = self.port or free_port()
            try:
                self._spawn(port)
                self._wait_ready(port)
            except ServerStartError as exc:
                last_error = exc
                self._terminate()
                continue
            self.port = port
            return self
        raise last_error or ServerStartError(f"{self.name} did not start")

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and remove its files."""
        self._terminate()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the child's output, for error messages."""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals
    def _spawn(self, port: int) -> None:
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            self._command(port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._environment(),
            # Own process group: Ctrl-C in a terminal goes to the demo, which then stops
            # the server itself (in order), instead of killing it mid-request.
            start_new_session=True,
        )

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"{self.scheme}://{LOOPBACK}:{port}{self.health_path}"
        context = ssl.create_default_context(cadata=self.ca_bundle) if self.ca_bundle else None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                # http or https, to our own child on loopback.
                with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
                    if response.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ServerStartError(
            f"{self.name} not ready on port {port} after {self.startup_timeout}s:\n"
            f"{self.log_tail()}"
        )

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None


class LocalS3Server(ChildServer):
    """moto's S3 server as a child process: `python -m moto.server -H 127.0.0.1 -p PORT`.

    `min_part_size` lowers moto's minimum multipart part size (5 MiB, as on AWS) so tests
    can build objects of many small parts cheaply. moto accepts any credentials.
    """

    name = "moto"
    health_path = "/moto-api/"

    def __init__(
        self,
        port: int | None = None,
        *,
        min_part_size: int | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(port, startup_timeout=startup_timeout)
        self.min_part_size = min_part_size

    def _command(self, port: int) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.min_part_size is not None:
            env["S3_UPLOAD_PART_MIN_SIZE"] = str(self.min_part_size)
        # Keep object bodies on disk past 16 MiB, not in the server's memory.
        env.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(16 * 1024 * 1024))
        return env

    def reset(self) -> None:
        """Forget every bucket and object (moto's `/moto-api/reset`)."""
        request = urllib.request.Request(  # noqa: S310
            f"{self.endpoint_url}/moto-api/reset", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310
            pass


def find_cached_binary(tool: str, binary: str, variable: str) -> str | None:
    """A server binary a `scripts/<tool>.sh` built: `$<variable>` (the binary, or the
    directory holding it), the objmig cache (newest version first), or PATH."""
    explicit = os.environ.get(variable)
    if explicit:
        candidate = os.path.join(explicit, binary) if os.path.isdir(explicit) else explicit
        if os.access(candidate, os.X_OK):
            return candidate
    cache = os.environ.get("OBJMIG_CACHE") or str(Path.home() / ".cache" / "objmig")
    candidates = sorted(glob.glob(os.path.join(cache, tool, "*", "bin", binary)), reverse=True)
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(binary)


def find_minio_binary() -> str | None:
    """The MinIO server binary: `$MINIO_BINARY`, the `scripts/minio.sh` cache, or PATH."""
    return find_cached_binary("minio", "minio", "MINIO_BINARY")


class LocalMinio(ChildServer):
    """A MinIO server as a child process, with a throw-away data directory.

    A static KMS key is configured (`MINIO_KMS_SECRET_KEY`) so SSE-S3 and SSE-KMS work.
    SSE-C does not: MinIO refuses customer keys over plain HTTP.
    """

    name = "minio"
    # Not /minio/health/live: that answers 200 as soon as the process listens, while
    # requests still get XMinioServerNotInitialized. The cluster check answers 503 until
    # the object layer, bucket metadata and IAM are up.
    health_path = "/minio/health/cluster"
    credentials = Credentials("objmig-minio", "objmig-minio-secret")

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(port, startup_timeout=startup_timeout)
        found = binary or find_minio_binary()
        if found is None:
            raise FileNotFoundError("no MinIO binary: run scripts/minio.sh or set MINIO_BINARY")
        self.binary = found

    def _command(self, port: int) -> list[str]:
        data = self._workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            self.binary,
            "server",
            str(data),
            "--address",
            f"{LOOPBACK}:{port}",
            "--console-address",
            f"{LOOPBACK}:{free_port()}",
            "--quiet",
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "MINIO_ROOT_USER": self.credentials.access_key_id,
                "MINIO_ROOT_PASSWORD": self.credentials.secret_access_key,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                # Virtual-hosted requests to BUCKET.localhost (path-style ones still work).
                "MINIO_DOMAIN": "localhost",
                # A fixed test key (base64 of 32 bytes), enabling SSE-S3 / SSE-KMS. Never
                # use outside tests.
                "MINIO_KMS_SECRET_KEY": "objmig-test-key:"
                "b2JqbWlnLXRlc3Qta2V5LTMyLWJ5dGVzLWxvbmchISE=",
            }
        )
        return env
