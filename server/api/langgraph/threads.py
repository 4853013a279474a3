"""``/threads``: novels as LangGraph threads, their state, history and forks.

A thread id is the novel's id: the graph's intake node creates the novel record on the
thread's first run. Every thread belongs to the user who created it; others get 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from server.api.langgraph.deps import Runs
from server.api.langgraph.schemas import (
    HistoryQuery,
    StateAtCheckpoint,
    StateUpdate,
    ThreadCount,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
    checkpoint_id_of,
    refuse,
)
from server.api.langgraph.shapes import select, thread_json
from server.deps import CurrentUser
from server.runs.serde import checkpoint_json, state_json

router = APIRouter(prefix="/threads", tags=["threads"])

SelectQuery = Annotated[list[str] | None, Query()]


@router.post("")
async def create_thread(body: ThreadCreate, user: CurrentUser, runs: Runs) -> dict[str, Any]:
    """A new, idle thread (a novel to be written by its first run)."""
    if body.supersteps:
        raise refuse("supersteps", "copying threads between deployments is not supported")
    if body.ttl:
        raise refuse("ttl", "threads do not expire here")
    view = await runs.create_thread(
        user.user_id, thread_id=body.thread_id, metadata=body.metadata, if_exists=body.if_exists
    )
    return thread_json(view)


@router.post("/search")
async def search_threads(body: ThreadSearch, user: CurrentUser, runs: Runs) -> list[dict[str, Any]]:
    """The caller's threads matching the filters."""
    if body.values:
        raise refuse("values", "searching by state values is not supported")
    if body.extract:
        raise refuse("extract", "not supported")
    wants_state = not body.select or any(
        f in ("values", "interrupts") or f.startswith("values.") for f in body.select
    )
    views = await runs.search_threads(
        user.user_id,
        metadata=body.metadata,
        status=body.status,
        ids=body.ids,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by or "created_at",
        sort_order=body.sort_order or "desc",
        with_state=wants_state,
    )
    return [select(thread_json(v), body.select) for v in views]


@router.post("/count")
async def count_threads(body: ThreadCount, user: CurrentUser, runs: Runs) -> int:
    """How many of the caller's threads match."""
    if body.values:
        raise refuse("values", "searching by state values is not supported")
    if not body.metadata:
        return await runs.count_threads(user.user_id, status=body.status)
    views = await runs.search_threads(
        user.user_id, metadata=body.metadata, status=body.status, limit=10**9, with_state=False
    )
    return len(views)


@router.get("/{thread_id}")
async def get_thread(thread_id: str, user: CurrentUser, runs: Runs) -> dict[str, Any]:
    """The thread with its values and pending interrupts."""
    return thread_json(await runs.get_thread(user.user_id, thread_id))


@router.patch("/{thread_id}", response_model=None)
async def patch_thread(
    thread_id: str,
    body: ThreadPatch,
    user: CurrentUser,
    runs: Runs,
    prefer: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | Response:
    """Merge metadata into the thread's (``Prefer: return=minimal`` answers 204)."""
    if body.ttl:
        raise refuse("ttl", "threads do not expire here")
    view = await runs.update_thread(user.user_id, thread_id, body.metadata)
    if prefer and "return=minimal" in prefer:
        return Response(status_code=204)
    return thread_json(view)


@router.delete("/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, user: CurrentUser, runs: Runs) -> None:
    """Delete the thread, its runs, checkpoints and novel."""
    await runs.delete_thread(user.user_id, thread_id)


@router.get("/{thread_id}/state")
async def get_state(
    thread_id: str,
    user: CurrentUser,
    runs: Runs,
    select_: Annotated[list[str] | None, Query(alias="select")] = None,
) -> dict[str, Any]:
    """The thread's current state."""
    snapshot = await runs.get_state(user.user_id, thread_id)
    return select(state_json(snapshot), select_)


@router.get("/{thread_id}/state/{checkpoint_id}")
async def get_state_at(
    thread_id: str,
    checkpoint_id: str,
    user: CurrentUser,
    runs: Runs,
    select_: Annotated[list[str] | None, Query(alias="select")] = None,
) -> dict[str, Any]:
    """The thread's state at one checkpoint."""
    snapshot = await runs.get_state(user.user_id, thread_id, checkpoint_id)
    return select(state_json(snapshot), select_)


@router.post("/{thread_id}/state/checkpoint")
async def post_state_at(
    thread_id: str, body: StateAtCheckpoint, user: CurrentUser, runs: Runs
) -> dict[str, Any]:
    """The thread's state at the checkpoint in the body."""
    checkpoint_id = checkpoint_id_of(thread_id, body.checkpoint, None)
    snapshot = await runs.get_state(user.user_id, thread_id, checkpoint_id)
    return select(state_json(snapshot), body.select)


@router.post("/{thread_id}/state")
async def update_state(
    thread_id: str, body: StateUpdate, user: CurrentUser, runs: Runs
) -> dict[str, Any]:
    """Apply values as if ``as_node`` ran; from a past checkpoint this forks the thread."""
    checkpoint_id = checkpoint_id_of(thread_id, body.checkpoint, body.checkpoint_id)
    config = await runs.update_state(
        user.user_id, thread_id, body.values, as_node=body.as_node, checkpoint_id=checkpoint_id
    )
    return {"checkpoint": checkpoint_json(config)}


async def _history(
    runs: Runs, user_id: str, thread_id: str, body: HistoryQuery
) -> list[dict[str, Any]]:
    before = body.before
    if before is not None and not isinstance(before, str):
        before = checkpoint_id_of(thread_id, before, None)
    states = await runs.history(
        user_id,
        thread_id,
        limit=body.limit,
        before=before,
        metadata=body.metadata,
        checkpoint_id=checkpoint_id_of(thread_id, body.checkpoint, None),
    )
    return [select(state_json(s), body.select) for s in states]


@router.post("/{thread_id}/history")
async def post_history(
    thread_id: str, body: HistoryQuery, user: CurrentUser, runs: Runs
) -> list[dict[str, Any]]:
    """The thread's past states, newest first."""
    return await _history(runs, user.user_id, thread_id, body)


@router.get("/{thread_id}/history")
async def get_history(
    thread_id: str,
    user: CurrentUser,
    runs: Runs,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """The thread's past states, newest first."""
    return await _history(runs, user.user_id, thread_id, HistoryQuery(limit=limit, before=before))
