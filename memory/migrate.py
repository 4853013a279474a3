"""Ordered schema migrations (Alembic), run explicitly by each SQL adapter's ``setup()``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_LOCK_KEY = 0x5C81BE_0001
"""Postgres advisory lock key held while migrating (any fixed 64-bit number of our own)."""


# Alembic keeps the running migration context in module globals, so two migrations
# interleaving in one process (two sessions opening their stores on one event loop, or
# on two threads) overwrite each other's context. They take turns on this lock; it is
# waited for in a worker thread so the event loop keeps running meanwhile.
_ALEMBIC = threading.Lock()


async def _run_alone(conn: AsyncConnection, step: Callable[[Connection], object]) -> None:
    acquiring = asyncio.ensure_future(asyncio.to_thread(_ALEMBIC.acquire))
    try:
        await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        # The thread still gets the lock; hand it back then rather than never.
        acquiring.add_done_callback(lambda _: _ALEMBIC.release())
        raise
    try:
        await conn.run_sync(step)
    finally:
        _ALEMBIC.release()


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at ``migrations/``; with a connection, bound to it."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every pending migration. Idempotent; safe to call from several adapters and
    from several processes at once (on Postgres they take turns)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Processes starting together on an empty database would otherwise all create
            # the same tables; the lock is released when this transaction ends.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        await _run_alone(conn, lambda sync: command.upgrade(alembic_config(sync), "head"))


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    """Downgrade to ``revision`` (``"base"`` removes every table)."""
    async with engine.begin() as conn:
        await _run_alone(conn, lambda sync: command.downgrade(alembic_config(sync), revision))
