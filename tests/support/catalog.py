"""An application's own catalog database: the table a cutover's catalog action rewrites."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from objmig.local.postgres import EmbeddedPostgres
from tests.fixtures.postgres import scratch_database


@contextlib.asynccontextmanager
async def catalog_database(
    server: EmbeddedPostgres, keys: list[str], bucket: str
) -> AsyncIterator[str]:
    """An application database whose table points at the source objects."""
    async with scratch_database(server, "app") as dsn:
        app = await asyncpg.connect(dsn)
        try:
            await app.execute("CREATE TABLE assets (key text PRIMARY KEY, location text)")
            await app.executemany(
                "INSERT INTO assets VALUES ($1, $2)", [(k, f"s3://{bucket}/{k}") for k in keys]
            )
        finally:
            await app.close()
        yield dsn


async def catalog_rows(dsn: str) -> dict[str, str]:
    app = await asyncpg.connect(dsn)
    try:
        return {r["key"]: r["location"] for r in await app.fetch("SELECT * FROM assets")}
    finally:
        await app.close()


def catalog_action(**overrides: Any) -> dict[str, Any]:
    """spec.cutover.catalog for the ``assets`` table, its DSN in Secret ``app-db`` key ``dsn``."""
    return {
        "dsnSecretRef": {"name": "app-db", "key": "dsn"},
        "table": "assets",
        "keyColumn": "key",
        "locationColumn": "location",
        **overrides,
    }


async def refuse_location(app: asyncpg.Connection, location: str) -> None:
    """Make the application's table refuse one new location, as a trigger of its own would."""
    # DDL takes no parameters; the location comes from the test itself.
    await app.execute(
        f"""
        CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN
            IF NEW.location = '{location}' THEN
                RAISE EXCEPTION 'the application refuses %', NEW.key;
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER refuse BEFORE UPDATE ON assets FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
