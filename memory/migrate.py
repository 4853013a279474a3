"""Ordered schema migrations (Alembic), run explicitly by each SQL adapter's ``setup()``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from errors import StorageError

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


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@asynccontextmanager
async def _migrating(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in the transaction a migration runs in.

    On SQLite, foreign keys are off meanwhile, as SQLite's procedure for table changes
    prescribes: batch mode rebuilds a table by copying it and dropping the original, and
    with foreign keys on, that drop would cascade into every row referring to the table
    (an entity's aliases, say). The pragma only takes effect outside a transaction, so it
    is set before the transaction begins; if a migration ran, references are checked
    before it commits.
    """
    async with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.commit()
        try:
            async with conn.begin():
                before = await conn.run_sync(_revision) if sqlite else None
                yield conn
                # The check reads every referring row, so it is skipped when nothing ran
                # (every store's setup() comes here).
                if sqlite and await conn.run_sync(_revision) != before:
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise StorageError(
                            "a migration left rows referring to missing rows; nothing was changed",
                            rows=[list(row) for row in broken[:5]],
                        )
        finally:
            if sqlite:
                try:
                    await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    await conn.commit()
                except BaseException:
                    # A pooled connection must never be handed out with foreign keys off.
                    await conn.invalidate()
                    raise


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every pending migration. Idempotent; safe to call from several adapters and
    from several processes at once (on Postgres they take turns)."""
    async with _migrating(engine) as conn:
        if conn.dialect.name == "postgresql":
            # Processes starting together on an empty database would otherwise all create
            # the same tables; the lock is released when this transaction ends.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        await _run_alone(conn, lambda sync: command.upgrade(alembic_config(sync), "head"))


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    """Downgrade to ``revision`` (``"base"`` removes every table)."""
    async with _migrating(engine) as conn:
        await _run_alone(conn, lambda sync: command.downgrade(alembic_config(sync), revision))
