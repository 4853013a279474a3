"""What the model gateway knows about each call, for recording, budgets and replay.

A call is placed by three facts that survive a re-execution on another thread: the node
making it, the chapter the graph is at, and its index among the calls of that node step.
The node and step come from LangGraph's config; the chapter comes from the state, which
:func:`model_step` puts in a context variable for the duration of the node.

The gateway hands finished calls to a :class:`CallSink` (the trace recorder) and asks it
before each call whether the run's budget allows another; a :class:`CallRouter` (replay)
may answer a call from records instead of the agent's model.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from memory.traces.port import ModelCall

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


@dataclass
class _StepScope:
    """Mutable per-node-execution counter (never shared between tasks)."""

    chapter: int
    calls: int = 0


_SCOPE: ContextVar[_StepScope | None] = ContextVar("scribe_step_scope", default=None)


@dataclass(frozen=True)
class CallPlace:
    """Where a model call happens in a run."""

    run_id: str | None
    thread_id: str | None
    checkpoint_id: str | None
    task_id: str | None
    node: str
    step: int
    chapter: int
    index: int


@dataclass(frozen=True)
class CallKey:
    """How a replay finds a recorded answer: agent, node, chapter and call index.

    Repeated visits of the same key (an outline sent back twice) are told apart by the
    order in which the replay asks for them.
    """

    agent: str
    node: str
    chapter: int
    index: int


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def model_step(node: F) -> F:
    """Wrap a node so model calls made inside it know the chapter and their index.

    The wrapper keeps the node's signature (LangGraph reads it to pass the runtime).
    """

    @functools.wraps(node)
    async def wrapped(state: Any, runtime: Any) -> Any:
        chapter = 0
        if isinstance(state, Mapping):
            raw = state.get("chapter")
            chapter = int(raw) if isinstance(raw, int) else 0
        token = _SCOPE.set(_StepScope(chapter))
        try:
            return await node(state, runtime)
        finally:
            _SCOPE.reset(token)

    return cast(F, wrapped)


def current_chapter() -> int | None:
    """The chapter of the node step in progress (``None`` outside one, or before chapter 1),
    for error messages that should say where they happened."""
    scope = _SCOPE.get()
    return scope.chapter if scope is not None and scope.chapter > 0 else None


def next_place() -> CallPlace | None:
    """The place of the call about to be made, or ``None`` outside a graph run.

    Advances the node step's call index, so call it once per logical call.
    """
    try:
        from langgraph.config import get_config

        config = get_config()
    except RuntimeError:
        return None
    metadata = config.get("metadata") or {}
    configurable = config.get("configurable") or {}
    node = metadata.get("langgraph_node")
    if not isinstance(node, str):
        return None
    scope = _SCOPE.get()
    index = 0
    chapter = 0
    if scope is not None:
        index = scope.calls
        scope.calls += 1
        chapter = scope.chapter
    checkpoint_map = configurable.get("checkpoint_map") or {}
    namespace = str(configurable.get("checkpoint_ns") or metadata.get("langgraph_checkpoint_ns"))
    task_id = namespace.rpartition(":")[2] or None
    run_id = metadata.get("run_id") or configurable.get("run_id")
    thread_id = configurable.get("thread_id") or metadata.get("thread_id")
    step = metadata.get("langgraph_step")
    return CallPlace(
        run_id=str(run_id) if run_id else None,
        thread_id=str(thread_id) if thread_id else None,
        checkpoint_id=checkpoint_map.get("") if isinstance(checkpoint_map, dict) else None,
        task_id=task_id,
        node=node,
        step=int(step) if isinstance(step, int) else 0,
        chapter=chapter,
        index=index,
    )


class CallSink(Protocol):
    """Receives finished calls (off the hot path) and guards run budgets."""

    def before_call(self, run_id: str) -> None:
        """Raise :class:`~errors.BudgetExceeded` when the run may not call again."""

    def record(self, call: ModelCall) -> None:
        """Take a finished call; must not block."""


class CallRouter(Protocol):
    """Chooses, per call, a model other than the agent's (replay)."""

    def model_for(self, agent: str, place: CallPlace | None) -> BaseChatModel | None:
        """The model to answer this call, or ``None`` for the agent's own."""


_CURRENT: ContextVar[CallKey | None] = ContextVar("scribe_current_call", default=None)


def current_call() -> CallKey | None:
    """The key of the call in flight (read by the replay model)."""
    return _CURRENT.get()


def set_current_call(key: CallKey | None) -> Callable[[], None]:
    """Mark ``key`` as the call in flight; returns the function that unmarks it."""
    token = _CURRENT.set(key)
    return lambda: _CURRENT.reset(token)
