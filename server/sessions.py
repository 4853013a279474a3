"""Writing sessions: start, resume and inspect runs of the ``novel`` graph.

This is the application service shared by the CLI and (later) the HTTP API. A session id
is a UUID and is also the LangGraph thread id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from errors import BudgetExceeded, Conflict, InvalidInput, NotFound, ScribeError
from memory.app.port import ChapterRecord, NovelRecord
from memory.traces.port import Budget, ReplaySpec
from nodes.context import ScribeContext
from nodes.human import parse_chapter_decision, parse_outline_decision
from nodes.session import BookRequest
from nodes.state import NovelInput
from server.backends import Backends
from server.tracing import live_from_step, replay_agents

ProgressSink = Callable[[dict[str, Any]], None]
_COMMAND_KEYS = frozenset({"resume", "update", "goto"})
RECURSION_LIMIT = 100_000  # a step budget, not a loop guard: routing bounds every loop


@dataclass(frozen=True)
class Gate:
    """Where a paused session waits for its author, and what it shows them."""

    kind: Literal["outline", "chapter"]
    payload: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    """How a run ended: completed, paused at a gate, or stopped by its budget."""

    session_id: str
    status: str
    gate: Gate | None
    run_id: str = ""
    stop_reason: str | None = None


def parse_session_id(raw: str) -> str:
    """Normalise a session id; raises InvalidInput for anything but a UUID."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError as exc:
        raise InvalidInput(f"{raw!r} is not a session id (a UUID)", field="session") from exc


def parse_run_id(raw: str) -> str:
    """Normalise a run id; raises InvalidInput for anything but a UUID."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError as exc:
        raise InvalidInput(f"{raw!r} is not a run id (a UUID)", field="run") from exc


def thread_config(session_id: str) -> RunnableConfig:
    """The LangGraph config naming the session's thread."""
    return {"configurable": {"thread_id": session_id}, "recursion_limit": RECURSION_LIMIT}


class Sessions:
    """Start, resume and inspect writing sessions on open backends."""

    def __init__(self, backends: Backends) -> None:
        self._b = backends

    @staticmethod
    def new_id() -> str:
        """A fresh session id (also the thread id)."""
        return str(uuid.uuid4())

    async def start(
        self,
        request: BookRequest,
        on_progress: ProgressSink | None = None,
        *,
        session_id: str | None = None,
        budget: Budget | None = None,
    ) -> RunResult:
        """Create a session for ``request`` and run it until it ends, pauses or exhausts
        ``budget``."""
        session_id = session_id or self.new_id()
        await self._b.store.create_novel(
            session_id, request.premise, request.chapters, request.genre
        )
        inputs: NovelInput = {
            "premise": request.premise,
            "chapters": request.chapters,
            "genre": request.genre,
            "language": request.language,
            "pause_after": list(request.pause_after),
        }
        return await self._run(session_id, [(inputs, None)], on_progress, budget=budget)

    async def gate(self, session_id: str) -> Gate | None:
        """The gate the session waits at, if it is paused."""
        snapshot = await self._b.graph.aget_state(thread_config(session_id))
        for pending in snapshot.interrupts:
            value = pending.value
            if isinstance(value, dict) and value.get("gate") in ("outline", "chapter"):
                return Gate(value["gate"], value)
        return None

    async def resume(
        self,
        session_id: str,
        decision: dict[str, Any] | None,
        on_progress: ProgressSink | None = None,
        *,
        budget: Budget | None = None,
    ) -> RunResult:
        """Continue a session: answer its gate with ``decision``, or (with ``None``) carry on
        from the last checkpoint after a crash. Bad decisions change nothing."""
        record = await self._b.store.get_novel(session_id)
        if record.status == "completed":
            raise Conflict(f"session {session_id} is already completed", session=session_id)
        gate = await self.gate(session_id)
        if gate is not None:
            if decision is None:
                raise InvalidInput(
                    f"session {session_id} is paused at the {gate.kind}; "
                    "resume with --approve, --edit FILE or --revise NOTES"
                )
            if gate.kind == "outline":
                parse_outline_decision(decision)
            else:
                parse_chapter_decision(decision, gate.payload)
            return await self._run(
                session_id, [(None, {"resume": decision})], on_progress, budget=budget
            )
        if decision is not None:
            raise Conflict(
                f"session {session_id} is not paused at a gate; resume it without a decision"
            )
        snapshot = await self._b.graph.aget_state(thread_config(session_id))
        if not snapshot.next and snapshot.values.get("done"):
            await self._b.store.update_novel(session_id, status="completed")
            raise Conflict(f"session {session_id} is already completed", session=session_id)
        # No checkpoint yet (crashed before the first step): start again from the request.
        inputs: NovelInput | None = None
        if not snapshot.values:
            inputs = {"premise": record.premise, "chapters": record.chapters, "genre": record.genre}
        return await self._run(session_id, [(inputs, None)], on_progress, budget=budget)

    async def replay(
        self,
        source_run_id: str,
        *,
        recorded: Collection[str] | None = None,
        live: Collection[str] | None = None,
        from_checkpoint_id: str | None = None,
        on_progress: ProgressSink | None = None,
        session_id: str | None = None,
    ) -> RunResult:
        """Re-execute a recorded run on a new session (``session_id``, or a fresh one):
        answers of recorded agents (all by default) come from the records, the others from
        their configured model (from the step after ``from_checkpoint_id`` when given)."""
        tracing = self._b.tracing
        try:
            source = await tracing.store.get_run(parse_run_id(source_run_id))
        except NotFound as exc:
            raise NotFound("run", source_run_id, f"no recorded run {source_run_id}") from exc
        spec = ReplaySpec(
            source_run_id=source.run_id,
            recorded_agents=replay_agents(recorded, live),
            live_from_step=await live_from_step(
                self._b.checkpointer, source.thread_id, from_checkpoint_id
            ),
            from_checkpoint_id=from_checkpoint_id,
        )
        steps = await tracing.replay_steps(source.run_id)
        return await self._run(
            session_id or self.new_id(),
            [(step.input, step.command) for step in steps],
            on_progress,
            replay=spec,
        )

    async def _run(
        self,
        session_id: str,
        steps: Sequence[tuple[Any, dict[str, Any] | None]],
        on_progress: ProgressSink | None,
        *,
        budget: Budget | None = None,
        replay: ReplaySpec | None = None,
    ) -> RunResult:
        """One traced run: each (input, command) of ``steps`` in turn (several only for a
        replay, which re-executes a thread's runs)."""
        config = thread_config(session_id)
        run_id = str(uuid.uuid4())
        config["metadata"] = {"run_id": run_id, "thread_id": session_id}
        store = self._b.store
        tracing = self._b.tracing
        with suppress(NotFound):
            await store.update_novel(session_id, status="running")
        head = await self._b.graph.aget_state(thread_config(session_id))
        first_input, first_command = steps[0] if steps else (None, None)
        await tracing.begin(
            run_id=run_id,
            thread_id=session_id,
            owner_id=None,
            source="replay" if replay else "cli",
            input=first_input,
            command=first_command,
            start_checkpoint_id=(head.config.get("configurable") or {}).get("checkpoint_id")
            if head.values
            else None,
            budget=budget,
            replay=replay,
        )
        context = await tracing.context_for(self._b.context, replay)
        try:
            for graph_input, command in steps:
                await self._stream(graph_input, command, config, context, on_progress)
        except BudgetExceeded as exc:
            await tracing.end(run_id, "budget_exceeded", exc.message)
            with suppress(NotFound):
                await store.update_novel(session_id, status="paused")
            return RunResult(session_id, "stopped", None, run_id, exc.message)
        except BaseException as exc:
            reason = exc.message if isinstance(exc, ScribeError) else f"{type(exc).__name__}: {exc}"
            await tracing.end(run_id, "error", reason)
            if isinstance(exc, Exception):
                with suppress(NotFound):
                    await store.update_novel(session_id, status="failed", error=reason)
            raise
        gate = await self.gate(session_id)
        if gate is not None:
            await tracing.end(run_id, "interrupted", f"paused at the {gate.kind}")
            await store.update_novel(session_id, status="paused")
            return RunResult(session_id, "paused", gate, run_id)
        await tracing.end(run_id, "success")
        record = await store.get_novel(session_id)
        return RunResult(session_id, record.status, None, run_id)

    async def _stream(
        self,
        graph_input: Any,
        command: dict[str, Any] | None,
        config: RunnableConfig,
        context: ScribeContext,
        on_progress: ProgressSink | None,
    ) -> None:
        payload: NovelInput | Command[Any] | None = graph_input
        if command is not None:
            payload = Command(**{k: v for k, v in command.items() if k in _COMMAND_KEYS})
        async for chunk in self._b.graph.astream(
            payload,
            config,
            context=context,
            stream_mode="custom",
            durability="sync",
        ):
            if on_progress is not None and isinstance(chunk, dict):
                on_progress(chunk)

    async def list_sessions(self) -> list[NovelRecord]:
        """Every session, newest first."""
        return await self._b.store.list_novels()

    async def book(
        self, session_id: str
    ) -> tuple[NovelRecord, dict[str, Any], list[ChapterRecord]]:
        """The session, its story bible and its accepted chapters."""
        record = await self._b.store.get_novel(session_id)
        snapshot = await self._b.graph.aget_state(thread_config(session_id))
        bible: dict[str, Any] = snapshot.values.get("bible", {}) if snapshot.values else {}
        chapters = await self._b.store.list_chapters(session_id)
        return record, bible, chapters

    async def require(self, session_id: str) -> NovelRecord:
        """The session record; NotFound names the id."""
        try:
            return await self._b.store.get_novel(session_id)
        except NotFound as exc:
            raise NotFound("session", session_id, f"no session {session_id}") from exc
