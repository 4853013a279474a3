"""Records of the run engine: threads, runs and what a run was asked to do.

Plain frozen dataclasses: the SQL store returns them, the worker executes them and the
HTTP layer turns them into LangGraph-shaped JSON.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

from errors import InvalidInput

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
RunStatus = Literal["pending", "running", "success", "error", "interrupted", "timeout"]
MultitaskStrategy = Literal["reject", "interrupt", "rollback", "enqueue"]
CancelAction = Literal["interrupt", "rollback"]
Durability = Literal["sync", "async"]
FINISHED_RUN_STATUSES: frozenset[str] = frozenset({"success", "error", "interrupted", "timeout"})

STREAM_MODES: tuple[str, ...] = (
    "values",
    "updates",
    "custom",
    "debug",
    "messages-tuple",
    "checkpoints",
    "tasks",
)
"""Stream modes a run may ask for; ``messages-tuple`` is LangGraph's ``messages`` mode."""

GRAPH_MODE_OF: dict[str, str] = {mode: mode for mode in STREAM_MODES} | {
    "messages-tuple": "messages"
}
"""API stream mode → the mode passed to ``graph.astream``."""

EVENT_OF_GRAPH_MODE: dict[str, str] = {"messages": "messages"} | {
    mode: mode for mode in STREAM_MODES if mode != "messages-tuple"
}
"""Graph stream mode → SSE event name (``messages-tuple`` chunks are sent as ``messages``)."""

BASE_KEY = "__base__"
"""Private key of ``kwargs`` holding the thread's checkpoint before the run's first attempt
(for rollback); never shown to API callers."""


def normalise_id(raw: str, kind: str) -> str:
    """A canonical UUID string; raises InvalidInput naming ``kind`` for anything else."""
    try:
        return str(uuid.UUID(str(raw).strip()))
    except ValueError as exc:
        raise InvalidInput(f"{kind} must be a UUID, got {raw!r}", field=kind) from exc


@dataclass(frozen=True)
class ThreadRecord:
    """A thread row: one novel, owned by one user."""

    thread_id: str
    owner_id: str
    metadata: dict[str, Any]
    status: ThreadStatus
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class BaseCheckpoint:
    """Where the thread stood before a run's first attempt: its head checkpoint (if any)
    and the pending writes already on it, so a rollback removes only the run's own."""

    checkpoint_id: str | None
    write_keys: tuple[tuple[str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form kept in the run's kwargs."""
        return {
            "checkpoint_id": self.checkpoint_id,
            "write_keys": [list(k) for k in self.write_keys],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BaseCheckpoint:
        """Inverse of :meth:`to_json`."""
        keys = tuple((str(k[0]), int(k[1])) for k in data.get("write_keys", []))
        return cls(data.get("checkpoint_id"), keys)


@dataclass(frozen=True)
class RunKwargs:
    """What a run was asked to do, validated at the edge and stored as JSON."""

    input: Any = None
    command: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    stream_mode: tuple[str, ...] = ("values",)
    interrupt_before: tuple[str, ...] | Literal["*"] | None = None
    interrupt_after: tuple[str, ...] | Literal["*"] | None = None
    checkpoint_id: str | None = None
    durability: Durability = "sync"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    strict_resume: bool = False
    base: BaseCheckpoint | None = None
    budget: dict[str, Any] | None = None
    """``{"max_tokens", "max_cost_usd"}`` (from the run's ``context.budget``)."""
    replay: dict[str, Any] | None = None
    """A :class:`~memory.traces.port.ReplaySpec` as JSON: this run replays a recorded one."""

    def to_json(self) -> dict[str, Any]:
        """The JSON stored in ``runs.kwargs`` (the base checkpoint under a private key)."""
        data: dict[str, Any] = {
            "input": self.input,
            "command": self.command,
            "config": self.config,
            "stream_mode": list(self.stream_mode),
            "interrupt_before": _nodes_json(self.interrupt_before),
            "interrupt_after": _nodes_json(self.interrupt_after),
            "checkpoint_id": self.checkpoint_id,
            "durability": self.durability,
            "on_disconnect": self.on_disconnect,
            "strict_resume": self.strict_resume,
            "budget": self.budget,
            "replay": self.replay,
        }
        if self.base is not None:
            data[BASE_KEY] = self.base.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunKwargs:
        """Inverse of :meth:`to_json`."""
        base = data.get(BASE_KEY)
        return cls(
            input=data.get("input"),
            command=data.get("command"),
            config=dict(data.get("config") or {}),
            stream_mode=tuple(data.get("stream_mode") or ("values",)),
            interrupt_before=_nodes_of(data.get("interrupt_before")),
            interrupt_after=_nodes_of(data.get("interrupt_after")),
            checkpoint_id=data.get("checkpoint_id"),
            durability=cast(Durability, data.get("durability") or "sync"),
            on_disconnect=data.get("on_disconnect") or "continue",
            strict_resume=bool(data.get("strict_resume")),
            base=BaseCheckpoint.from_json(base) if isinstance(base, dict) else None,
            budget=data.get("budget"),
            replay=data.get("replay"),
        )

    def public_json(self) -> dict[str, Any]:
        """The kwargs as API callers see them (no private keys)."""
        data = self.to_json()
        data.pop(BASE_KEY, None)
        return data


def _nodes_json(value: tuple[str, ...] | Literal["*"] | None) -> list[str] | str | None:
    if value is None or value == "*":
        return value
    return list(value)


def _nodes_of(value: object) -> tuple[str, ...] | Literal["*"] | None:
    if value is None:
        return None
    if value == "*":
        return "*"
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise InvalidInput(f"interrupt nodes must be '*' or a list of node names, got {value!r}")


@dataclass(frozen=True)
class RunRecord:
    """A run row."""

    run_id: str
    thread_id: str
    assistant_id: str
    owner_id: str
    status: RunStatus
    metadata: dict[str, Any]
    kwargs: RunKwargs
    multitask_strategy: MultitaskStrategy
    created_at: datetime
    updated_at: datetime
    not_before: datetime
    worker_id: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    cancel_action: CancelAction | None
    attempts: int
    error: str | None

    @property
    def finished(self) -> bool:
        """True once the run reached a final status."""
        return self.status in FINISHED_RUN_STATUSES


@dataclass(frozen=True)
class Heartbeat:
    """What a worker learns when it renews its lease."""

    owned: bool
    """False when the run is no longer this worker's (reclaimed, deleted or finished)."""
    cancel_action: CancelAction | None
