"""The SQL engine and store base shared by app data, traces and the SQL world memory.

One declarative ``Base`` holds every table, so Alembic sees the whole schema.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

import asyncpg
import psycopg
from sqlalchemy import MetaData, event
from sqlalchemy.exc import (
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from errors import StorageError, StoreUnavailable

log = logging.getLogger("scribe.storage")

# Stable constraint names make migrations reproducible on SQLite and Postgres alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every InfiniteScribe table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite(url: str) -> bool:
    """True for SQLite URLs (``sqlite+aiosqlite:///...``)."""
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    # hide_parameters: a failed statement's text must never carry its values (password
    # hashes, emails, prose) into errors or logs.
    if not is_sqlite(url):
        return create_async_engine(url, echo=echo, pool_pre_ping=True, hide_parameters=True)
    engine = create_async_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused or reset connections, timeouts: drivers raise these unwrapped
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,  # "the database system is starting up"
    asyncpg.AdminShutdownError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
)
"""Failures that say the database is out of reach now, not that the request is wrong."""
_SQL_FAILURES: tuple[type[BaseException], ...] = (SQLAlchemyError, *_UNREACHABLE)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means a store is out of reach for now (so the same work can be
    tried again later), whichever layer raised it: our stores (:class:`StoreUnavailable`)
    or a driver underneath a library, such as LangGraph's checkpointers."""
    return isinstance(exc, (StoreUnavailable, *_UNREACHABLE))


@contextmanager
def sql_errors(store: str, action: str) -> Iterator[None]:
    """Turn a database failure of ``store`` doing ``action`` into :class:`StorageError`
    (HTTP 503).

    The one wrapper of SQL failures. The error names the store's action and the failure's
    class only: a driver's text can quote statements, values or connection details, and
    an error's message reaches clients. Operators find the full failure in the log.
    :class:`IntegrityError` passes through: callers that expect constraint races catch it.
    """
    try:
        yield
    except IntegrityError:
        raise
    except _SQL_FAILURES as exc:
        log.warning("%s: cannot %s: %s", store, action, exc)
        error = StoreUnavailable if unavailable(exc) else StorageError
        raise error(
            f"{store}: cannot {action}: the database is unavailable or refused it "
            f"({type(exc).__name__})"
        ) from None


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (SQLite returns naive ones; all are written in
    UTC, so naive means UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


T = TypeVar("T")


async def run_to_completion(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile; the
    cancellation then takes effect, once ``work`` has ended (or failed)."""
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                raise
            cancelled = exc
        else:
            break
    if cancelled is not None:
        raise cancelled
    return result


class CompletesCalls:
    """Mixin: each public coroutine method of a subclass, once called, runs to its end
    even when its caller is cancelled (a run interrupted or cancelled, Ctrl-C, a client
    gone); the cancellation takes effect when the call returns, a transaction's time later.

    Why: a SQLAlchemy transaction on aiosqlite cancelled halfway leaves its connection
    holding SQLite's write lock, and every later write of every store on that file then
    waits out its busy timeout and fails. On Postgres a cancelled transaction costs the
    connection. Either way a store call is the unit that must not be cut in two.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, _completing(member))


def _completing(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> T:
        return await run_to_completion(method(*args, **kwargs))

    return call


class SqlStore(CompletesCalls):
    """What every SQL adapter shares: an engine (its own or a shared one), transactions
    that turn database failures into :class:`~errors.StorageError`, migrations on
    ``setup()`` and disposal on ``close()``. ``label`` names the store in errors."""

    label: ClassVar[str] = "sql store"

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self._engine = engine
        self._owns_engine = owns_engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> Self:
        """A store with its own engine for ``url`` (an async SQLAlchemy URL such as
        ``sqlite+aiosqlite:///scribe.db``); :meth:`close` disposes of it."""
        return cls(make_engine(url), owns_engine=True)

    @property
    def owns_engine(self) -> bool:
        """Whether :meth:`close` disposes of the engine."""
        return self._owns_engine

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction; database failures surface as StorageError."""
        with sql_errors(self.label, "complete a transaction"):
            async with self._sessions() as session, session.begin():
                yield session

    async def setup(self) -> None:
        """Apply pending migrations (one schema shared by every SQL store)."""
        from memory.migrate import upgrade_to_head

        with sql_errors(self.label, "apply migrations"):
            await upgrade_to_head(self._engine)

    async def close(self) -> None:
        """Dispose of the engine if this store owns it; a shared engine is left open."""
        if self._owns_engine:
            await self._engine.dispose()
