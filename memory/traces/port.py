"""Traces: every model call of every run, and the runs they belong to.

Evaluators read them to see what each agent was asked and answered, replay a run from
its recorded answers (no network, deterministic) and compare runs. Chapter texts and
world facts stay in their own stores; a trace holds the model traffic and a few facts
about each run (what it was asked to do, where it started, how it ended).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

RunSource = Literal["api", "cli", "replay"]
TracedRunStatus = Literal["running", "success", "interrupted", "error", "budget_exceeded"]


@dataclass(frozen=True)
class ReplaySpec:
    """How a replay run answers model calls.

    Calls of ``recorded_agents`` are answered from the source run's records; the other
    agents use their configured (live or offline) model, except for steps before
    ``live_from_step``, which are answered from records too (replay from a checkpoint).
    """

    source_run_id: str
    recorded_agents: tuple[str, ...]
    live_from_step: int | None = None
    """The first graph step where non-recorded agents go live; ``None`` means at once."""
    from_checkpoint_id: str | None = None
    """The source thread's checkpoint the evaluator chose (kept for the record)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (stored with the run)."""
        return {
            "source_run_id": self.source_run_id,
            "recorded_agents": list(self.recorded_agents),
            "live_from_step": self.live_from_step,
            "from_checkpoint_id": self.from_checkpoint_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplaySpec:
        """The inverse of :meth:`to_json`."""
        step = data.get("live_from_step")
        return cls(
            source_run_id=str(data["source_run_id"]),
            recorded_agents=tuple(str(a) for a in data.get("recorded_agents") or ()),
            live_from_step=int(step) if step is not None else None,
            from_checkpoint_id=data.get("from_checkpoint_id"),
        )


@dataclass(frozen=True)
class Budget:
    """Limits of one run; ``None`` means no limit. Either one stops the run when reached."""

    max_tokens: int | None = None
    max_cost_usd: float | None = None

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        return self.max_tokens is not None or self.max_cost_usd is not None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"max_tokens": self.max_tokens, "max_cost_usd": self.max_cost_usd}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Budget:
        """The inverse of :meth:`to_json` (``None`` → no limits)."""
        if not data:
            return cls()
        tokens, cost = data.get("max_tokens"), data.get("max_cost_usd")
        return cls(
            max_tokens=int(tokens) if tokens is not None else None,
            max_cost_usd=float(cost) if cost is not None else None,
        )


@dataclass(frozen=True)
class TracedRun:
    """A run as traces know it: what it was asked to do and how it ended.

    ``sequence`` orders the runs of one thread (1, 2, ...): a replay re-executes a
    thread's runs in this order, each with its own ``input`` or ``command``.
    """

    run_id: str
    thread_id: str
    owner_id: str | None
    source: RunSource
    sequence: int
    input: Any
    command: dict[str, Any] | None
    start_checkpoint_id: str | None
    status: TracedRunStatus
    stop_reason: str | None
    budget: Budget
    replay: ReplaySpec | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ModelCall:
    """One logical model call (after retries) made by a node during a run.

    ``call_id`` is derived from (run, task, index) so a node step re-executed after a
    crash overwrites its earlier record instead of adding one. ``index`` counts the
    calls within one node step (a repair round is the next index).
    """

    call_id: str
    run_id: str
    thread_id: str
    checkpoint_id: str | None
    """The checkpoint the node step started from."""
    task_id: str | None
    node: str
    step: int
    chapter: int
    index: int
    agent: str
    task: str
    repair: bool
    model: str
    settings: dict[str, Any]
    messages: list[dict[str, Any]]
    """``[{"role": "system"|"user"|"assistant", "content": str}, ...]``."""
    answer: str
    tool_calls: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    latency_ms: float
    cost_usd: float | None
    """Estimated from the price table in settings; ``None`` when the model has no price."""
    attempts: int
    error: str | None
    started_at: datetime
    replayed_from: str | None = None
    """For a replayed answer, the ``call_id`` of the record it came from."""
    structured: dict[str, Any] | None = field(default=None)
    """The parsed JSON answer of a structured task, when it parsed."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class AgentUsage:
    """Totals of one agent's calls."""

    agent: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Usage:
    """Totals of a run or a thread, overall and per agent (pipeline order)."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: float
    agents: tuple[AgentUsage, ...]

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with per-agent totals."""
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "model_time_ms": round(self.latency_ms, 1),
            "agents": {
                a.agent: {
                    "calls": a.calls,
                    "input_tokens": a.input_tokens,
                    "output_tokens": a.output_tokens,
                    "total_tokens": a.total_tokens,
                    "cost_usd": round(a.cost_usd, 6),
                    "model_time_ms": round(a.latency_ms, 1),
                }
                for a in self.agents
            },
        }


class TraceStore(ABC):
    """Port for traces. One SQL adapter serves SQLite and Postgres."""

    @abstractmethod
    async def setup(self) -> None:
        """Bring the schema to the latest migration. Idempotent."""

    @abstractmethod
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
        """Register a run as started (status ``running``); the next ``sequence`` of its
        thread is assigned. Registering an existing run id again (a reclaimed run) marks
        it running and returns it unchanged otherwise."""

    @abstractmethod
    async def finish_run(
        self, run_id: str, status: TracedRunStatus, stop_reason: str | None = None
    ) -> None:
        """Record how the run ended. NotFound for an unknown run."""

    @abstractmethod
    async def get_run(self, run_id: str) -> TracedRun:
        """Raises NotFound for an unknown run."""

    @abstractmethod
    async def thread_runs(self, thread_id: str) -> list[TracedRun]:
        """The thread's runs in ``sequence`` order."""

    @abstractmethod
    async def save_calls(self, calls: Sequence[ModelCall]) -> None:
        """Insert or replace (by ``call_id``) a batch of calls, atomically."""

    @abstractmethod
    async def calls(self, run_id: str) -> list[ModelCall]:
        """The run's calls ordered by (step, index, started_at)."""

    @abstractmethod
    async def usage(self, *, run_id: str | None = None, thread_id: str | None = None) -> Usage:
        """Totals of one run or of every run of one thread (exactly one must be given)."""

    @abstractmethod
    async def delete_thread(self, thread_id: str) -> None:
        """Forget the thread's runs and calls."""

    @abstractmethod
    async def close(self) -> None:
        """Dispose of the engine."""
