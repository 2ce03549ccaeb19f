"""The operator's probe endpoints: ``/healthz`` (liveness) and ``/readyz`` (readiness).

Liveness answers as long as the event loop does: a wedged process gets restarted, a process
waiting for the ledger or for the leader's lease does not. Readiness says whether this process
could do its work right now: its start-up is done and the ledger database and the Kubernetes
API both answer. A standby replica (waiting for the lease) is ready when they do, so a rolling
update can wait for it; what it is not is leading, which the Lease shows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from kubernetes_asyncio import client

from objmig.ledger import Ledger

log = logging.getLogger(__name__)

#: A readiness check: returns None when fine, else what is wrong (one line).
Check = Callable[[], Awaitable[str | None]]

#: How long one check may take before it counts as failed; probes time out after 5 s.
CHECK_TIMEOUT = 2.0
#: Results are reused this long, so bursts of probes do not become bursts of queries.
CACHE_SECONDS = 1.0


@dataclass
class Health:
    """An HTTP server with both endpoints; checks are added once there is something to check."""

    port: int
    checks: dict[str, Check] = field(default_factory=dict)
    _runner: web.AppRunner | None = field(default=None, init=False)
    _cached: tuple[float, dict[str, str]] | None = field(default=None, init=False)

    async def start(self) -> None:
        """Listen on all interfaces (the kubelet probes the pod IP)."""
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self.port).start()  # noqa: S104 - probes

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def problems(self) -> dict[str, str]:
        """What keeps this process from being ready (empty: ready), checks run concurrently."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        if not self.checks:
            found = {"startup": "not finished"}
        else:
            names = list(self.checks)
            results = await asyncio.gather(*(_run(self.checks[n]) for n in names))
            found = {n: r for n, r in zip(names, results, strict=True) if r is not None}
        if self._cached is None or bool(self._cached[1]) != bool(found):
            if found:
                log.warning("not ready: %s", "; ".join(f"{k}: {v}" for k, v in found.items()))
            else:
                log.info("ready")
        self._cached = (time.monotonic(), found)
        return found

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = await self.problems()
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})


async def _run(check: Check) -> str | None:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g}s"
    except Exception as error:  # a probe reports what failed; it never raises
        return f"{type(error).__name__}: {error}"[:300]


def readiness_checks(ledger: Ledger, api: client.ApiClient) -> dict[str, Check]:
    """The operator works when it can reach both the ledger and the Kubernetes API."""

    async def ledger_answers() -> str | None:
        await ledger.pool.fetchval("SELECT 1")
        return None

    async def kubernetes_answers() -> str | None:
        await client.VersionApi(api).get_code()
        return None

    return {"ledger": ledger_answers, "kubernetes": kubernetes_answers}


async def serve_from_env() -> Health | None:
    """Start the endpoints on ``OBJMIG_HEALTH_PORT`` (default 8081; 0: none)."""
    port = int(os.environ.get("OBJMIG_HEALTH_PORT", "8081"))
    if not port:
        return None
    health = Health(port)
    await health.start()
    return health
