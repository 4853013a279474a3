"""Request bodies of the LangGraph Server API, as the official SDK sends them.

Unknown fields are refused (422 naming the field). Fields the SDK may send that this
server cannot honour are accepted by the parser only to be refused by
:func:`run_request` with a 422 that says why.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from errors import InvalidInput
from memory.runs.models import RunKwargs, normalise_id
from server.runs.service import RunRequest, resolve_assistant
from server.runs.tracing import budget_of

CONFIG_KEYS = frozenset({"tags", "recursion_limit", "configurable", "metadata", "run_name"})
ThreadStatusName = Literal["idle", "busy", "interrupted", "error"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckpointBody(_Body):
    """The SDK's ``Checkpoint``: which checkpoint of which thread."""

    thread_id: str | None = None
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class CommandBody(_Body):
    """``Command``: answer interrupts, update state, jump to nodes."""

    resume: Any = None
    update: Any = None
    goto: Any = None


class RunCreate(_Body):
    """Body of ``POST /threads/{id}/runs`` (and ``/runs/stream``, ``/runs/wait``)."""

    assistant_id: str
    input: Any = None
    command: CommandBody | None = None
    metadata: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    checkpoint: CheckpointBody | None = None
    checkpoint_id: str | None = None
    stream_mode: str | list[str] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    feedback_keys: list[str] | None = None
    webhook: str | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    on_completion: Literal["delete", "keep"] | None = None
    after_seconds: float | None = Field(default=None, ge=0, le=30 * 86_400)
    durability: Literal["sync", "async", "exit"] | None = None
    checkpoint_during: bool | None = None
    strict_resume: bool | None = None
    langsmith_tracer: dict[str, Any] | None = None


class ThreadCreate(_Body):
    """Body of ``POST /threads``."""

    thread_id: str | None = None
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    supersteps: list[dict[str, Any]] | None = None
    ttl: dict[str, Any] | None = None


class ThreadPatch(_Body):
    """Body of ``PATCH /threads/{id}``."""

    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: dict[str, Any] | None = None


class ThreadSearch(_Body):
    """Body of ``POST /threads/search``."""

    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    ids: list[str] | None = None
    status: ThreadStatusName | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None
    extract: dict[str, str] | None = None


class ThreadCount(_Body):
    """Body of ``POST /threads/count``."""

    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    status: ThreadStatusName | None = None


class StateAtCheckpoint(_Body):
    """Body of ``POST /threads/{id}/state/checkpoint``."""

    checkpoint: CheckpointBody
    subgraphs: bool = False
    select: list[str] | None = None


class StateUpdate(_Body):
    """Body of ``POST /threads/{id}/state``: values applied as ``as_node``, optionally
    on a past checkpoint (a fork)."""

    values: Any = None
    as_node: str | None = None
    checkpoint: CheckpointBody | None = None
    checkpoint_id: str | None = None


class HistoryQuery(_Body):
    """Body of ``POST /threads/{id}/history``."""

    limit: int = Field(default=10, ge=1, le=1000)
    before: str | CheckpointBody | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointBody | None = None
    select: list[str] | None = None


class AssistantSearch(_Body):
    """Body of ``POST /assistants/search`` and ``/assistants/count``."""

    metadata: dict[str, Any] | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: str | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None


def refuse(field: str, why: str) -> InvalidInput:
    """A 422 naming ``field``."""
    return InvalidInput(f"{field}: {why}", field=field)


def checkpoint_id_of(
    thread_id: str, checkpoint: CheckpointBody | None, checkpoint_id: str | None
) -> str | None:
    """The checkpoint id named by either field; only the root namespace exists here."""
    if checkpoint is not None:
        if checkpoint.checkpoint_ns:
            raise refuse("checkpoint.checkpoint_ns", "the novel graph has no subgraphs")
        if checkpoint.thread_id and normalise_id(checkpoint.thread_id, "thread_id") != (
            normalise_id(thread_id, "thread_id")
        ):
            raise refuse("checkpoint.thread_id", "names another thread")
        return checkpoint.checkpoint_id or checkpoint_id
    return checkpoint_id


def run_request(thread_id: str, body: RunCreate) -> RunRequest:
    """The service's run request; 422 for anything this server cannot honour."""
    assistant_id = resolve_assistant(body.assistant_id)
    if body.webhook:
        raise refuse("webhook", "webhooks are not supported (no outbound calls)")
    if body.feedback_keys:
        raise refuse("feedback_keys", "feedback is not supported")
    context = dict(body.context or {})
    extra = sorted(set(context) - {"budget"})
    if extra:
        raise refuse(
            f"context.{extra[0]}", "the graph's context is set by the server; only budget is taken"
        )
    budget = budget_of(context.get("budget")) if context.get("budget") is not None else None
    if body.on_completion is not None:
        raise refuse("on_completion", "only stateless runs take on_completion")
    if body.langsmith_tracer:
        raise refuse("langsmith_tracer", "tracing to LangSmith is not supported")
    if body.checkpoint_during is not None:
        raise refuse("checkpoint_during", "deprecated; runs always checkpoint every step")
    if body.durability == "exit":
        raise refuse("durability", "'exit' is not supported: runs are durable (sync or async)")
    config = dict(body.config or {})
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise refuse(f"config.{unknown[0]}", "not supported")
    configurable = dict(config.get("configurable") or {})
    checkpoint_id = checkpoint_id_of(thread_id, body.checkpoint, body.checkpoint_id)
    checkpoint_id = checkpoint_id or configurable.pop("checkpoint_id", None)
    configurable.pop("thread_id", None)
    if configurable:
        config["configurable"] = configurable
    else:
        config.pop("configurable", None)
    if "recursion_limit" in config and (
        not isinstance(config["recursion_limit"], int) or config["recursion_limit"] < 1
    ):
        raise refuse("config.recursion_limit", "must be a positive whole number")
    modes = [body.stream_mode] if isinstance(body.stream_mode, str) else list(body.stream_mode)
    if not modes:
        raise refuse("stream_mode", "name at least one mode")
    kwargs = RunKwargs(
        input=body.input,
        command=body.command.model_dump(exclude_unset=True) if body.command else None,
        config=config,
        stream_mode=tuple(dict.fromkeys(modes)),
        interrupt_before=_nodes(body.interrupt_before),
        interrupt_after=_nodes(body.interrupt_after),
        checkpoint_id=checkpoint_id,
        durability="async" if body.durability == "async" else "sync",
        on_disconnect=body.on_disconnect,
        strict_resume=bool(body.strict_resume),
        budget=budget.to_json() if budget is not None and budget.limited else None,
    )
    return RunRequest(
        assistant_id=assistant_id,
        kwargs=kwargs,
        metadata=dict(body.metadata or {}),
        multitask_strategy=body.multitask_strategy,
        if_not_exists=body.if_not_exists,
        after_seconds=body.after_seconds or 0.0,
    )


def _nodes(value: Literal["*"] | list[str] | None) -> tuple[str, ...] | Literal["*"] | None:
    if value is None or value == "*":
        return value
    return tuple(value)
