"""Response bodies of the LangGraph Server API: assistants, threads, runs, SSE frames."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from graphs.novel import GRAPH_ID
from memory.runs.events import RunEvent
from memory.runs.models import RunRecord
from server.runs.serde import interrupts_by_task, jsonable
from server.runs.service import ASSISTANT_ID, ThreadView

ASSISTANT_CREATED = datetime(2025, 1, 1, tzinfo=UTC)
"""The built-in assistant is as old as the graph's first version."""
HEARTBEAT = b": heartbeat\n\n"


def iso(moment: datetime) -> str:
    """ISO 8601 with the UTC offset."""
    return moment.astimezone(UTC).isoformat()


def assistant_json() -> dict[str, Any]:
    """The one assistant: the ``novel`` graph with the server's defaults."""
    return {
        "assistant_id": ASSISTANT_ID,
        "graph_id": GRAPH_ID,
        "name": GRAPH_ID,
        "description": "Four agents (director, worldsmith, writer, reviewer) write a novel.",
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": iso(ASSISTANT_CREATED),
        "updated_at": iso(ASSISTANT_CREATED),
    }


def thread_json(view: ThreadView) -> dict[str, Any]:
    """A thread with its current values and pending interrupts."""
    thread = view.thread
    return {
        "thread_id": thread.thread_id,
        "created_at": iso(thread.created_at),
        "updated_at": iso(thread.updated_at),
        "metadata": thread.metadata,
        "status": thread.status,
        "config": {},
        "values": jsonable(view.snapshot.values) if view.snapshot.values else None,
        "interrupts": interrupts_by_task(view.snapshot),
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run as the SDK's ``Run``."""
    return {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "status": run.status,
        "metadata": run.metadata,
        "kwargs": run.kwargs.public_json(),
        "multitask_strategy": run.multitask_strategy,
        "cancel_reason": run.cancel_action,
    }


def select(data: dict[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """Only the requested fields (``values.<key>`` picks one state key)."""
    if not fields:
        return data
    picked: dict[str, Any] = {}
    for name in fields:
        head, _, key = name.partition(".")
        if key and head == "values" and isinstance(data.get("values"), dict):
            values = picked.setdefault("values", {})
            if key in data["values"]:
                values[key] = data["values"][key]
        elif name in data:
            picked[name] = data[name]
    return picked


def sse_frame(event: RunEvent) -> bytes:
    """One SSE event: ``event:``, ``data:`` and (when it has one) ``id:``."""
    text = f"event: {event.event}\ndata: {event.data}\n"
    if event.id:
        text += f"id: {event.id}\n"
    return (text + "\n").encode()


def run_location(run: RunRecord) -> str:
    """Where the run lives (``Content-Location`` of run creation)."""
    return f"/threads/{run.thread_id}/runs/{run.run_id}"
