"""Backends run through the world-memory conformance suite.

To put another backend under the suite, write an async context-manager factory that takes
the test's ``tmp_path`` and its ``request`` and yields a set-up :class:`WorldMemory`
(releasing whatever it created on exit), then add it to :data:`WORLD_BACKENDS` under its
name, e.g. ``"neo4j": neo4j``. Every test then runs against it. A backend on a real server
gets it from the session fixtures of ``tests/conftest.py`` with
``request.getfixturevalue("postgres_url")`` (say), so only its own tests start the server,
and only they are skipped when it cannot be had.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from memory.db import make_engine
from memory.world.neo4j import Neo4jWorldMemory
from memory.world.port import WorldMemory
from memory.world.sql import SqlWorldMemory
from server.settings import to_sqlalchemy_url
from tests.services.base import Running

WorldFactory = Callable[[Path, pytest.FixtureRequest], AbstractAsyncContextManager[WorldMemory]]


@asynccontextmanager
async def sql_sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[WorldMemory]:
    """The SQL backend on a fresh SQLite file, schema built by the migrations."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'world.sqlite3'}")
    memory = SqlWorldMemory(engine)
    try:
        await memory.setup()
        yield memory
    finally:
        await memory.close()
        await engine.dispose()


@asynccontextmanager
async def sql_postgres(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[WorldMemory]:
    """The SQL backend on the session's PostgreSQL database, schema built by the migrations.

    The database is shared by every test of the session: each test's unique novel id keeps
    its world apart, as it would among the novels of one real deployment.
    """
    url: str = request.getfixturevalue("postgres_url")
    engine = make_engine(to_sqlalchemy_url(url))
    memory = SqlWorldMemory(engine)
    try:
        await memory.setup()
        yield memory
    finally:
        await memory.close()
        await engine.dispose()


@asynccontextmanager
async def neo4j(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[WorldMemory]:
    """The Neo4j backend on the session's Neo4j server.

    The server is shared by every test of the session: each test's unique novel id keeps
    its world apart, and the novel is dropped afterwards so the graph does not grow.
    """
    server: Running = request.getfixturevalue("neo4j_server")
    novel_id: str = request.getfixturevalue("novel_id")
    memory = Neo4jWorldMemory.connect(
        server.url, server.extra.get("user", "neo4j"), server.extra.get("password")
    )
    try:
        await memory.setup()
        yield memory
        await memory.drop_novel(novel_id)
    finally:
        await memory.close()


WORLD_BACKENDS: dict[str, WorldFactory] = {
    "sql-sqlite": sql_sqlite,
    "sql-postgres": sql_postgres,
    "neo4j": neo4j,
}


@pytest.fixture(params=list(WORLD_BACKENDS))
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WorldMemory]:
    """A set-up world memory of each registered backend."""
    factory = WORLD_BACKENDS[request.param]
    async with factory(tmp_path, request) as memory:
        yield memory


@pytest.fixture
def novel_id() -> str:
    """A novel id no other test uses, so backends may share one store between tests."""
    return str(uuid.uuid4())
