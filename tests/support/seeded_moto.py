"""A moto S3 server process that starts with many objects already in place.

PUTting 20,000 objects over HTTP takes minutes on a small, busy machine; writing them through
moto's backend API inside the server's own process takes seconds. The server then behaves
like any moto server (``LocalS3Server``), in its own process so it does not compete with the
test for the GIL.

``SeededMoto([ObjectGroup("src", "ok/{i:06d}", 20_000, size=16)])`` as a context manager;
``.endpoint_url``. The child is ``python -m tests.support.seeded_moto PORT GROUPS_JSON``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.support.cluster import _pdeathsig_preexec, free_port

READY = "seeded-moto-ready"


@dataclass(frozen=True)
class ObjectGroup:
    """``count`` objects in ``bucket`` named ``key_format.format(i=...)``, each ``size`` bytes."""

    bucket: str
    key_format: str
    count: int
    size: int = 16
    metadata: dict[str, str] = field(default_factory=dict)


class SeededMoto:
    """The server child process; buckets of every group are created first."""

    def __init__(self, groups: list[ObjectGroup], log_path: Path, timeout: float = 180) -> None:
        self.groups = groups
        self.port = free_port()
        self.log_path = log_path
        self.timeout = timeout
        self.seed_seconds = 0.0
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SeededMoto:
        started = time.monotonic()
        self._log = self.log_path.open("w")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.seeded_moto",
                str(self.port),
                json.dumps([asdict(group) for group in self.groups]),
            ],
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1024 * 1024)},
            preexec_fn=_pdeathsig_preexec(),  # dies with the test process
        )
        assert self._process.stdout is not None
        # One line when seeded and serving; EOF when the child died.
        line = self._process.stdout.readline()
        if READY not in line:
            self.__exit__(None, None, None)
            raise RuntimeError(f"seeded moto did not start:\n{self.log_path.read_text()[-3000:]}")
        self.seed_seconds = time.monotonic() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
        if self._log is not None:
            self._log.close()


def _serve(port: int, groups: list[ObjectGroup]) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for bucket in sorted({group.bucket for group in groups}):
        backend.create_bucket(bucket, "us-east-1")
    for group in groups:
        for i in range(group.count):
            key = group.key_format.format(i=i)
            body = key.encode()[-group.size :].rjust(group.size, b".")
            stored = backend.put_object(group.bucket, key, body)
            if group.metadata:
                stored.set_metadata(dict(group.metadata))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(READY, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), [ObjectGroup(**group) for group in json.loads(sys.argv[2])])
