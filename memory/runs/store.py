"""The durable run queue and the thread registry, in SQL (SQLite or Postgres).

Workers claim the oldest due pending run of a thread that has no running run, or a
running run whose lease expired (its worker died). On Postgres the claim locks candidate
rows with ``FOR UPDATE SKIP LOCKED`` and then the thread row, so two workers never run
the same thread at once; on SQLite every transaction of this store starts with
``BEGIN IMMEDIATE``, which makes the claim a single-writer transaction.

Every read and change made on behalf of a caller names the owner: another owner's
threads and runs are reported as not found.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import and_, delete, event, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from errors import Conflict, NotFound, StorageError
from memory.db import CompletesCalls, is_sqlite, log, make_engine, sql_errors
from memory.migrate import upgrade_to_head
from memory.runs.models import (
    BaseCheckpoint,
    CancelAction,
    Heartbeat,
    MultitaskStrategy,
    RunKwargs,
    RunRecord,
    RunStatus,
    ThreadRecord,
    ThreadStatus,
)
from memory.runs.tables import RunRow, ThreadRow

ACTIVE = ("pending", "running")
CLAIM_CANDIDATES = 20
SEARCH_BATCH = 200
ThreadSort = Literal["thread_id", "status", "created_at", "updated_at"]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored here is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _must(value: datetime | None) -> datetime:
    result = _utc(value)
    if result is None:
        raise StorageError("a required timestamp is missing")
    return result


def make_run_engine(url: str) -> AsyncEngine:
    """An engine for the queue; on SQLite each transaction takes the write lock up front."""
    engine = make_engine(url)
    if is_sqlite(url):

        @event.listens_for(engine.sync_engine, "connect")
        def _manual_begin(dbapi_connection: Any, _record: Any) -> None:
            # The driver must not emit its own deferred BEGIN; ours is IMMEDIATE.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _thread(row: ThreadRow) -> ThreadRecord:
    return ThreadRecord(
        thread_id=row.thread_id,
        owner_id=row.owner_id,
        metadata=dict(row.meta or {}),
        status=cast(ThreadStatus, row.status),
        created_at=_must(row.created_at),
        updated_at=_must(row.updated_at),
    )


def _run(row: RunRow) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        thread_id=row.thread_id,
        assistant_id=row.assistant_id,
        owner_id=row.owner_id,
        status=cast(RunStatus, row.status),
        metadata=dict(row.meta or {}),
        kwargs=RunKwargs.from_json(dict(row.kwargs or {})),
        multitask_strategy=cast(MultitaskStrategy, row.multitask_strategy),
        created_at=_must(row.created_at),
        updated_at=_must(row.updated_at),
        not_before=_must(row.not_before),
        worker_id=row.worker_id,
        lease_expires_at=_utc(row.lease_expires_at),
        heartbeat_at=_utc(row.heartbeat_at),
        cancel_action=cast(CancelAction | None, row.cancel_action),
        attempts=row.attempts,
        error=row.error,
    )


def contains(container: object, wanted: object) -> bool:
    """JSON containment (Postgres ``@>``): every key of ``wanted`` matches, recursively."""
    if isinstance(wanted, dict):
        return isinstance(container, dict) and all(
            k in container and contains(container[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return isinstance(container, list) and all(
            any(contains(c, w) for c in container) for w in wanted
        )
    return container == wanted


class RunStore(CompletesCalls):
    """Threads and runs in SQL. Build with :meth:`from_url`, then ``await setup()``."""

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self._engine = engine
        self._owns_engine = owns_engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> RunStore:
        """A store with its own engine for ``url``; :meth:`close` disposes of it."""
        return cls(make_run_engine(url), owns_engine=True)

    async def setup(self) -> None:
        """Apply pending migrations (idempotent)."""
        with sql_errors("run store", "apply migrations"):
            await upgrade_to_head(self._engine)

    async def close(self) -> None:
        """Dispose of the engine when this store owns it."""
        if self._owns_engine:
            await self._engine.dispose()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        try:
            with sql_errors("run store", "complete a transaction"):
                async with self._sessions() as session, session.begin():
                    yield session
        except IntegrityError as exc:
            # The constraint's text stays in the log: it can quote the row's values.
            log.info("run store: conflicting write: %s", exc.orig)
            raise Conflict("run store: a conflicting write (the row changed meanwhile)") from None

    # --- threads ------------------------------------------------------------------------

    async def create_thread(
        self,
        thread_id: str,
        owner_id: str,
        metadata: dict[str, Any],
        *,
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> ThreadRecord:
        """Create an idle thread; an existing id is returned (``do_nothing``, same owner)
        or refused with Conflict."""
        async with self._tx() as s:
            row = await s.get(ThreadRow, thread_id, with_for_update=True)
            if row is not None:
                if if_exists == "do_nothing" and row.owner_id == owner_id:
                    return _thread(row)
                raise Conflict(f"thread {thread_id} already exists", thread_id=thread_id)
            now = utcnow()
            row = ThreadRow(
                thread_id=thread_id,
                owner_id=owner_id,
                meta=metadata,
                status="idle",
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            return _thread(row)

    async def get_thread(self, thread_id: str, owner_id: str | None) -> ThreadRecord:
        """The thread; NotFound when it does not exist or belongs to someone else.

        ``owner_id=None`` is for the engine itself (workers act for every owner).
        """
        async with self._tx() as s:
            return _thread(await self._owned_thread(s, thread_id, owner_id))

    async def update_thread(
        self, thread_id: str, owner_id: str, metadata: dict[str, Any]
    ) -> ThreadRecord:
        """Merge ``metadata`` into the thread's metadata."""
        async with self._tx() as s:
            row = await self._owned_thread(s, thread_id, owner_id, lock=True)
            row.meta = {**(row.meta or {}), **metadata}
            row.updated_at = utcnow()
            return _thread(row)

    async def delete_thread(self, thread_id: str, owner_id: str) -> list[str]:
        """Delete the thread and its runs; returns the ids of runs that were still active."""
        async with self._tx() as s:
            await self._owned_thread(s, thread_id, owner_id, lock=True)
            active = (
                await s.scalars(
                    select(RunRow.run_id).where(
                        RunRow.thread_id == thread_id, RunRow.status.in_(ACTIVE)
                    )
                )
            ).all()
            # Explicit: SQLite only cascades when foreign keys are on for the connection.
            await s.execute(delete(RunRow).where(RunRow.thread_id == thread_id))
            await s.execute(delete(ThreadRow).where(ThreadRow.thread_id == thread_id))
            return list(active)

    async def search_threads(
        self,
        owner_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        status: ThreadStatus | None = None,
        ids: Sequence[str] | None = None,
        limit: int = 10,
        offset: int = 0,
        sort_by: ThreadSort = "created_at",
        sort_order: Literal["asc", "desc"] = "desc",
    ) -> list[ThreadRecord]:
        """The owner's threads matching every filter, sorted and paged.

        Metadata matching is JSON containment, done here so it behaves the same on SQLite
        and Postgres; the SQL query narrows by owner, status and ids first.
        """
        column = {
            "thread_id": ThreadRow.thread_id,
            "status": ThreadRow.status,
            "created_at": ThreadRow.created_at,
            "updated_at": ThreadRow.updated_at,
        }[sort_by]
        order = column.asc() if sort_order == "asc" else column.desc()
        query = select(ThreadRow).where(ThreadRow.owner_id == owner_id)
        if status is not None:
            query = query.where(ThreadRow.status == status)
        if ids is not None:
            query = query.where(ThreadRow.thread_id.in_(list(ids)))
        query = query.order_by(order, ThreadRow.thread_id.asc())
        if not metadata:
            query = query.limit(limit).offset(offset)
            async with self._tx() as s:
                return [_thread(r) for r in (await s.scalars(query)).all()]
        found: list[ThreadRecord] = []
        skipped = 0
        start = 0
        while len(found) < limit:
            async with self._tx() as s:
                rows = (await s.scalars(query.limit(SEARCH_BATCH).offset(start))).all()
            for row in rows:
                if not contains(row.meta or {}, metadata):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(_thread(row))
                if len(found) == limit:
                    break
            if len(rows) < SEARCH_BATCH:
                break
            start += SEARCH_BATCH
        return found

    async def count_threads(self, owner_id: str, *, status: ThreadStatus | None = None) -> int:
        """How many threads the owner has (optionally in one status)."""
        query = select(func.count()).select_from(ThreadRow).where(ThreadRow.owner_id == owner_id)
        if status is not None:
            query = query.where(ThreadRow.status == status)
        async with self._tx() as s:
            return int((await s.execute(query)).scalar_one())

    async def set_thread_status(self, thread_id: str, status: ThreadStatus) -> None:
        """Record the thread's status (the engine keeps it true after every run)."""
        async with self._tx() as s:
            await s.execute(
                update(ThreadRow)
                .where(ThreadRow.thread_id == thread_id)
                .values(status=status, updated_at=utcnow())
            )

    # --- runs: creation and reading -----------------------------------------------------

    async def create_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        owner_id: str,
        assistant_id: str,
        metadata: dict[str, Any],
        kwargs: RunKwargs,
        multitask_strategy: MultitaskStrategy,
        if_not_exists: Literal["create", "reject"],
        after_seconds: float = 0.0,
        thread_metadata: dict[str, Any] | None = None,
        claimed_by: tuple[str, float] | None = None,
    ) -> tuple[RunRecord, list[RunRecord]]:
        """Queue a run; returns it and the active runs the strategy asked to stop.

        On a thread with active runs: ``reject`` raises Conflict; ``enqueue`` queues
        behind them; ``interrupt``/``rollback`` flag them with that cancel action (a
        pending one is interrupted or deleted right here) and queue the new run, which
        no worker starts before the thread's running run has actually stopped.

        ``claimed_by`` (worker id, lease seconds) creates the run already claimed by that
        worker, for a process that executes it itself at once (the CLI): no other worker
        can take it first. It needs a thread with no active run.
        """
        now = utcnow()
        async with self._tx() as s:
            thread = await s.get(ThreadRow, thread_id, with_for_update=True)
            if thread is None:
                if if_not_exists != "create":
                    raise NotFound("thread", thread_id)
                s.add(
                    ThreadRow(
                        thread_id=thread_id,
                        owner_id=owner_id,
                        meta=thread_metadata or {},
                        status="idle",
                        created_at=now,
                        updated_at=now,
                    )
                )
                await s.flush()
            elif thread.owner_id != owner_id:
                raise NotFound("thread", thread_id)
            active = (
                await s.scalars(
                    select(RunRow)
                    .where(RunRow.thread_id == thread_id, RunRow.status.in_(ACTIVE))
                    .order_by(RunRow.created_at, RunRow.run_id)
                    .with_for_update()
                )
            ).all()
            stopped: list[RunRecord] = []
            if active:
                if multitask_strategy == "reject" or claimed_by is not None:
                    raise Conflict(
                        f"thread {thread_id} is busy with run {active[0].run_id}; "
                        "use multitask_strategy enqueue, interrupt or rollback",
                        thread_id=thread_id,
                        run_id=active[0].run_id,
                    )
                if multitask_strategy in ("interrupt", "rollback"):
                    for other in active:
                        stopped.append(await self._stop_in(s, other, multitask_strategy, now))
            row = RunRow(
                run_id=run_id,
                thread_id=thread_id,
                assistant_id=assistant_id,
                owner_id=owner_id,
                status="pending",
                meta=metadata,
                kwargs=kwargs.to_json(),
                multitask_strategy=multitask_strategy,
                created_at=now,
                updated_at=now,
                not_before=now + timedelta(seconds=max(0.0, after_seconds)),
                worker_id=None,
                lease_expires_at=None,
                heartbeat_at=None,
                cancel_action=None,
                attempts=0,
                error=None,
            )
            if claimed_by is not None:
                worker_id, lease_s = claimed_by
                row.status = "running"
                row.worker_id = worker_id
                row.attempts = 1
                row.heartbeat_at = now
                row.lease_expires_at = now + timedelta(seconds=lease_s)
                thread = thread or await s.get(ThreadRow, thread_id)
                if thread is not None:
                    thread.status = "busy"
                    thread.updated_at = now
            s.add(row)
            await s.flush()
            return _run(row), stopped

    async def _stop_in(
        self, s: AsyncSession, row: RunRow, action: CancelAction, now: datetime
    ) -> RunRecord:
        """Ask an active run to stop: a pending run stops at once (interrupted, or
        deleted on rollback); a running run is flagged for its worker."""
        row.cancel_action = action
        row.updated_at = now
        if row.status == "pending":
            if action == "rollback":
                record = _run(row)
                await s.delete(row)
                return record
            row.status = "interrupted"
        return _run(row)

    async def get_run(self, thread_id: str, run_id: str, owner_id: str | None) -> RunRecord:
        """The run; NotFound when missing or another owner's (``None``: any owner)."""
        async with self._tx() as s:
            row = await s.get(RunRow, run_id)
            if (
                row is None
                or row.thread_id != thread_id
                or (owner_id is not None and row.owner_id != owner_id)
            ):
                raise NotFound("run", run_id)
            return _run(row)

    async def find_run(self, run_id: str) -> RunRecord | None:
        """The run by id alone, or None (engine use)."""
        async with self._tx() as s:
            row = await s.get(RunRow, run_id)
            return _run(row) if row is not None else None

    async def list_runs(
        self,
        thread_id: str,
        owner_id: str,
        *,
        limit: int = 10,
        offset: int = 0,
        status: RunStatus | None = None,
    ) -> list[RunRecord]:
        """The thread's runs, newest first."""
        async with self._tx() as s:
            await self._owned_thread(s, thread_id, owner_id)
            query = select(RunRow).where(RunRow.thread_id == thread_id)
            if status is not None:
                query = query.where(RunRow.status == status)
            query = query.order_by(RunRow.created_at.desc(), RunRow.run_id.desc())
            rows = (await s.scalars(query.limit(limit).offset(offset))).all()
            return [_run(r) for r in rows]

    async def active_runs(self, thread_id: str) -> list[RunRecord]:
        """Pending and running runs of the thread, oldest first."""
        async with self._tx() as s:
            rows = (
                await s.scalars(
                    select(RunRow)
                    .where(RunRow.thread_id == thread_id, RunRow.status.in_(ACTIVE))
                    .order_by(RunRow.created_at, RunRow.run_id)
                )
            ).all()
            return [_run(r) for r in rows]

    async def request_cancel(
        self, thread_id: str, run_id: str, owner_id: str, action: CancelAction
    ) -> RunRecord:
        """Ask the run to stop (see :meth:`create_run` for what that means per status).

        Conflict when the run already finished.
        """
        async with self._tx() as s:
            row = await s.get(RunRow, run_id, with_for_update=True)
            if row is None or row.thread_id != thread_id or row.owner_id != owner_id:
                raise NotFound("run", run_id)
            if row.status not in ACTIVE:
                raise Conflict(
                    f"run {run_id} already ended ({row.status}); nothing to cancel",
                    run_id=run_id,
                    status=row.status,
                )
            return await self._stop_in(s, row, action, utcnow())

    async def delete_run(self, thread_id: str, run_id: str, owner_id: str) -> None:
        """Delete a run that is not running (a pending one is simply dropped)."""
        async with self._tx() as s:
            row = await s.get(RunRow, run_id, with_for_update=True)
            if row is None or row.thread_id != thread_id or row.owner_id != owner_id:
                raise NotFound("run", run_id)
            if row.status == "running":
                raise Conflict(f"run {run_id} is running; cancel it first", run_id=run_id)
            await s.delete(row)

    # --- runs: the worker's side --------------------------------------------------------

    async def claim(
        self,
        worker_id: str,
        lease_s: float,
        *,
        run_id: str | None = None,
        dead_worker: str | None = None,
        executing: Collection[str] = (),
    ) -> RunRecord | None:
        """Take the next run to execute (or the run ``run_id`` only), or None.

        Candidates are due pending runs and running runs whose lease expired, oldest
        first. A candidate is taken only when its thread has no other running run and,
        for a pending run, no older due pending run (runs of a thread go in order).
        ``dead_worker`` names a worker known to be dead (its process is gone): its runs
        are taken at once, their leases notwithstanding. ``executing`` are the runs the
        claiming worker executes now: never taken again by it, even if their leases ran
        out while its event loop was busy (it renews them instead).
        """
        now = utcnow()
        due = or_(
            and_(RunRow.status == "pending", RunRow.not_before <= now),
            and_(RunRow.status == "running", RunRow.lease_expires_at < now),
        )
        if dead_worker is not None:
            due = or_(due, and_(RunRow.status == "running", RunRow.worker_id == dead_worker))
        if run_id is not None:
            due = and_(due, RunRow.run_id == run_id)
        if executing:
            due = and_(due, RunRow.run_id.not_in(list(executing)))
        async with self._tx() as s:
            candidates = (
                await s.scalars(
                    select(RunRow)
                    .where(due)
                    .order_by(RunRow.created_at, RunRow.run_id)
                    .limit(CLAIM_CANDIDATES)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in candidates:
                thread = await s.scalar(
                    select(ThreadRow)
                    .where(ThreadRow.thread_id == row.thread_id)
                    .with_for_update(skip_locked=True)
                )
                if thread is None:
                    continue
                if await self._blocked(s, row, now):
                    continue
                row.status = "running"
                row.worker_id = worker_id
                row.attempts = row.attempts + 1
                row.heartbeat_at = now
                row.lease_expires_at = now + timedelta(seconds=lease_s)
                row.updated_at = now
                thread.status = "busy"
                thread.updated_at = now
                return _run(row)
        return None

    async def _blocked(self, s: AsyncSession, row: RunRow, now: datetime) -> bool:
        other = aliased(RunRow)
        running = await s.scalar(
            select(
                exists().where(
                    other.thread_id == row.thread_id,
                    other.status == "running",
                    other.run_id != row.run_id,
                )
            )
        )
        if running:
            return True
        if row.status != "pending":
            return False
        older = await s.scalar(
            select(
                exists().where(
                    other.thread_id == row.thread_id,
                    other.status == "pending",
                    other.not_before <= now,
                    or_(
                        other.created_at < row.created_at,
                        and_(other.created_at == row.created_at, other.run_id < row.run_id),
                    ),
                )
            )
        )
        return bool(older)

    async def heartbeat(self, run_id: str, worker_id: str, lease_s: float) -> Heartbeat:
        """Renew the lease of a run this worker executes; says whether it still owns it
        and whether someone asked it to stop."""
        now = utcnow()
        async with self._tx() as s:
            result = await s.execute(
                update(RunRow)
                .where(
                    RunRow.run_id == run_id,
                    RunRow.worker_id == worker_id,
                    RunRow.status == "running",
                )
                .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_s))
            )
            if _rowcount(result) == 0:
                return Heartbeat(owned=False, cancel_action=None)
            action = await s.scalar(select(RunRow.cancel_action).where(RunRow.run_id == run_id))
            return Heartbeat(owned=True, cancel_action=cast(CancelAction | None, action))

    async def save_base(self, run_id: str, worker_id: str, base: BaseCheckpoint) -> RunRecord:
        """Remember where the thread stood before the run's first attempt."""
        async with self._tx() as s:
            row = await s.get(RunRow, run_id, with_for_update=True)
            if row is None or row.worker_id != worker_id or row.status != "running":
                raise Conflict(f"run {run_id} is no longer executed by {worker_id}")
            kwargs = RunKwargs.from_json(dict(row.kwargs))
            row.kwargs = replace(kwargs, base=base).to_json()
            return _run(row)

    async def finish(
        self,
        run_id: str,
        worker_id: str,
        status: RunStatus,
        thread_status: ThreadStatus,
        *,
        error: str | None = None,
    ) -> bool:
        """Record the run's final status and its thread's; False when the run is no longer
        this worker's (then nothing is changed)."""
        now = utcnow()
        async with self._tx() as s:
            thread = await self._lock_thread_of(s, run_id)
            if thread is None:
                return False
            result = await s.execute(
                update(RunRow)
                .where(
                    RunRow.run_id == run_id,
                    RunRow.worker_id == worker_id,
                    RunRow.status == "running",
                )
                .values(
                    status=status,
                    error=error,
                    lease_expires_at=None,
                    updated_at=now,
                )
            )
            if _rowcount(result) == 0:
                return False
            thread.status = thread_status
            thread.updated_at = now
            return True

    async def _lock_thread_of(self, s: AsyncSession, run_id: str) -> ThreadRow | None:
        """Lock the run's thread row. Locks are always taken thread first, then runs (as
        :meth:`create_run` does), so two transactions never wait on each other in a cycle."""
        thread_id = await s.scalar(select(RunRow.thread_id).where(RunRow.run_id == run_id))
        if thread_id is None:
            return None
        return await s.get(ThreadRow, thread_id, with_for_update=True)

    async def discard(self, run_id: str, worker_id: str, thread_status: ThreadStatus) -> bool:
        """Delete a rolled-back run this worker executed; False when it is not its own."""
        async with self._tx() as s:
            thread = await self._lock_thread_of(s, run_id)
            row = await s.get(RunRow, run_id, with_for_update=True)
            if (
                thread is None
                or row is None
                or row.worker_id != worker_id
                or row.status != "running"
            ):
                return False
            await s.delete(row)
            thread.status = thread_status
            thread.updated_at = utcnow()
            return True

    async def release(self, run_id: str, worker_id: str) -> bool:
        """Give a run back to the queue (graceful shutdown): another worker continues it
        from its last checkpoint. A run handed back was not a crash, so its attempt does
        not count towards the limit of reclaims."""
        async with self._tx() as s:
            result = await s.execute(
                update(RunRow)
                .where(
                    RunRow.run_id == run_id,
                    RunRow.worker_id == worker_id,
                    RunRow.status == "running",
                )
                .values(
                    status="pending",
                    worker_id=None,
                    lease_expires_at=None,
                    attempts=RunRow.attempts - 1,
                    updated_at=utcnow(),
                )
            )
            return _rowcount(result) == 1

    # --- helpers ------------------------------------------------------------------------

    async def _owned_thread(
        self, s: AsyncSession, thread_id: str, owner_id: str | None, *, lock: bool = False
    ) -> ThreadRow:
        row = await s.get(ThreadRow, thread_id, with_for_update=lock)
        if row is None or (owner_id is not None and row.owner_id != owner_id):
            raise NotFound("thread", thread_id)
        return row


def _rowcount(result: Any) -> int:
    count = getattr(result, "rowcount", None)
    if not isinstance(count, int):
        raise StorageError("the database did not report a row count")
    return count
