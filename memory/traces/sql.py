"""The SQL adapter of :class:`memory.traces.port.TraceStore` (SQLite and PostgreSQL alike).

Only portable SQLAlchemy 2.0 is used: no dialect-specific upserts. A call is replaced by
deleting and inserting it in one transaction; races between concurrent writers (two runs
of one thread taking the next sequence, two recorders saving the same call) are settled
by the database's unique constraints and a short retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from errors import Conflict, InvalidInput, NotFound, StorageError
from memory.db import SqlStore, utc
from memory.traces.port import (
    AgentUsage,
    Budget,
    ModelCall,
    ReplaySpec,
    RunSource,
    TracedRun,
    TracedRunStatus,
    TraceStore,
    Usage,
)
from memory.traces.tables import (
    CHECKPOINT_ID_LENGTH,
    ID_LENGTH,
    NAME_LENGTH,
    RUN_SOURCES,
    RUN_STATUSES,
    ModelCallRow,
    TraceRunRow,
)

PIPELINE_ORDER: tuple[str, ...] = ("director", "worldsmith", "writer", "reviewer")
"""Order of the agents in usage reports; other agents follow alphabetically.

Kept here rather than imported from ``nodes`` so the memory layer does not depend on it.
"""
# Each attempt lets at least one of the racing writers through, so this bounds how many
# runs of one thread may start at the very same moment without an error.
_WRITE_ATTEMPTS = 20
_FINAL_STATUSES: frozenset[str] = frozenset(RUN_STATUSES) - {"running"}


def _now() -> datetime:
    return datetime.now(UTC)


def _to_db(value: datetime) -> datetime:
    # SQLite drops the offset when storing, so convert before writing or another zone's
    # wall-clock time would be read back as UTC (and sort wrongly).
    return utc(value)


def _check_text(kind: str, value: str | None, limit: int, *, required: bool = True) -> None:
    # Postgres enforces VARCHAR lengths and SQLite does not; checking here keeps both alike.
    if value is None:
        if required:
            raise InvalidInput(f"{kind} is required")
        return
    if (required and not value) or len(value) > limit:
        raise InvalidInput(f"{kind} must be 1 to {limit} characters", value=value)


def _run(row: TraceRunRow) -> TracedRun:
    return TracedRun(
        run_id=row.run_id,
        thread_id=row.thread_id,
        owner_id=row.owner_id,
        source=cast(RunSource, row.source),
        sequence=row.sequence,
        input=row.input,
        command=row.command,
        start_checkpoint_id=row.start_checkpoint_id,
        status=cast(TracedRunStatus, row.status),
        stop_reason=row.stop_reason,
        budget=Budget.from_json(row.budget),
        replay=ReplaySpec.from_json(row.replay) if row.replay is not None else None,
        created_at=utc(row.created_at),
        finished_at=utc(row.finished_at) if row.finished_at is not None else None,
    )


def _call(row: ModelCallRow) -> ModelCall:
    return ModelCall(
        call_id=row.call_id,
        run_id=row.run_id,
        thread_id=row.thread_id,
        checkpoint_id=row.checkpoint_id,
        task_id=row.task_id,
        node=row.node,
        step=row.step,
        chapter=row.chapter,
        index=row.index,
        agent=row.agent,
        task=row.task,
        repair=row.repair,
        model=row.model,
        settings=row.settings,
        messages=row.messages,
        answer=row.answer,
        tool_calls=row.tool_calls,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        latency_ms=row.latency_ms,
        cost_usd=row.cost_usd,
        attempts=row.attempts,
        error=row.error,
        started_at=utc(row.started_at),
        replayed_from=row.replayed_from,
        structured=row.structured,
    )


def _call_row(call: ModelCall) -> ModelCallRow:
    _check_text("call id", call.call_id, ID_LENGTH)
    _check_text("run id", call.run_id, ID_LENGTH)
    _check_text("thread id", call.thread_id, ID_LENGTH)
    _check_text("checkpoint id", call.checkpoint_id, CHECKPOINT_ID_LENGTH, required=False)
    _check_text("task id", call.task_id, CHECKPOINT_ID_LENGTH, required=False)
    _check_text("node", call.node, NAME_LENGTH)
    _check_text("agent", call.agent, NAME_LENGTH)
    _check_text("task", call.task, NAME_LENGTH)
    _check_text("replayed_from", call.replayed_from, ID_LENGTH, required=False)
    return ModelCallRow(
        call_id=call.call_id,
        run_id=call.run_id,
        thread_id=call.thread_id,
        checkpoint_id=call.checkpoint_id,
        task_id=call.task_id,
        node=call.node,
        step=call.step,
        chapter=call.chapter,
        index=call.index,
        agent=call.agent,
        task=call.task,
        repair=call.repair,
        model=call.model,
        settings=call.settings,
        messages=call.messages,
        answer=call.answer,
        tool_calls=call.tool_calls,
        structured=call.structured,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        latency_ms=call.latency_ms,
        cost_usd=call.cost_usd,
        attempts=call.attempts,
        error=call.error,
        started_at=_to_db(call.started_at),
        replayed_from=call.replayed_from,
    )


def _agent_rank(agent: str) -> tuple[int, str]:
    if agent in PIPELINE_ORDER:
        return (PIPELINE_ORDER.index(agent), "")
    return (len(PIPELINE_ORDER), agent)


class SqlTraceStore(SqlStore, TraceStore):
    """Traces in a SQL database reached through an async SQLAlchemy engine.

    The engine may be shared with the app store, so :meth:`close` disposes of it only
    when ``owns_engine`` is true (see :meth:`from_url`).
    """

    label = "trace store"

    # --- runs -------------------------------------------------------------------------

    async def start_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        owner_id: str | None,
        source: RunSource,
        input: Any,
        command: dict[str, Any] | None,
        start_checkpoint_id: str | None,
        budget: Budget,
        replay: ReplaySpec | None,
    ) -> TracedRun:
        """Register a run as ``running`` with its thread's next sequence number.

        Registering a known run id again (a reclaimed run) sets it back to ``running``,
        clearing the end it may have recorded, and keeps everything else, including its
        sequence. Conflict if that run id belongs to another thread.
        """
        _check_text("run id", run_id, ID_LENGTH)
        _check_text("thread id", thread_id, ID_LENGTH)
        _check_text("owner id", owner_id, ID_LENGTH, required=False)
        _check_text(
            "start checkpoint id", start_checkpoint_id, CHECKPOINT_ID_LENGTH, required=False
        )
        if source not in RUN_SOURCES:
            raise InvalidInput(f"unknown run source {source!r}", source=source)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._transaction() as session:
                    existing = await session.get(TraceRunRow, run_id)
                    if existing is not None:
                        if existing.thread_id != thread_id:
                            raise Conflict(
                                f"run {run_id} belongs to thread {existing.thread_id}",
                                id=run_id,
                                thread_id=existing.thread_id,
                            )
                        existing.status = "running"
                        existing.stop_reason = None
                        existing.finished_at = None
                        row = existing
                    else:
                        latest = await session.scalar(
                            select(func.max(TraceRunRow.sequence)).where(
                                TraceRunRow.thread_id == thread_id
                            )
                        )
                        row = TraceRunRow(
                            run_id=run_id,
                            thread_id=thread_id,
                            owner_id=owner_id,
                            source=source,
                            sequence=(latest or 0) + 1,
                            input=input,
                            command=command,
                            start_checkpoint_id=start_checkpoint_id,
                            status="running",
                            stop_reason=None,
                            budget=budget.to_json(),
                            replay=replay.to_json() if replay is not None else None,
                            created_at=_now(),
                            finished_at=None,
                        )
                        session.add(row)
                return _run(row)
            except IntegrityError as exc:
                # Another run of the thread took this sequence (or the same run id was
                # registered concurrently); the next attempt sees it.
                if attempt >= _WRITE_ATTEMPTS:
                    raise StorageError(
                        f"could not register run {run_id}: {exc.orig}", id=run_id
                    ) from exc

    async def finish_run(
        self, run_id: str, status: TracedRunStatus, stop_reason: str | None = None
    ) -> None:
        """Record how the run ended; NotFound for an unknown run, InvalidInput for a status
        that is not an end (``running`` included)."""
        if status not in _FINAL_STATUSES:
            raise InvalidInput(f"{status!r} is not a final run status", status=status)
        async with self._transaction() as session:
            row = await self._run_row(session, run_id)
            row.status = status
            row.stop_reason = stop_reason
            row.finished_at = _now()

    async def get_run(self, run_id: str) -> TracedRun:
        """The run ``run_id``; NotFound if unknown."""
        async with self._transaction() as session:
            return _run(await self._run_row(session, run_id))

    async def thread_runs(self, thread_id: str) -> list[TracedRun]:
        """The thread's runs in ``sequence`` order (empty for an unknown thread)."""
        async with self._transaction() as session:
            rows = await session.scalars(
                select(TraceRunRow)
                .where(TraceRunRow.thread_id == thread_id)
                .order_by(TraceRunRow.sequence)
            )
            return [_run(row) for row in rows]

    # --- calls ------------------------------------------------------------------------

    async def save_calls(self, calls: Sequence[ModelCall]) -> None:
        """Insert or replace (by ``call_id``) a batch of calls in one transaction.

        Within a batch the last call with a given id wins. NotFound if a call names an
        unknown run; InvalidInput if it names another thread than its run's.
        """
        latest: dict[str, ModelCall] = {}
        for call in calls:
            latest[call.call_id] = call
        if not latest:
            return
        runs = {(call.run_id, call.thread_id) for call in latest.values()}
        attempt = 0
        while True:
            attempt += 1
            rows = [_call_row(call) for call in latest.values()]
            try:
                async with self._transaction() as session:
                    await self._check_runs(session, runs)
                    await session.execute(
                        delete(ModelCallRow).where(ModelCallRow.call_id.in_(list(latest)))
                    )
                    session.add_all(rows)
                return
            except IntegrityError as exc:
                # A concurrent save inserted one of these ids between our delete and insert,
                # or the run was deleted meanwhile (the next attempt reports NotFound).
                if attempt >= _WRITE_ATTEMPTS:
                    raise StorageError(
                        f"could not save {len(rows)} model calls: {exc.orig}"
                    ) from exc

    async def calls(self, run_id: str) -> list[ModelCall]:
        """The run's calls ordered by (step, index, started_at); NotFound if the run is unknown."""
        async with self._transaction() as session:
            await self._run_row(session, run_id)
            rows = await session.scalars(
                select(ModelCallRow)
                .where(ModelCallRow.run_id == run_id)
                .order_by(
                    ModelCallRow.step,
                    ModelCallRow.index,
                    ModelCallRow.started_at,
                    ModelCallRow.call_id,
                )
            )
            return [_call(row) for row in rows]

    async def usage(self, *, run_id: str | None = None, thread_id: str | None = None) -> Usage:
        """Totals of one run or of every run of one thread; a call without a price costs 0.

        InvalidInput unless exactly one of ``run_id`` and ``thread_id`` is given; NotFound
        for an unknown run (an unknown thread simply has no usage).
        """
        if (run_id is None) == (thread_id is None):
            raise InvalidInput("give exactly one of run_id and thread_id")
        if run_id is not None:
            scope = ModelCallRow.run_id == run_id
        else:
            scope = ModelCallRow.thread_id == thread_id
        query = (
            select(
                ModelCallRow.agent,
                func.count(),
                func.sum(ModelCallRow.input_tokens),
                func.sum(ModelCallRow.output_tokens),
                func.sum(func.coalesce(ModelCallRow.cost_usd, 0.0)),
                func.sum(ModelCallRow.latency_ms),
            )
            .where(scope)
            .group_by(ModelCallRow.agent)
        )
        async with self._transaction() as session:
            if run_id is not None:
                await self._run_row(session, run_id)
            grouped = (await session.execute(query)).all()
        agents = sorted(
            (
                AgentUsage(
                    agent=str(agent),
                    calls=int(count),
                    input_tokens=int(tokens_in or 0),
                    output_tokens=int(tokens_out or 0),
                    cost_usd=float(cost or 0.0),
                    latency_ms=float(latency or 0.0),
                )
                for agent, count, tokens_in, tokens_out, cost, latency in grouped
            ),
            key=lambda usage: _agent_rank(usage.agent),
        )
        return Usage(
            calls=sum(a.calls for a in agents),
            input_tokens=sum(a.input_tokens for a in agents),
            output_tokens=sum(a.output_tokens for a in agents),
            cost_usd=sum((a.cost_usd for a in agents), 0.0),
            latency_ms=sum((a.latency_ms for a in agents), 0.0),
            agents=tuple(agents),
        )

    # --- lifecycle --------------------------------------------------------------------

    async def delete_thread(self, thread_id: str) -> None:
        """Forget the thread's runs and their calls (nothing happens for an unknown thread)."""
        async with self._transaction() as session:
            # Calls first, explicitly, rather than relying on each database's cascade.
            thread_runs = select(TraceRunRow.run_id).where(TraceRunRow.thread_id == thread_id)
            await session.execute(
                delete(ModelCallRow).where(
                    or_(ModelCallRow.thread_id == thread_id, ModelCallRow.run_id.in_(thread_runs))
                )
            )
            await session.execute(delete(TraceRunRow).where(TraceRunRow.thread_id == thread_id))

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    async def _run_row(session: AsyncSession, run_id: str) -> TraceRunRow:
        row = await session.get(TraceRunRow, run_id)
        if row is None:
            raise NotFound("run", run_id)
        return row

    @staticmethod
    async def _check_runs(session: AsyncSession, runs: set[tuple[str, str]]) -> None:
        rows = await session.execute(
            select(TraceRunRow.run_id, TraceRunRow.thread_id).where(
                TraceRunRow.run_id.in_({run_id for run_id, _ in runs})
            )
        )
        found: dict[str, str] = dict(rows.all())
        for run_id, thread_id in sorted(runs):
            if run_id not in found:
                raise NotFound("run", run_id)
            if found[run_id] != thread_id:
                raise InvalidInput(
                    f"a call of run {run_id} names thread {thread_id}, but the run belongs "
                    f"to thread {found[run_id]}",
                    run_id=run_id,
                    thread_id=thread_id,
                )
