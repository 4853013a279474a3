"""Run tracing shared by the run workers and the CLI: register runs, seed budgets, and
build the context of a replay.

A replay of run R re-executes, on a new thread, every run of R's thread up to R, each
with its own input or gate answer, answering model calls from the records of those runs
(:mod:`nodes.llm.replay`). Agents named live use their configured model instead, from
the first step (or, replaying from a checkpoint, from the step after it: earlier steps
are answered from records, so the new thread reaches that checkpoint's state exactly).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from errors import InvalidInput, NotFound
from memory.traces.port import (
    Budget,
    ModelCall,
    ReplaySpec,
    RunSource,
    TracedRun,
    TracedRunStatus,
    TraceStore,
)
from memory.traces.recorder import TraceRecorder
from nodes.context import ScribeContext
from nodes.llm.replay import RecordedAnswers, ReplayRouter
from nodes.llm.trace import CallKey
from nodes.schemas import AGENTS


@dataclass(frozen=True)
class ReplayStep:
    """One run of the source thread, as the replay re-executes it."""

    source_run_id: str
    input: Any
    command: dict[str, Any] | None


@dataclass(frozen=True)
class RunTracing:
    """The trace store and this process's recorder."""

    store: TraceStore
    recorder: TraceRecorder

    async def begin(
        self,
        *,
        run_id: str,
        thread_id: str,
        owner_id: str | None,
        source: RunSource,
        input: Any,
        command: dict[str, Any] | None,
        start_checkpoint_id: str | None,
        budget: Budget | None = None,
        replay: ReplaySpec | None = None,
    ) -> TracedRun:
        """Register the run (again, when reclaimed) and start guarding its budget with
        what its earlier attempts already spent."""
        run = await self.store.start_run(
            run_id=run_id,
            thread_id=thread_id,
            owner_id=owner_id,
            source=source,
            input=input,
            command=command,
            start_checkpoint_id=start_checkpoint_id,
            budget=budget or Budget(),
            replay=replay,
        )
        spent = await self.store.usage(run_id=run_id)
        self.recorder.begin_run(run_id, run.budget, spent)
        return run

    async def end(
        self, run_id: str, status: TracedRunStatus, stop_reason: str | None = None
    ) -> None:
        """Write the run's calls and how it ended."""
        self.recorder.end_run(run_id)
        await self.recorder.flush()
        await self.store.finish_run(run_id, status, stop_reason)

    async def replay_steps(self, source_run_id: str) -> list[ReplayStep]:
        """The runs a replay of ``source_run_id`` re-executes, in order."""
        lineage = await self._lineage(source_run_id)
        return [ReplayStep(r.run_id, r.input, r.command) for r in lineage]

    async def context_for(
        self,
        base: ScribeContext,
        spec: ReplaySpec | None,
        *,
        resumed_run_id: str | None = None,
        head_checkpoint_id: str | None = None,
    ) -> ScribeContext:
        """``base`` itself, or for a replay a context whose models answer from records.

        A replay taken over after its worker died (``resumed_run_id``) skips the answers
        its earlier attempt already used in steps that are checkpointed (all but the one
        starting from ``head_checkpoint_id``, which is executed again).
        """
        if spec is None:
            return base
        calls: list[ModelCall] = []
        for run in await self._lineage(spec.source_run_id):
            calls.extend(await self.store.calls(run.run_id))
        answers = RecordedAnswers(calls, spec.source_run_id)
        if resumed_run_id is not None:
            for used in await self.store.calls(resumed_run_id):
                if used.replayed_from and used.checkpoint_id != head_checkpoint_id:
                    answers.skip(CallKey(used.agent, used.node, used.chapter, used.index))
        router = ReplayRouter(answers, spec.recorded_agents, spec.live_from_step)
        return replace(base, models=base.models.with_tracing(router=router))

    async def _lineage(self, source_run_id: str) -> list[TracedRun]:
        source = await self.store.get_run(source_run_id)
        runs = await self.store.thread_runs(source.thread_id)
        return [r for r in runs if r.sequence <= source.sequence]


def replay_agents(
    recorded: Collection[str] | None = None, live: Collection[str] | None = None
) -> tuple[str, ...]:
    """The agents answered from records: all by default, ``recorded`` if given, minus
    ``live``. Unknown agent names are refused."""
    for name in [*(recorded or ()), *(live or ())]:
        if name not in AGENTS:
            raise InvalidInput(
                f"unknown agent {name!r}; agents are {', '.join(AGENTS)}", field="agents"
            )
    chosen = list(recorded) if recorded else list(AGENTS)
    return tuple(a for a in AGENTS if a in chosen and a not in set(live or ()))


async def live_from_step(
    checkpointer: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str | None
) -> int | None:
    """The first step after ``checkpoint_id`` of the source thread (None: no checkpoint)."""
    if not checkpoint_id:
        return None
    found = await checkpointer.aget_tuple(
        {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": "",
                "checkpoint_id": checkpoint_id,
            }
        }
    )
    if found is None:
        raise NotFound("checkpoint", checkpoint_id)
    step = (found.metadata or {}).get("step")
    return int(step) + 1 if isinstance(step, int) else 0


def budget_of(data: dict[str, Any] | None) -> Budget:
    """A budget from ``{"max_tokens": int, "max_cost_usd": float}``; InvalidInput for
    anything else."""
    if data is None:
        return Budget()
    if not isinstance(data, dict):
        raise InvalidInput("budget must be an object {max_tokens, max_cost_usd}", field="budget")
    extra = set(data) - {"max_tokens", "max_cost_usd"}
    if extra:
        raise InvalidInput(f"budget.{sorted(extra)[0]} is not a budget field", field="budget")
    tokens, cost = data.get("max_tokens"), data.get("max_cost_usd")
    if tokens is not None and (
        isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1
    ):
        raise InvalidInput("budget.max_tokens must be a positive integer", field="budget")
    if cost is not None and (
        isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost <= 0
    ):
        raise InvalidInput("budget.max_cost_usd must be a positive number", field="budget")
    return Budget(max_tokens=tokens, max_cost_usd=float(cost) if cost is not None else None)
