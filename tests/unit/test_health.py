"""The operator's probe endpoints, served for real on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from objmig.controller import health as health_module
from objmig.controller.health import Health
from tests.support.cluster import free_port


@pytest_asyncio.fixture
async def health() -> AsyncIterator[Health]:
    server = Health(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def get(server: Health, path: str) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        return response.status, await response.json()


async def ok() -> str | None:
    return None


async def test_alive_but_not_ready_until_start_up_added_its_checks(health: Health) -> None:
    assert await get(health, "/healthz") == (200, {"status": "ok"})
    status, body = await get(health, "/readyz")
    assert status == 503
    assert body["problems"] == {"startup": "not finished"}
    health.checks["ledger"] = ok
    health._cached = None  # the next probe, not the cached answer of this one
    assert await get(health, "/readyz") == (200, {"status": "ready"})


async def test_a_failing_or_hanging_check_makes_it_unready_and_says_why(
    health: Health, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused() -> str | None:
        raise ConnectionRefusedError("connect to 10.88.0.2:5432")

    async def hangs() -> str | None:
        await asyncio.Event().wait()
        return None

    monkeypatch.setattr(health_module, "CHECK_TIMEOUT", 0.2)
    health.checks.update(ledger=refused, kubernetes=hangs, other=ok)
    status, body = await get(health, "/readyz")
    assert status == 503
    assert body["problems"] == {
        "ledger": "ConnectionRefusedError: connect to 10.88.0.2:5432",
        "kubernetes": "no answer within 0.2s",
    }
    # Liveness does not depend on the ledger: a restart would not bring it back.
    assert (await get(health, "/healthz"))[0] == 200
