"""Database failures reach callers as StorageError naming the store and action, never
the driver's text (which can quote statements, values or connection details)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from errors import StorageError
from memory.db import make_engine, sql_errors

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
