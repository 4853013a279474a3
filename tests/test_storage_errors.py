"""Database failures reach callers as StorageError naming the store and action, never
the driver's text (which can quote statements, values or connection details)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from errors import StorageError, StoreUnavailable
from memory.db import make_engine, run_to_completion, sql_errors, unavailable
from memory.world.port import EntitySpec, FactSpec, WorldChanges
from memory.world.sql import SqlWorldMemory

SECRET = "argon2id$v=19$m=65536$c2VjcmV0"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        await conn.execute(text("INSERT INTO t (id, v) VALUES (1, 'x')"))
    yield engine
    await engine.dispose()


async def _execute(engine: AsyncEngine, sql: str, **values: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), values)


async def _wrapped(engine: AsyncEngine, sql: str, **values: Any) -> None:
    with sql_errors("auth database", "store a password"):
        await _execute(engine, sql, **values)


async def test_a_failed_statement_names_the_action_not_the_sql(engine: AsyncEngine) -> None:
    with pytest.raises(StorageError) as raised:
        await _wrapped(engine, "INSERT INTO no_such_table (hash) VALUES (:hash)", hash=SECRET)
    message = raised.value.message
    assert message == (
        "auth database: cannot store a password: the database is unavailable or refused it "
        "(OperationalError)"
    )
    assert SECRET not in message and "no_such_table" not in message
    assert raised.value.__cause__ is None  # no chained driver error carries the text on


async def test_constraint_races_pass_through_for_the_caller(engine: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        await _wrapped(engine, "INSERT INTO t (id, v) VALUES (1, 'y')")


async def test_statement_values_stay_out_of_the_driver_error_too(engine: AsyncEngine) -> None:
    """Engines hide parameters, so even the log line of a failure has no values."""
    with pytest.raises(IntegrityError) as raised:
        await _execute(engine, "INSERT INTO t (id, v) VALUES (1, :v)", v=SECRET)
    assert SECRET not in str(raised.value)


async def test_a_wrong_schema_is_not_an_outage(engine: AsyncEngine) -> None:
    """A missing table will not appear by waiting: workers must not retry it as if the
    database were away (StorageError, not StoreUnavailable)."""
    with pytest.raises(StorageError) as raised:
        await _wrapped(engine, "SELECT v FROM no_such_table")
    assert not isinstance(raised.value, StoreUnavailable)


async def test_a_locked_database_is_an_outage(tmp_path: Path, engine: AsyncEngine) -> None:
    """Another process holding SQLite's write lock passes: that is worth waiting for."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    holder = sqlite3.connect(tmp_path / "db.sqlite3")
    holder.execute("BEGIN IMMEDIATE")
    impatient = make_engine(url)
    try:
        async with impatient.connect() as conn:
            await conn.exec_driver_sql("PRAGMA busy_timeout = 50")
            with pytest.raises(StoreUnavailable), sql_errors("app database", "save"):
                await conn.execute(text("INSERT INTO t (id, v) VALUES (2, 'y')"))
    finally:
        holder.rollback()
        holder.close()
        await impatient.dispose()
    assert unavailable(sqlite3.OperationalError("database is locked"))
    assert not unavailable(sqlite3.OperationalError("no such table: runs"))
    assert unavailable(ConnectionRefusedError("connection refused"))
    assert not unavailable(ValueError("a bug"))
    # A driver error translated by SQLAlchemy's asyncpg dialect, raised from the original.
    translated = RuntimeError("connection was closed in the middle of operation")
    translated.__cause__ = ConnectionResetError()
    assert unavailable(DBAPIError("UPDATE t", None, translated))
    assert unavailable(DBAPIError("UPDATE t", None, Exception(), connection_invalidated=True))
    assert not unavailable(DBAPIError("UPDATE t", None, Exception("deadlock?")))


# --- cancellation ---------------------------------------------------------------------


async def test_a_cancelled_call_finishes_before_the_cancellation_takes_effect() -> None:
    finished: list[str] = []

    async def work() -> str:
        await asyncio.sleep(0.05)
        finished.append("work")
        return "done"

    caller = asyncio.create_task(run_to_completion(work()))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ["work"]


async def test_store_calls_cancelled_halfway_leave_sqlite_unlocked(tmp_path: Path) -> None:
    """Cancelling a bare aiosqlite transaction halfway leaves its connection holding the
    write lock (every later write waits out the busy timeout, then fails); store calls run
    to their end instead, so another connection can write at once after each cancel."""
    path = tmp_path / "scribe.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    world = SqlWorldMemory(engine)
    await world.setup()
    rng = random.Random(7)

    async def writing() -> None:
        chapter = 0
        while True:
            chapter += 1
            people = tuple(
                EntitySpec(key=f"p{uuid.uuid4().hex[:8]}", kind="character", name=f"P{i}")
                for i in range(6)
            )
            facts = tuple(FactSpec(p.key, "located_in", object=people[0].key) for p in people)
            await world.apply("n1", chapter, WorldChanges(entities=people, facts=facts[1:]))

    try:
        for _ in range(40):
            task = asyncio.create_task(writing())
            await asyncio.sleep(rng.random() * 0.03)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            probe = sqlite3.connect(path, timeout=0.5)
            try:
                probe.execute("BEGIN IMMEDIATE")  # raises "database is locked" on a leak
                probe.execute("ROLLBACK")
            finally:
                probe.close()
        assert (await world.world_as_of("n1", 1000)).entities  # the calls begun were whole
    finally:
        await engine.dispose()
