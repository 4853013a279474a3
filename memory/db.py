"""The SQL engine and store base shared by app data, traces and the SQL world memory.

One declarative ``Base`` holds every table, so Alembic sees the whole schema.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar

from sqlalchemy import MetaData, event
from sqlalchemy.exc import (
    DBAPIError,
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


_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o", "disk is full")
"""SQLite failures that pass (another writer, a full or unplugged disk); the others, such
as ``no such table``, say the schema or the statement is wrong and will not pass by
waiting."""


@functools.cache
def _unreachable() -> tuple[type[BaseException], ...]:
    """Failures that say the database is out of reach now, not that the request is wrong.

    The PostgreSQL drivers are imported here, on the first failure, not with this module:
    together they take about half a second to import, which the embedded default (SQLite
    only) need not pay at every start.
    """
    import asyncpg
    import psycopg

    return (
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


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and, for a SQLAlchemy error, the driver error underneath (``orig``) and the
    one that was raised from (SQLAlchemy's asyncpg dialect translates a driver's error
    into a generic one raised from it). Other chains are not followed: an error of ours
    raised from a timeout is not an outage."""
    causes = [exc]
    if isinstance(exc, DBAPIError) and isinstance(exc.orig, BaseException):
        causes.append(exc.orig)
        if exc.orig.__cause__ is not None:
            causes.append(exc.orig.__cause__)
    return causes


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means a store is out of reach for now (so the same work can be
    tried again later), whichever layer raised it: our stores (:class:`StoreUnavailable`)
    or a driver underneath a library, such as LangGraph's checkpointers."""
    causes = _causes(exc)
    sqlite = next((c for c in causes if isinstance(c, sqlite3.Error)), None)
    if sqlite is not None:
        # SQLAlchemy files every SQLite failure as OperationalError, a missing table too:
        # the driver's message tells a passing lock from a wrong schema.
        text = str(sqlite).lower()
        return isinstance(sqlite, sqlite3.OperationalError) and any(
            cue in text for cue in _SQLITE_TRANSIENT
        )
    return any(
        isinstance(cause, (StoreUnavailable, *_unreachable()))
        # the dialect saw the connection drop under the statement
        or (isinstance(cause, DBAPIError) and cause.connection_invalidated)
        for cause in causes
    )


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
    except Exception as exc:
        if not isinstance(exc, (SQLAlchemyError, sqlite3.Error, *_unreachable())):
            raise
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
