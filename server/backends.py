"""Assemble stores, models and the graph from settings: the one place backends are chosen.

The CLI and the HTTP server both open :class:`Backends` with :func:`open_backends`, so the
embedded default and the full stack run the same code path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.ext.asyncio import AsyncEngine

from graphs.novel import NovelGraph, build_graph
from memory.app.port import AppStore
from memory.embeddings.port import Embedder
from memory.world.port import WorldMemory
from nodes.context import ScribeContext, WritingOptions
from nodes.schemas import AGENTS
from server.runs.tracing import RunTracing
from server.settings import Settings


@dataclass(frozen=True)
class Backends:
    """Open stores, the compiled graph and the context handed to its nodes."""

    settings: Settings
    graph: NovelGraph
    context: ScribeContext
    checkpointer: BaseCheckpointSaver[Any]
    tracing: RunTracing
    """Traces of runs: every model call recorded, budgets, replay."""
    engine: AsyncEngine
    """The SQL engine of app data, traces and (on SQL) world memory."""

    @property
    def store(self) -> AppStore:
        """App data (sessions, chapters, versions)."""
        return self.context.store


def make_embedder(settings: Settings) -> Embedder:
    """Hashed n-grams offline, or the configured OpenAI-compatible embeddings endpoint."""
    if settings.embeddings_model:
        from memory.embeddings.openai import OpenAIEmbedder

        key = settings.embeddings_api_key or settings.api_key
        return OpenAIEmbedder(
            base_url=settings.embeddings_base_url
            or settings.base_url
            or "https://api.openai.com/v1",
            model=settings.embeddings_model,
            dimension=settings.embeddings_dimension,
            api_key=key.get_secret_value() if key else None,
        )
    from memory.embeddings.hashing import HashingEmbedder

    return HashingEmbedder(settings.embeddings_dimension)


def writing_options(settings: Settings) -> WritingOptions:
    """The writing loop's knobs from settings."""
    return WritingOptions(
        max_revisions=settings.max_revisions,
        accept_score=settings.accept_score,
        words_per_chapter=settings.words_per_chapter,
        retrieval_limit=settings.retrieval_limit,
    )


async def _open_checkpointer(settings: Settings, stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
    """LangGraph's Postgres saver on a pool when on Postgres, else its SQLite saver.

    ``setup()`` is called explicitly here: it applies the saver's own ordered migrations.
    """
    dsn = settings.postgres_dsn
    if dsn is not None:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=settings.checkpoint_pool_size,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        await pool.open(wait=True, timeout=30)
        stack.push_async_callback(pool.close)
        postgres = AsyncPostgresSaver(pool)
        await _setup_serialised(dsn, postgres)
        return postgres

    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    conn = await aiosqlite.connect(str(settings.checkpoint_path))
    stack.push_async_callback(conn.close)
    sqlite = AsyncSqliteSaver(conn)
    await sqlite.setup()
    return sqlite


CHECKPOINT_SETUP_LOCK = 0x5C81BE_0002
"""Postgres advisory lock held while the checkpoint saver migrates its tables."""


async def _setup_serialised(dsn: str, saver: Any) -> None:
    """Run the saver's ``setup()`` under an advisory lock: processes starting together on
    an empty database would otherwise insert the same migration row. The lock lives on
    its own connection (a pool of one could not lend a second one to ``setup()``)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (CHECKPOINT_SETUP_LOCK,))
        try:
            await saver.setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (CHECKPOINT_SETUP_LOCK,))


async def _open_world(settings: Settings, engine: Any, stack: AsyncExitStack) -> WorldMemory:
    """The world-memory backend named by settings, set up."""
    world: WorldMemory
    if settings.world_backend == "neo4j":
        from memory.world.neo4j import Neo4jWorldMemory

        password = settings.neo4j_password.get_secret_value() if settings.neo4j_password else ""
        world = Neo4jWorldMemory.connect(
            settings.neo4j_url or "", settings.neo4j_user, password, settings.neo4j_database
        )
    else:
        from memory.world.sql import SqlWorldMemory

        world = SqlWorldMemory(engine)
    stack.push_async_callback(world.close)
    await world.setup()
    return world


@asynccontextmanager
async def open_backends(settings: Settings) -> AsyncIterator[Backends]:
    """Open every backend named by ``settings``, run their explicit setup, close on exit."""
    from memory.app.sql import SqlAppStore
    from memory.db import make_engine
    from memory.retrieval.qdrant import QdrantPassageIndex
    from memory.traces.recorder import ModelPrice, TraceRecorder
    from memory.traces.sql import SqlTraceStore
    from nodes.llm.factory import build_gateway

    async with AsyncExitStack() as stack:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.sql_url)
        stack.push_async_callback(engine.dispose)
        store = SqlAppStore(engine)
        await store.setup()
        world = await _open_world(settings, engine, stack)

        embedder = make_embedder(settings)
        stack.push_async_callback(embedder.close)
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            passages = QdrantPassageIndex.from_url(settings.qdrant_url, embedder, api_key=key)
        else:
            passages = QdrantPassageIndex.from_path(settings.qdrant_path, embedder)
        stack.push_async_callback(passages.close)
        await passages.setup()

        traces = SqlTraceStore(engine, owns_engine=False)
        await traces.setup()
        recorder = TraceRecorder(
            traces,
            {
                name: ModelPrice(price.input, price.output)
                for name, price in settings.model_prices.items()
            },
        )
        await recorder.start()
        # Closed before the engine is disposed (the stack unwinds last in, first out).
        stack.push_async_callback(recorder.close)

        checkpointer = await _open_checkpointer(settings, stack)
        models = build_gateway(
            {a: settings.model_for(a) for a in AGENTS},
            settings.retry,
            offline_tokens_per_second=settings.offline_tokens_per_second,
            split_answers=[a for a in AGENTS if settings.splits_answers(a)],
        ).with_tracing(sink=recorder)
        context = ScribeContext(
            models=models,
            store=store,
            world=world,
            passages=passages,
            options=writing_options(settings),
        )
        yield Backends(
            settings,
            build_graph(checkpointer),
            context,
            checkpointer,
            RunTracing(traces, recorder),
            engine,
        )
