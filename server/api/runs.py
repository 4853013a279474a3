"""Traces under ``/api/v1/runs`` (and a thread's usage under ``/api/v1/threads``).

Evaluators read a run's usage, export it as JSON Lines, replay it on a new thread and
compare two runs. Thin routes: every route first checks through
:meth:`~server.runs.service.RunService.traced_run` (or the thread registry) that the run
belongs to one of the caller's threads, before any trace is read; another user's run is a
404 on every route, never data. The work is done by :mod:`server.trace_export` and the run
service; errors become responses in ``server/errors.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from errors import InvalidInput, NotFound
from memory.runs.models import normalise_id
from memory.traces.port import TracedRun
from server.api.langgraph.deps import Runs
from server.api.langgraph.shapes import run_location
from server.deps import CurrentUser
from server.runs.serde import dumps
from server.trace_export import compare_runs, trace_lines

runs_router = APIRouter(prefix="/api/v1/runs", tags=["traces"])
threads_router = APIRouter(prefix="/api/v1/threads", tags=["traces"])

NDJSON = "application/x-ndjson"
MAX_ID_CHARS = 200
RunIdQuery = Annotated[str, Query(min_length=1, max_length=MAX_ID_CHARS)]


# --- requests and responses -------------------------------------------------------------


class ReplayRequest(BaseModel):
    """What to replay: which agents answer from records, which use their configured model,
    and optionally the source thread's checkpoint to replay from."""

    # Unknown fields are refused so a misspelt one gets a 422 naming it, not silence.
    model_config = ConfigDict(extra="forbid")

    recorded_agents: list[str] | None = Field(
        default=None,
        description="agents answered from the records (omitted or empty: every agent)",
    )
    live_agents: list[str] | None = Field(
        default=None, description="agents that call their configured (live or offline) model"
    )
    from_checkpoint_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ID_CHARS,
        description="a checkpoint of the source thread: steps up to it come from records",
    )


class ReplayResponse(BaseModel):
    """The queued replay: its new thread and its run."""

    thread_id: str
    run_id: str
    source_run_id: str
    status: str


class RunTraceView(BaseModel):
    """A recorded run: what it was asked to do, how it ended, and what it used."""

    run_id: str
    thread_id: str
    source: str
    sequence: int
    status: str
    stop_reason: str | None
    input: Any
    command: dict[str, Any] | None
    start_checkpoint_id: str | None
    budget: dict[str, Any]
    replay: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None
    usage: dict[str, Any] = Field(
        description="tokens, cost, calls and model time, overall and per agent"
    )

    @classmethod
    def of(cls, run: TracedRun, usage: dict[str, Any]) -> RunTraceView:
        """The view of ``run`` with its ``usage`` (``Usage.to_json()``)."""
        return cls(
            run_id=run.run_id,
            thread_id=run.thread_id,
            source=run.source,
            sequence=run.sequence,
            status=run.status,
            stop_reason=run.stop_reason,
            input=run.input,
            command=run.command,
            start_checkpoint_id=run.start_checkpoint_id,
            budget=run.budget.to_json(),
            replay=run.replay.to_json() if run.replay else None,
            created_at=run.created_at,
            finished_at=run.finished_at,
            usage=usage,
        )


class RunUsage(BaseModel):
    """One run of a thread and its usage."""

    run_id: str
    sequence: int
    status: str
    stop_reason: str | None
    usage: dict[str, Any]


class ThreadUsage(BaseModel):
    """Totals of every run of a thread, and each run's own."""

    thread_id: str
    usage: dict[str, Any]
    runs: list[RunUsage]


# --- runs -------------------------------------------------------------------------------


# Declared before ``/{run_id}`` so "compare" is never taken for a run id.
@runs_router.get("/compare")
async def compare(a: RunIdQuery, b: RunIdQuery, user: CurrentUser, runs: Runs) -> dict[str, Any]:
    """Two of the caller's runs side by side: per chapter the text diff, reviewer scores
    and issues, and tokens, cost and time per agent. 404 unless both are the caller's."""
    run_a = await runs.traced_run(user.user_id, a)
    run_b = await runs.traced_run(user.user_id, b)
    comparison = await compare_runs(runs.backends, run_a.run_id, run_b.run_id)
    result: dict[str, Any] = comparison.to_json()
    return result


@runs_router.get("/{run_id}")
async def get_run(run_id: str, user: CurrentUser, runs: Runs) -> RunTraceView:
    """The recorded run with its usage (tokens, cost, calls, model time per agent)."""
    run = await runs.traced_run(user.user_id, run_id)
    usage = await runs.backends.tracing.store.usage(run_id=run.run_id)
    return RunTraceView.of(run, usage.to_json())


@runs_router.get(
    "/{run_id}/trace",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": "one JSON object per line"}},
)
async def get_trace(run_id: str, user: CurrentUser, runs: Runs) -> StreamingResponse:
    """The run as JSON Lines: a ``run`` line, then ``step`` and ``call`` lines (schema:
    ``server.trace_export.TRACE_LINE_SCHEMA``)."""
    run = await runs.traced_run(user.user_id, run_id)
    lines = aiter(trace_lines(runs.backends, run.run_id))
    # The first line is read before answering, so a failure to read the trace is an
    # error status rather than a 200 with a broken body.
    first = await anext(lines, None)
    return StreamingResponse(
        _ndjson(first, lines), media_type=NDJSON, headers={"Cache-Control": "no-store"}
    )


async def _ndjson(
    first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[bytes]:
    if first is None:
        return
    yield (dumps(first) + "\n").encode()
    async for line in rest:
        yield (dumps(line) + "\n").encode()


@runs_router.post("/{run_id}/replay", status_code=202, response_model=ReplayResponse)
async def replay(run_id: str, body: ReplayRequest, user: CurrentUser, runs: Runs) -> JSONResponse:
    """Queue a replay of the run on a new thread (no network, deterministic for the
    recorded agents); 422 for an unknown agent, 404 for an unknown checkpoint."""
    record = await runs.replay(
        user.user_id,
        run_id,
        recorded=body.recorded_agents,
        live=body.live_agents,
        from_checkpoint_id=body.from_checkpoint_id,
    )
    source: str = (record.kwargs.replay or {}).get("source_run_id", run_id)
    answer = ReplayResponse(
        thread_id=record.thread_id,
        run_id=record.run_id,
        source_run_id=source,
        status=record.status,
    )
    location = run_location(record)
    return JSONResponse(
        answer.model_dump(),
        status_code=202,
        headers={"Content-Location": location, "Location": location},
    )


# --- threads ----------------------------------------------------------------------------


@threads_router.get("/{thread_id}/usage")
async def thread_usage(thread_id: str, user: CurrentUser, runs: Runs) -> ThreadUsage:
    """Totals of every run of one of the caller's threads, and each run's own."""
    try:
        tid = normalise_id(thread_id, "thread_id")
    except InvalidInput:
        # An id that cannot exist is simply not found, as on the /threads routes.
        raise NotFound("thread", thread_id) from None
    await runs.store.get_thread(tid, user.user_id)
    store = runs.backends.tracing.store
    total = await store.usage(thread_id=tid)
    per_run = [
        RunUsage(
            run_id=run.run_id,
            sequence=run.sequence,
            status=run.status,
            stop_reason=run.stop_reason,
            usage=(await store.usage(run_id=run.run_id)).to_json(),
        )
        for run in await store.thread_runs(tid)
    ]
    return ThreadUsage(thread_id=tid, usage=total.to_json(), runs=per_run)


router = APIRouter()
"""Both routers, for one ``include_router`` in the app."""
router.include_router(runs_router)
router.include_router(threads_router)
