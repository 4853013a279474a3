"""Reading traces: a run as JSON Lines, and two runs compared chapter by chapter.

Shared by ``scribe trace`` / ``scribe compare`` and the ``/api/v1/runs`` routes. Owner
checks are the caller's job (the API checks the thread's owner first).

A trace is one JSON object per line (the JSON Schema of a line is
:data:`TRACE_LINE_SCHEMA`, draft 2020-12):

- ``{"type": "run", ...}``, first and once: run_id, thread_id, owner_id, source,
  sequence, status, stop_reason, input, command, start_checkpoint_id, budget, replay,
  created_at, finished_at, and usage (:meth:`~memory.traces.port.Usage.to_json`).
- ``{"type": "step", ...}``: one per node step of the run, in step order: step, node,
  task_id, checkpoint_id (the checkpoint the step started from), next_checkpoint_id (the
  one its writes produced; null when it failed or paused), status (``done``, ``error`` or
  ``interrupted``), update (the node's state update), error and interrupts.
- ``{"type": "call", ...}``: one per model call, right after its step's line: every field
  of :class:`~memory.traces.port.ModelCall` (messages, answer, structured, tool_calls,
  tokens, latency_ms, cost_usd, model, settings, ...). A call no step explains (its
  checkpoints were deleted) still gets its line, after the steps.

Steps come from LangGraph's checkpoint history of the run's thread. A step belongs to the
run that completed it: the run named in the metadata of the checkpoint its writes
produced (CLI and API runs both put ``run_id`` in the config metadata, and LangGraph
copies it into every checkpoint it writes). A step that failed or paused belongs to the
run that wrote or started from its checkpoint; when a later run completes it, it shows in
both traces, as attempted in the first and done in the second.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import PregelTask, StateSnapshot

from memory.app.port import ChapterRecord
from memory.traces.port import AgentUsage, ModelCall, TracedRun, Usage
from server.backends import Backends
from server.runs.serde import error_text, interrupt_json, jsonable

StepStatus = Literal["done", "error", "interrupted"]

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_STRING: dict[str, Any] = {"type": "string"}
_INTEGER: dict[str, Any] = {"type": "integer"}
_NUMBER: dict[str, Any] = {"type": "number", "minimum": 0}
_DATE_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_OBJECT: dict[str, Any] = {"type": "object"}
_ANY: dict[str, Any] = {}

_USAGE_TOTALS: dict[str, Any] = {
    "calls": {"type": "integer", "minimum": 0},
    "input_tokens": {"type": "integer", "minimum": 0},
    "output_tokens": {"type": "integer", "minimum": 0},
    "total_tokens": {"type": "integer", "minimum": 0},
    "cost_usd": _NUMBER,
    "model_time_ms": _NUMBER,
}

_RUN_LINE: dict[str, Any] = {
    "type": "object",
    "description": "The run: what it was asked to do, how it ended, and what it used.",
    "properties": {
        "type": {"const": "run"},
        "run_id": _STRING,
        "thread_id": _STRING,
        "owner_id": _NULLABLE_STRING,
        "source": {"enum": ["api", "cli", "replay"]},
        "sequence": {"type": "integer", "minimum": 1},
        "status": {"enum": ["running", "success", "interrupted", "error", "budget_exceeded"]},
        "stop_reason": _NULLABLE_STRING,
        "input": _ANY,
        "command": {"type": ["object", "null"]},
        "start_checkpoint_id": _NULLABLE_STRING,
        "budget": {
            "type": "object",
            "properties": {
                "max_tokens": {"type": ["integer", "null"]},
                "max_cost_usd": {"type": ["number", "null"]},
            },
            "required": ["max_tokens", "max_cost_usd"],
            "additionalProperties": False,
        },
        "replay": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {
                        "source_run_id": _STRING,
                        "recorded_agents": {"type": "array", "items": _STRING},
                        "live_from_step": {"type": ["integer", "null"]},
                        "from_checkpoint_id": _NULLABLE_STRING,
                    },
                    "required": [
                        "source_run_id",
                        "recorded_agents",
                        "live_from_step",
                        "from_checkpoint_id",
                    ],
                    "additionalProperties": False,
                },
            ]
        },
        "created_at": _DATE_TIME,
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "usage": {
            "type": "object",
            "properties": {
                **_USAGE_TOTALS,
                "agents": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": _USAGE_TOTALS,
                        "required": sorted(_USAGE_TOTALS),
                        "additionalProperties": False,
                    },
                },
            },
            "required": [*sorted(_USAGE_TOTALS), "agents"],
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_RUN_LINE["required"] = sorted(_RUN_LINE["properties"])

_STEP_LINE: dict[str, Any] = {
    "type": "object",
    "description": "One node step of the run, with the checkpoint it started from.",
    "properties": {
        "type": {"const": "step"},
        "run_id": _STRING,
        "step": {"type": "integer", "minimum": 0},
        "node": _STRING,
        "task_id": _STRING,
        "checkpoint_id": _STRING,
        "next_checkpoint_id": _NULLABLE_STRING,
        "status": {"enum": ["done", "error", "interrupted"]},
        "update": {
            "type": ["object", "null"],
            "description": "The node's state update (null unless the step is done).",
        },
        "error": _NULLABLE_STRING,
        "interrupts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"value": _ANY, "id": _STRING},
                "required": ["value", "id"],
            },
        },
    },
    "additionalProperties": False,
}
_STEP_LINE["required"] = sorted(_STEP_LINE["properties"])

_MESSAGE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "role": _STRING,
        "content": {"type": ["string", "array"]},
    },
    "required": ["role", "content"],
}

_CALL_LINE: dict[str, Any] = {
    "type": "object",
    "description": "One logical model call (after retries) made during a node step.",
    "properties": {
        "type": {"const": "call"},
        "call_id": _STRING,
        "run_id": _STRING,
        "thread_id": _STRING,
        "checkpoint_id": _NULLABLE_STRING,
        "task_id": _NULLABLE_STRING,
        "node": _STRING,
        "step": _INTEGER,
        "chapter": {"type": "integer", "minimum": 0},
        "index": {"type": "integer", "minimum": 0},
        "agent": _STRING,
        "task": _STRING,
        "repair": {"type": "boolean"},
        "model": _STRING,
        "settings": _OBJECT,
        "messages": {"type": "array", "items": _MESSAGE},
        "answer": _STRING,
        "tool_calls": {"type": "array", "items": _OBJECT},
        "input_tokens": {"type": "integer", "minimum": 0},
        "output_tokens": {"type": "integer", "minimum": 0},
        "latency_ms": _NUMBER,
        "cost_usd": {"type": ["number", "null"], "minimum": 0},
        "attempts": {"type": "integer", "minimum": 0},
        "error": _NULLABLE_STRING,
        "started_at": _DATE_TIME,
        "replayed_from": _NULLABLE_STRING,
        "structured": {"type": ["object", "null"]},
    },
    "additionalProperties": False,
}
_CALL_LINE["required"] = sorted(_CALL_LINE["properties"])

TRACE_LINE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://infinitescribe.invalid/schemas/trace-line.json",
    "title": "InfiniteScribe trace line",
    "description": "One line of a run's JSON Lines trace: a run, a node step or a model call.",
    "oneOf": [{"$ref": "#/$defs/run"}, {"$ref": "#/$defs/step"}, {"$ref": "#/$defs/call"}],
    "$defs": {"run": _RUN_LINE, "step": _STEP_LINE, "call": _CALL_LINE},
}
"""The JSON Schema (draft 2020-12) of one line of :func:`trace_lines`."""


# --- steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceStep:
    """One node step of a run, from the thread's checkpoint history."""

    step: int
    """LangGraph's step number (the checkpoint it started from has ``step - 1``)."""
    node: str
    task_id: str
    checkpoint_id: str
    next_checkpoint_id: str | None
    status: StepStatus
    update: dict[str, Any] | None
    error: str | None
    interrupts: tuple[dict[str, Any], ...]

    def to_json(self, run_id: str) -> dict[str, Any]:
        """The step's trace line."""
        return {
            "type": "step",
            "run_id": run_id,
            "step": self.step,
            "node": self.node,
            "task_id": self.task_id,
            "checkpoint_id": self.checkpoint_id,
            "next_checkpoint_id": self.next_checkpoint_id,
            "status": self.status,
            "update": self.update,
            "error": self.error,
            "interrupts": list(self.interrupts),
        }


def _checkpoint_id(config: RunnableConfig | None) -> str | None:
    if not config:
        return None
    value = (config.get("configurable") or {}).get("checkpoint_id")
    return str(value) if value else None


def _run_of(snapshot: StateSnapshot) -> str | None:
    value = (snapshot.metadata or {}).get("run_id")
    return str(value) if value else None


async def run_steps(backends: Backends, run: TracedRun) -> list[TraceStep]:
    """The node steps of ``run``, oldest first (see the module docstring for the rule)."""
    config: RunnableConfig = {"configurable": {"thread_id": run.thread_id}}
    history = [snapshot async for snapshot in backends.graph.aget_state_history(config)]
    history.reverse()
    children: dict[str, list[StateSnapshot]] = defaultdict(list)
    for snapshot in history:
        parent = _checkpoint_id(snapshot.parent_config)
        if parent is not None:
            children[parent].append(snapshot)
    steps: list[TraceStep] = []
    for snapshot in history:
        checkpoint_id = _checkpoint_id(snapshot.config)
        if checkpoint_id is None:
            continue
        # Checkpoints written by state updates or forks do not run the parent's tasks.
        ran = [
            c for c in children.get(checkpoint_id, []) if (c.metadata or {}).get("source") == "loop"
        ]
        completed_by = next((c for c in ran if _run_of(c) == run.run_id), None)
        attempted = _run_of(snapshot) == run.run_id or run.start_checkpoint_id == checkpoint_id
        raw_step = (snapshot.metadata or {}).get("step")
        number = int(raw_step) + 1 if isinstance(raw_step, int) else 0
        for task in snapshot.tasks:
            if task.name.startswith("__"):
                continue  # __start__ carries the input, already on the run line
            step = _step_of(task, number, checkpoint_id, completed_by, attempted)
            if step is not None:
                steps.append(step)
    return steps


def _step_of(
    task: PregelTask,
    number: int,
    checkpoint_id: str,
    completed_by: StateSnapshot | None,
    attempted: bool,
) -> TraceStep | None:
    """The trace step of one task of a checkpoint, or ``None`` if not this run's."""
    interrupts = tuple(interrupt_json(i) for i in task.interrupts)
    if completed_by is not None and task.result is not None:
        update = jsonable(task.result)
        return TraceStep(
            step=number,
            node=task.name,
            task_id=task.id,
            checkpoint_id=checkpoint_id,
            next_checkpoint_id=_checkpoint_id(completed_by.config),
            status="done",
            update=update if isinstance(update, dict) else {"value": update},
            error=None,
            interrupts=interrupts,
        )
    if not attempted or completed_by is not None:
        return None
    if task.error is not None:
        error = task.error
        text = error_text(error) if isinstance(error, BaseException) else str(error)
        return TraceStep(number, task.name, task.id, checkpoint_id, None, "error", None, text, ())
    if interrupts:
        return TraceStep(
            number, task.name, task.id, checkpoint_id, None, "interrupted", None, None, interrupts
        )
    return None


# --- lines ------------------------------------------------------------------------------


def run_line(run: TracedRun, usage: Usage) -> dict[str, Any]:
    """The first line of a trace: the run and its usage."""
    return {
        "type": "run",
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "owner_id": run.owner_id,
        "source": run.source,
        "sequence": run.sequence,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "input": jsonable(run.input),
        "command": jsonable(run.command),
        "start_checkpoint_id": run.start_checkpoint_id,
        "budget": run.budget.to_json(),
        "replay": run.replay.to_json() if run.replay is not None else None,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at is not None else None,
        "usage": usage.to_json(),
    }


def call_line(call: ModelCall) -> dict[str, Any]:
    """A model call's trace line: every field of :class:`ModelCall`."""
    line: dict[str, Any] = {"type": "call"}
    for item in dataclasses.fields(call):
        line[item.name] = jsonable(getattr(call, item.name))
    return line


async def trace_lines(backends: Backends, run_id: str) -> AsyncIterator[dict[str, Any]]:
    """The run as trace lines: the run, then each step followed by its calls.

    Raises :class:`~errors.NotFound` for an unknown run (before the first line).
    """
    store = backends.tracing.store
    run = await store.get_run(run_id)
    usage = await store.usage(run_id=run.run_id)
    calls = await store.calls(run.run_id)
    steps = await run_steps(backends, run)
    yield run_line(run, usage)
    by_task: dict[str, list[ModelCall]] = defaultdict(list)
    by_step: dict[tuple[int, str], list[ModelCall]] = defaultdict(list)
    for call in calls:
        if call.task_id:
            by_task[call.task_id].append(call)
        else:
            by_step[(call.step, call.node)].append(call)
    for step in steps:
        yield step.to_json(run.run_id)
        for call in [*by_task.pop(step.task_id, []), *by_step.pop((step.step, step.node), [])]:
            yield call_line(call)
    # Calls whose step the checkpoints no longer show are still part of the record.
    left = sorted(
        [c for group in (*by_task.values(), *by_step.values()) for c in group],
        key=lambda c: (c.step, c.index, c.started_at),
    )
    for call in left:
        yield call_line(call)


# --- comparison -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewVerdict:
    """One reviewer verdict (its structured answer), as a run recorded it."""

    chapter: int
    round: int
    """1 for the review of the chapter's first draft, 2 for the next, ..."""
    step: int
    scores: dict[str, int]
    issues: tuple[dict[str, Any], ...]
    summary: str
    replayed: bool
    """Whether the answer came from a recorded run rather than a model."""

    @property
    def lowest(self) -> int | None:
        """The weakest score, or ``None`` without scores."""
        return min(self.scores.values()) if self.scores else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "chapter": self.chapter,
            "round": self.round,
            "step": self.step,
            "scores": dict(self.scores),
            "lowest": self.lowest,
            "issues": list(self.issues),
            "summary": self.summary,
            "replayed": self.replayed,
        }


@dataclass(frozen=True)
class ChapterComparison:
    """One chapter of two runs: the texts' diff and the reviewer's verdicts."""

    number: int
    title_a: str | None
    title_b: str | None
    words_a: int | None
    """Words of the accepted text; ``None`` when run A's session has no such chapter."""
    words_b: int | None
    identical: bool
    diff: str
    """Unified diff of the accepted texts (lines are paragraphs); empty when identical."""
    verdicts_a: tuple[ReviewVerdict, ...]
    verdicts_b: tuple[ReviewVerdict, ...]

    @property
    def last_a(self) -> ReviewVerdict | None:
        """Run A's last verdict of the chapter (the one its decision rested on)."""
        return self.verdicts_a[-1] if self.verdicts_a else None

    @property
    def last_b(self) -> ReviewVerdict | None:
        """Run B's last verdict of the chapter."""
        return self.verdicts_b[-1] if self.verdicts_b else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        last_a, last_b = self.last_a, self.last_b
        return {
            "number": self.number,
            "title": {"a": self.title_a, "b": self.title_b},
            "words": {"a": self.words_a, "b": self.words_b},
            "identical": self.identical,
            "diff": self.diff,
            "verdict": {
                "a": last_a.to_json() if last_a else None,
                "b": last_b.to_json() if last_b else None,
            },
            "verdicts": {
                "a": [v.to_json() for v in self.verdicts_a],
                "b": [v.to_json() for v in self.verdicts_b],
            },
        }


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side: per chapter and per agent."""

    run_a: TracedRun
    run_b: TracedRun
    usage_a: Usage
    usage_b: Usage
    chapters: tuple[ChapterComparison, ...]

    @property
    def differing_chapters(self) -> list[int]:
        """Numbers of the chapters whose texts differ (or exist in one run only)."""
        return [c.number for c in self.chapters if not c.identical]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the API's answer and ``scribe compare --json``)."""
        return {
            "runs": {"a": _run_summary(self.run_a), "b": _run_summary(self.run_b)},
            "identical_texts": not self.differing_chapters,
            "differing_chapters": self.differing_chapters,
            "chapters": [c.to_json() for c in self.chapters],
            "usage": {"a": self.usage_a.to_json(), "b": self.usage_b.to_json()},
        }


def _run_summary(run: TracedRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "source": run.source,
        "status": run.status,
        "stop_reason": run.stop_reason,
        "replay": run.replay.to_json() if run.replay is not None else None,
    }


def review_verdicts(calls: Iterable[ModelCall]) -> dict[int, list[ReviewVerdict]]:
    """Per chapter, the reviewer's verdicts in order: one per reviewer step, from the last
    call of the step that parsed (a repair answer supersedes the broken one)."""
    last: dict[tuple[int, str], ModelCall] = {}
    for call in sorted(calls, key=lambda c: (c.step, c.index)):
        if call.agent != "reviewer" or call.error is not None or call.structured is None:
            continue
        last[(call.step, call.task_id or call.node)] = call
    verdicts: dict[int, list[ReviewVerdict]] = defaultdict(list)
    for call in sorted(last.values(), key=lambda c: c.step):
        answer = call.structured or {}
        raw_scores = answer.get("scores")
        scores = (
            {str(k): int(v) for k, v in raw_scores.items() if isinstance(v, int | float)}
            if isinstance(raw_scores, dict)
            else {}
        )
        raw_issues = answer.get("issues")
        issues = (
            tuple(i for i in raw_issues if isinstance(i, dict))
            if isinstance(raw_issues, list)
            else ()
        )
        found = verdicts[call.chapter]
        found.append(
            ReviewVerdict(
                chapter=call.chapter,
                round=len(found) + 1,
                step=call.step,
                scores=scores,
                issues=issues,
                summary=str(answer.get("summary") or ""),
                replayed=call.replayed_from is not None,
            )
        )
    return dict(verdicts)


def text_diff(number: int, a: str | None, b: str | None) -> str:
    """The unified diff of two chapter texts (``None``: the chapter is missing)."""
    lines = difflib.unified_diff(
        (a or "").splitlines(),
        (b or "").splitlines(),
        fromfile=f"a/chapter-{number}" if a is not None else "/dev/null",
        tofile=f"b/chapter-{number}" if b is not None else "/dev/null",
        lineterm="",
    )
    return "\n".join(lines)


def compare_chapters(
    chapters_a: Sequence[ChapterRecord],
    chapters_b: Sequence[ChapterRecord],
    verdicts_a: dict[int, list[ReviewVerdict]],
    verdicts_b: dict[int, list[ReviewVerdict]],
) -> tuple[ChapterComparison, ...]:
    """Every chapter either side accepted or reviewed, compared."""
    by_a = {c.number: c for c in chapters_a}
    by_b = {c.number: c for c in chapters_b}
    numbers = sorted(set(by_a) | set(by_b) | set(verdicts_a) | set(verdicts_b))
    out: list[ChapterComparison] = []
    for number in numbers:
        a, b = by_a.get(number), by_b.get(number)
        text_a = a.text if a else None
        text_b = b.text if b else None
        identical = text_a is not None and text_a == text_b
        out.append(
            ChapterComparison(
                number=number,
                title_a=a.title if a else None,
                title_b=b.title if b else None,
                words_a=a.word_count if a else None,
                words_b=b.word_count if b else None,
                identical=identical,
                diff="" if identical else text_diff(number, text_a, text_b),
                verdicts_a=tuple(verdicts_a.get(number, ())),
                verdicts_b=tuple(verdicts_b.get(number, ())),
            )
        )
    return tuple(out)


async def compare_runs(backends: Backends, run_a: str, run_b: str) -> RunComparison:
    """Compare two recorded runs. Chapters are the accepted texts of each run's session as
    they stand now; verdicts and usage are each run's own. NotFound for an unknown run."""
    store = backends.tracing.store
    first = await store.get_run(run_a)
    second = await store.get_run(run_b)
    calls_a = await store.calls(first.run_id)
    calls_b = await store.calls(second.run_id)
    return RunComparison(
        run_a=first,
        run_b=second,
        usage_a=await store.usage(run_id=first.run_id),
        usage_b=await store.usage(run_id=second.run_id),
        chapters=compare_chapters(
            await backends.store.list_chapters(first.thread_id),
            await backends.store.list_chapters(second.thread_id),
            review_verdicts(calls_a),
            review_verdicts(calls_b),
        ),
    )


# --- rendering --------------------------------------------------------------------------

_DIFF_LINES = 120
"""Diff lines shown per chapter on a terminal (``--json`` has them all)."""


def render_comparison(c: RunComparison, *, diff_lines: int = _DIFF_LINES) -> str:
    """The comparison as readable text for a terminal."""
    out: list[str] = []
    for label, run in (("A", c.run_a), ("B", c.run_b)):
        origin: str = run.source
        if run.replay is not None:
            origin = f"replay of {run.replay.source_run_id}"
            if run.replay.recorded_agents:
                origin += f", recorded: {', '.join(run.replay.recorded_agents)}"
        out.append(f"{label}: run {run.run_id}  {run.status}  ({origin})  session {run.thread_id}")
    differing = c.differing_chapters
    out.append(
        "texts: all identical"
        if not differing
        else "texts differ in chapter(s) " + ", ".join(str(n) for n in differing)
    )
    for chapter in c.chapters:
        out.append("")
        out.extend(_render_chapter(chapter, diff_lines))
    out.append("")
    out.extend(_render_usage(c.usage_a, c.usage_b))
    return "\n".join(out) + "\n"


def _render_chapter(chapter: ChapterComparison, diff_lines: int) -> list[str]:
    title = chapter.title_a or chapter.title_b or ""
    lines = [f"== Chapter {chapter.number}: {title}" if title else f"== Chapter {chapter.number}"]
    if chapter.identical:
        lines.append(f"text: identical ({chapter.words_a} words)")
    else:
        words = f"A {_or_missing(chapter.words_a)}, B {_or_missing(chapter.words_b)}"
        lines.append(f"text: differs ({words})")
        diff = chapter.diff.splitlines()
        lines.extend("  " + line for line in diff[:diff_lines])
        if len(diff) > diff_lines:
            lines.append(f"  ... {len(diff) - diff_lines} more diff lines (see --json)")
    rounds = max(len(chapter.verdicts_a), len(chapter.verdicts_b))
    if rounds:
        lines.append(f"reviewer   {'A':<44} B")
    for n in range(rounds):
        a = chapter.verdicts_a[n] if n < len(chapter.verdicts_a) else None
        b = chapter.verdicts_b[n] if n < len(chapter.verdicts_b) else None
        lines.append(f"  round {n + 1}  {_scores(a):<44} {_scores(b)}")
    for label, verdict in (("A", chapter.last_a), ("B", chapter.last_b)):
        if verdict is None:
            continue
        lines.append(f"issues {label} (last verdict): {len(verdict.issues) or 'none'}")
        for issue in verdict.issues:
            severity = issue.get("severity", "?")
            category = issue.get("category", "?")
            lines.append(f"  [{severity}] {category}: {issue.get('problem', '')}")
    return lines


def _or_missing(words: int | None) -> str:
    return "missing" if words is None else f"{words} words"


def _scores(verdict: ReviewVerdict | None) -> str:
    if verdict is None:
        return "-"
    parts = " ".join(f"{k[:4]} {v}" for k, v in verdict.scores.items())
    return f"low {verdict.lowest} | {parts}"


_Totals = AgentUsage | Usage


def _render_usage(a: Usage, b: Usage) -> list[str]:
    agents = [x.agent for x in a.agents]
    agents += [x.agent for x in b.agents if x.agent not in agents]
    by_a = {x.agent: x for x in a.agents}
    by_b = {x.agent: x for x in b.agents}
    header = (
        f"{'agent':<11}{'calls A/B':>12}{'tokens A':>11}{'tokens B':>11}"
        f"{'cost A':>11}{'cost B':>11}{'time A':>9}{'time B':>9}"
    )
    lines = ["usage per agent", header]
    rows: list[tuple[str, _Totals | None, _Totals | None]] = [
        (name, by_a.get(name), by_b.get(name)) for name in agents
    ]
    rows.append(("total", a, b))
    for name, x, y in rows:
        calls = f"{_n(x, 'calls')}/{_n(y, 'calls')}"
        lines.append(
            f"{name:<11}{calls:>12}{_n(x, 'total_tokens'):>11}{_n(y, 'total_tokens'):>11}"
            f"{_cost(x):>11}{_cost(y):>11}{_secs(x):>9}{_secs(y):>9}"
        )
    return lines


def _n(usage: _Totals | None, name: str) -> str:
    return "-" if usage is None else f"{int(getattr(usage, name)):,}"


def _cost(usage: _Totals | None) -> str:
    return "-" if usage is None else f"${usage.cost_usd:.4f}"


def _secs(usage: _Totals | None) -> str:
    return "-" if usage is None else f"{usage.latency_ms / 1000:.1f}s"
