"""Alembic migrations: both ways on a fresh SQLite file or PostgreSQL database; match the models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

import memory.app.tables
import memory.auth.tables
import memory.runs.tables
import memory.traces.tables  # registers trace runs and model calls
import memory.world.tables  # registers the world tables on Base.metadata
from memory.db import Base, make_engine
from memory.migrate import alembic_config, downgrade_to, upgrade_to_head
from memory.world.tables import AliasRow, EntityRow, FactRow, FixedAttributeRow
from server.settings import to_sqlalchemy_url

APP_TABLES = {"novels", "chapters", "chapter_versions"}
TRACE_TABLES = {"trace_runs", "model_calls"}


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh, empty database: a SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        # Each test gets its own database: migrations must start from nothing.
        url: str = request.getfixturevalue("fresh_postgres_url")
        engine = make_engine(to_sqlalchemy_url(url))
    else:
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}")
    yield engine
    await engine.dispose()


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    return set(names) - {"alembic_version"}


async def _current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def _diff(sync: Connection) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_upgrade_downgrade_upgrade(engine: AsyncEngine) -> None:
    model_tables = set(Base.metadata.tables)
    assert model_tables >= APP_TABLES | TRACE_TABLES

    await upgrade_to_head(engine)
    assert await _tables(engine) == model_tables
    head = await _current(engine)
    assert head is not None

    await downgrade_to(engine, "base")
    assert await _tables(engine) == set()
    assert await _current(engine) is None

    await upgrade_to_head(engine)
    assert await _tables(engine) == model_tables
    assert await _current(engine) == head

    # Running again is a no-op (several adapters call it on the same engine).
    await upgrade_to_head(engine)
    assert await _current(engine) == head


async def test_app_revision_alone(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001_app_data"))
    assert await _tables(engine) == APP_TABLES
    assert await _current(engine) == "0001_app_data"

    await upgrade_to_head(engine)
    await downgrade_to(engine, "0001_app_data")
    assert await _tables(engine) == APP_TABLES


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []


async def test_app_constraints_have_conventional_names(engine: AsyncEngine) -> None:
    """The migration's constraint names are the ones the naming convention gives the models."""
    await upgrade_to_head(engine)

    def reflect(sync: Connection) -> dict[str, set[str]]:
        inspector = inspect(sync)
        names: dict[str, set[str]] = {}
        for table in APP_TABLES | TRACE_TABLES:
            found = {fk["name"] for fk in inspector.get_foreign_keys(table)}
            found.add(inspector.get_pk_constraint(table).get("name"))
            found |= {uq["name"] for uq in inspector.get_unique_constraints(table)}
            found |= {ck["name"] for ck in inspector.get_check_constraints(table)}
            found |= {ix["name"] for ix in inspector.get_indexes(table)}
            names[table] = {name for name in found if name}
        return names

    async with engine.connect() as conn:
        reflected = await conn.run_sync(reflect)

    for table_name in APP_TABLES | TRACE_TABLES:
        table = Base.metadata.tables[table_name]
        expected = {str(c.name) for c in table.constraints if c.name}
        expected |= {str(ix.name) for ix in table.indexes}
        assert reflected[table_name] == expected, table_name
    # Sanity: the models really use the tables module imported above.
    assert memory.app.tables.NovelRow.__table__ is Base.metadata.tables["novels"]
    assert memory.traces.tables.ModelCallRow.__table__ is Base.metadata.tables["model_calls"]


def _entity(entity_id: int, key: str, kind: str) -> dict[str, Any]:
    return {
        "id": entity_id,
        "novel_id": "novel",
        "key": key,
        "key_norm": key,
        "kind": kind,
        "name": key.title(),
        "name_norm": key,
        "description": "",
        "introduced_chapter": 0,
        "retracted": False,
    }


def _hanging_off(entity_id: int, value: str) -> list[tuple[Any, dict[str, Any]]]:
    """An alias and a fixed attribute of one entity (rows that refer to it)."""
    owned = {"entity_id": entity_id, "novel_id": "novel", "recorded_chapter": 0, "retracted": False}
    return [
        (AliasRow, {**owned, "alias": value, "alias_norm": value}),
        (FixedAttributeRow, {**owned, "name": "colour", "value": value}),
    ]


async def _counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {
            table.__tablename__: (
                await conn.execute(select(func.count()).select_from(table))
            ).scalar_one()
            for table in (EntityRow, AliasRow, FixedAttributeRow, FactRow)
        }


async def test_world_secrets_revision_keeps_the_world(engine: AsyncEngine) -> None:
    """0006 rebuilds ``world_entities`` on SQLite: the rows referring to it (aliases, fixed
    attributes) survive, both ways; a downgrade takes the secrets and what names them."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0005_traces"))
    async with engine.begin() as conn:
        await conn.execute(insert(EntityRow), [_entity(1, "mara", "character")])
        for table, row in _hanging_off(1, "grey"):
            await conn.execute(insert(table), [row])

    await upgrade_to_head(engine)
    assert await _counts(engine) == {
        "world_entities": 1,
        "world_aliases": 1,
        "world_fixed_attributes": 1,
        "world_facts": 0,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(EntityRow), [_entity(2, "forgery", "secret")])
        for table, row in _hanging_off(2, "red"):
            await conn.execute(insert(table), [row])
        fact = {
            "novel_id": "novel",
            "subject_key": "mara",
            "predicate": "knows",
            "object_key": "forgery",
            "valid_from_chapter": 3,
            "source_chapter": 3,
            "retracted": False,
            "created_at": datetime.now(UTC),
        }
        await conn.execute(insert(FactRow), [fact, {**fact, "object_key": "mara"}])

    await downgrade_to(engine, "0005_traces")
    assert await _counts(engine) == {
        "world_entities": 1,
        "world_aliases": 1,
        "world_fixed_attributes": 1,
        "world_facts": 1,
    }
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(insert(EntityRow), [_entity(2, "forgery", "secret")])
    if engine.dialect.name == "sqlite":
        # Migrations turn SQLite's foreign keys off; pooled connections get them back.
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1


async def test_databases_migrate_at_once_in_one_process(tmp_path: Path) -> None:
    """Two stores set up together on one event loop (two sessions of a benchmark, say):
    Alembic keeps its context in module globals, so they must take turns, not clash."""

    engines = [make_engine(f"sqlite+aiosqlite:///{tmp_path / f'db{i}.db'}") for i in range(3)]
    try:
        await asyncio.gather(*(upgrade_to_head(e) for e in engines))
        for e in engines:
            assert await _tables(e) == set(Base.metadata.tables)
            assert await _current(e) is not None
    finally:
        for e in engines:
            await e.dispose()
