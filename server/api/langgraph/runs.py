"""``/threads/{thread_id}/runs``: background runs, streamed runs, waiting, joining, cancel.

Run creation answers with ``Content-Location: /threads/{tid}/runs/{rid}``. Streams are
SSE (``metadata`` first, then events named by stream mode, ``error`` if the run failed,
always a final ``end``; every event has an ``id:``, a ``: heartbeat`` comment fills
silences) and carry ``Location`` so the SDK reconnects to the run's stream with
``Last-Event-ID``. Waiting responses send a newline now and then while the run goes on,
then the JSON body (JSON allows leading whitespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse

from errors import ScribeError
from memory.runs.events import END, RunEvent
from memory.runs.models import RunRecord, RunStatus
from server.api.langgraph.deps import Runs
from server.api.langgraph.schemas import RunCreate, run_request
from server.api.langgraph.shapes import HEARTBEAT, run_json, run_location, select, sse_frame
from server.deps import CurrentUser
from server.runs.serde import dumps
from server.runs.service import RunService

router = APIRouter(prefix="/threads/{thread_id}/runs", tags=["runs"])
log = logging.getLogger("scribe.http")

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_background: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Coroutine[Any, Any, None]) -> None:
    # Strong references: a bare create_task may be collected before it runs.
    task = asyncio.create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _cancel_quietly(runs: RunService, user_id: str, run: RunRecord) -> None:
    """The client went away from a run created with ``on_disconnect="cancel"``."""
    try:
        await runs.cancel_run(user_id, run.thread_id, run.run_id, action="interrupt")
    except ScribeError as exc:
        log.debug("run %s not cancelled on disconnect: %s", run.run_id, exc)


async def _sse(
    runs: RunService,
    user_id: str,
    run: RunRecord,
    *,
    last_event_id: str | None,
    stream_mode: list[str] | None,
    cancel_on_disconnect: bool,
) -> AsyncIterator[bytes]:
    completed = False
    try:
        async for event in runs.events(
            user_id,
            run.thread_id,
            run.run_id,
            last_event_id=last_event_id,
            stream_mode=stream_mode,
        ):
            yield HEARTBEAT if event is None else sse_frame(event)
        completed = True
    except ScribeError as exc:
        # The response has started: the failure can only be told in the stream itself.
        error = {"error": type(exc).__name__, "message": exc.message}
        yield sse_frame(RunEvent("", "error", dumps(error)))
        yield sse_frame(RunEvent("", END, "null"))
        completed = True
    finally:
        if not completed and cancel_on_disconnect:
            _spawn(_cancel_quietly(runs, user_id, run))


async def _waiting(
    runs: RunService, user_id: str, run: RunRecord, *, cancel_on_disconnect: bool
) -> AsyncIterator[bytes]:
    waiter = asyncio.ensure_future(runs.wait_finished(user_id, run.thread_id, run.run_id))
    heartbeat_s = runs.engine.options.sse_heartbeat_s
    completed = False
    try:
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=heartbeat_s)
            if done:
                break
            yield b"\n"
        output = await runs.output(user_id, run.thread_id, waiter.result())
        completed = True
        yield dumps(output).encode()
    finally:
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if not completed and cancel_on_disconnect:
            _spawn(_cancel_quietly(runs, user_id, run))


@router.post("")
async def create_run(
    thread_id: str, body: RunCreate, user: CurrentUser, runs: Runs
) -> JSONResponse:
    """Queue a background run."""
    run = await runs.create_run(user.user_id, thread_id, run_request(thread_id, body))
    return JSONResponse(run_json(run), headers={"Content-Location": run_location(run)})


@router.post("/stream")
async def stream_run(
    thread_id: str, body: RunCreate, user: CurrentUser, runs: Runs
) -> StreamingResponse:
    """Queue a run and stream its events."""
    run = await runs.create_run(user.user_id, thread_id, run_request(thread_id, body))
    location = run_location(run)
    return StreamingResponse(
        _sse(
            runs,
            user.user_id,
            run,
            last_event_id=None,
            stream_mode=None,
            cancel_on_disconnect=body.on_disconnect == "cancel",
        ),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "Content-Location": location, "Location": f"{location}/stream"},
    )


@router.post("/wait")
async def wait_run(
    thread_id: str, body: RunCreate, user: CurrentUser, runs: Runs
) -> StreamingResponse:
    """Queue a run and answer with the thread's values once it ended."""
    run = await runs.create_run(user.user_id, thread_id, run_request(thread_id, body))
    location = run_location(run)
    return StreamingResponse(
        _waiting(runs, user.user_id, run, cancel_on_disconnect=body.on_disconnect == "cancel"),
        media_type="application/json",
        headers={"Content-Location": location, "Location": f"{location}/join"},
    )


@router.get("")
async def list_runs(
    thread_id: str,
    user: CurrentUser,
    runs: Runs,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: RunStatus | None = None,
    select_: Annotated[list[str] | None, Query(alias="select")] = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first."""
    found = await runs.list_runs(user.user_id, thread_id, limit=limit, offset=offset, status=status)
    return [select(run_json(r), select_) for r in found]


@router.get("/{run_id}")
async def get_run(thread_id: str, run_id: str, user: CurrentUser, runs: Runs) -> dict[str, Any]:
    """The run."""
    return run_json(await runs.get_run(user.user_id, thread_id, run_id))


@router.delete("/{run_id}", status_code=204)
async def delete_run(thread_id: str, run_id: str, user: CurrentUser, runs: Runs) -> None:
    """Delete a run that is not running."""
    await runs.delete_run(user.user_id, thread_id, run_id)


@router.get("/{run_id}/join")
async def join_run(
    thread_id: str,
    run_id: str,
    user: CurrentUser,
    runs: Runs,
    cancel_on_disconnect: bool = False,
) -> StreamingResponse:
    """Wait for the run to end; answers with the thread's values (or ``__error__``)."""
    run = await runs.get_run(user.user_id, thread_id, run_id)
    return StreamingResponse(
        _waiting(runs, user.user_id, run, cancel_on_disconnect=cancel_on_disconnect),
        media_type="application/json",
    )


@router.get("/{run_id}/stream")
async def join_stream(
    thread_id: str,
    run_id: str,
    user: CurrentUser,
    runs: Runs,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: bool = False,
) -> StreamingResponse:
    """The run's events from the start or after ``Last-Event-ID``, live, until ``end``."""
    modes = [m for m in stream_mode or [] if m] or None
    run = await runs.check_stream(
        user.user_id, thread_id, run_id, last_event_id=last_event_id, stream_mode=modes
    )
    location = run_location(run)
    return StreamingResponse(
        _sse(
            runs,
            user.user_id,
            run,
            last_event_id=last_event_id,
            stream_mode=modes,
            cancel_on_disconnect=cancel_on_disconnect,
        ),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "Location": f"{location}/stream"},
    )


@router.post("/{run_id}/cancel", status_code=204)
async def cancel_run(
    thread_id: str,
    run_id: str,
    user: CurrentUser,
    runs: Runs,
    wait: bool = False,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    """Stop the run; with ``wait`` answer once it has actually stopped."""
    await runs.cancel_run(user.user_id, thread_id, run_id, action=action, wait=wait)
    return Response(status_code=204)
