"""JSON shapes of the LangGraph Server API: stream chunks, interrupts, thread states.

Graph chunks hold LangChain messages, ``Interrupt`` objects, tuples and ``Send`` values;
:func:`jsonable` turns them into plain JSON the way LangGraph Server does (messages as
their ``model_dump()``, interrupts as ``{"value", "id"}``).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Interrupt, Send, StateSnapshot
from pydantic import BaseModel


def jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible data (unknown objects become their ``str``)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Interrupt):
        return interrupt_json(value)
    if isinstance(value, Send):
        return {"node": value.node, "arg": jsonable(value.arg)}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, BaseException):
        return error_text(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (one line: safe in an SSE ``data:`` field)."""
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))


def error_text(error: BaseException) -> str:
    """``Class: message`` of an exception."""
    message = str(error)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def interrupt_json(item: Interrupt) -> dict[str, Any]:
    """An interrupt as the SDK's ``Interrupt``: ``{"value", "id"}``."""
    return {"value": jsonable(item.value), "id": item.id}


def checkpoint_json(config: RunnableConfig | None) -> dict[str, Any] | None:
    """The SDK's ``Checkpoint`` of a checkpoint config."""
    if not config:
        return None
    conf = config.get("configurable", {})
    return {
        "thread_id": conf.get("thread_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
        "checkpoint_id": conf.get("checkpoint_id"),
        "checkpoint_map": conf.get("checkpoint_map"),
    }


def state_json(snapshot: StateSnapshot) -> dict[str, Any]:
    """A state snapshot as the SDK's ``ThreadState``."""
    tasks = [
        {
            "id": task.id,
            "name": task.name,
            "path": jsonable(task.path),
            "error": error_text(task.error) if isinstance(task.error, BaseException) else None,
            "interrupts": [interrupt_json(i) for i in task.interrupts],
            "checkpoint": None,
            "state": None,
            "result": jsonable(task.result),
        }
        for task in snapshot.tasks
    ]
    checkpoint = checkpoint_json(snapshot.config) or {}
    return {
        "values": jsonable(snapshot.values),
        "next": list(snapshot.next),
        "tasks": tasks,
        "checkpoint": checkpoint,
        "metadata": jsonable(snapshot.metadata or {}),
        "created_at": snapshot.created_at,
        "parent_checkpoint": checkpoint_json(snapshot.parent_config),
        "interrupts": [interrupt_json(i) for i in snapshot.interrupts],
    }


def values_with_interrupts(snapshot: StateSnapshot) -> dict[str, Any]:
    """The state values, plus ``__interrupt__`` when the graph waits at an interrupt —
    what ``runs.wait`` and ``runs.join`` return."""
    values: dict[str, Any] = jsonable(snapshot.values) if snapshot.values else {}
    if snapshot.interrupts:
        values["__interrupt__"] = [interrupt_json(i) for i in snapshot.interrupts]
    return values


def interrupts_by_task(snapshot: StateSnapshot) -> dict[str, list[dict[str, Any]]]:
    """The thread's ``interrupts`` field: task id → its pending interrupts."""
    return {
        task.id: [interrupt_json(i) for i in task.interrupts]
        for task in snapshot.tasks
        if task.interrupts
    }
