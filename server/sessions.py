"""Writing sessions, the CLI's view of novels: start, resume, replay and inspect them.

A session id is a UUID: the novel's id and its thread's. Its runs are queued and executed
through the run service like the API's (:mod:`server.runs`), in the CLI's own process.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig

from errors import BudgetExceeded, Conflict, InvalidInput, NotFound, RunFailed
from memory.app.port import ChapterRecord, NovelRecord
from memory.runs.events import RunEvent
from memory.runs.models import RunKwargs
from memory.traces.port import Budget
from nodes.human import parse_chapter_decision, parse_outline_decision
from nodes.session import BookRequest
from server.backends import Backends
from server.runs.engine import LOCAL_OWNER, RECURSION_LIMIT
from server.runs.service import ASSISTANT_ID, Executed, RunRequest, RunService
from server.runs.worker import record_novel_status

ProgressSink = Callable[[dict[str, Any]], None]
STREAM = ("custom",)
"""What the CLI follows of a run: the nodes' progress events."""


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
    """Start, resume and inspect writing sessions: the CLI's application service.

    A session's runs go through the run service and execute with the workers' code, in
    this process (:meth:`RunService.execute`), exactly as the API's runs do: one executor.
    """

    def __init__(self, backends: Backends, runs: RunService | None = None) -> None:
        self._b = backends
        self._runs = runs

    @staticmethod
    def new_id() -> str:
        """A fresh session id (also the thread id)."""
        return str(uuid.uuid4())

    @asynccontextmanager
    async def _service(self) -> AsyncIterator[RunService]:
        """The run service: the one given, or one opened on the backends for this call
        (its queue in the same database, its events in this process)."""
        if self._runs is not None:
            yield self._runs
            return
        async with AsyncExitStack() as stack:
            yield await RunService.open(self._b.settings, self._b, None, stack)

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
        return await self._execute(session_id, _kwargs(budget), on_progress, book=request)

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
        from the last checkpoint after a crash or Ctrl-C. Bad decisions change nothing."""
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
            return await self._execute(
                session_id, _kwargs(budget, command={"resume": decision}), on_progress
            )
        if decision is not None:
            raise Conflict(
                f"session {session_id} is not paused at a gate; resume it without a decision"
            )
        snapshot = await self._b.graph.aget_state(thread_config(session_id))
        if not snapshot.next and snapshot.values.get("done"):
            await record_novel_status(self._b.store, session_id, "completed")
            raise Conflict(f"session {session_id} is already completed", session=session_id)
        # A run stopped by Ctrl-C, or whose process died, is taken up where it stopped.
        async with self._service() as runs:
            try:
                unfinished = await runs.resume_here(LOCAL_OWNER, session_id, _progress(on_progress))
            except NotFound:
                unfinished = None  # a session from before runs were queued: no thread row
        if unfinished is not None:
            return await self._result(session_id, unfinished)
        # No checkpoint yet (crashed before the first step): start again from the request.
        inputs: dict[str, Any] | None = None
        if not snapshot.values:
            inputs = {"premise": record.premise, "chapters": record.chapters, "genre": record.genre}
        return await self._execute(session_id, _kwargs(budget, input=inputs), on_progress)

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
        try:
            source = await self._b.tracing.store.get_run(parse_run_id(source_run_id))
        except NotFound as exc:
            raise NotFound("run", source_run_id, f"no recorded run {source_run_id}") from exc
        async with self._service() as runs:
            thread_id, request = await runs.replay_request(
                LOCAL_OWNER,
                source,
                recorded=recorded,
                live=live,
                from_checkpoint_id=from_checkpoint_id,
                stream_mode=STREAM,
                thread_id=session_id or self.new_id(),
            )
            executed = await runs.execute(
                LOCAL_OWNER,
                thread_id,
                replace(request, multitask_strategy="reject"),
                _progress(on_progress),
            )
        return await self._result(thread_id, executed)

    async def _execute(
        self,
        session_id: str,
        kwargs: RunKwargs,
        on_progress: ProgressSink | None,
        *,
        book: BookRequest | None = None,
    ) -> RunResult:
        """One run of the session, queued and executed here."""
        request = RunRequest(
            assistant_id=ASSISTANT_ID,
            kwargs=kwargs,
            metadata={},
            multitask_strategy="reject",
            if_not_exists="create",
            book=book,
        )
        async with self._service() as runs:
            executed = await runs.execute(LOCAL_OWNER, session_id, request, _progress(on_progress))
        return await self._result(session_id, executed)

    async def _result(self, session_id: str, executed: Executed) -> RunResult:
        """How the run ended, for the CLI; the graph's own error is raised as it was."""
        run, error = executed.run, executed.error
        if isinstance(error, BudgetExceeded):
            return RunResult(session_id, "stopped", None, run.run_id, error.message)
        if error is not None:
            raise error
        if run.status in ("error", "timeout"):
            _, _, message = (run.error or "RunFailed: the run failed").partition(": ")
            raise RunFailed(message or "the run failed", run_id=run.run_id)
        gate = await self.gate(session_id)
        if gate is not None:
            return RunResult(session_id, "paused", gate, run.run_id)
        record = await self._b.store.get_novel(session_id)
        return RunResult(session_id, record.status, None, run.run_id)

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


def _kwargs(budget: Budget | None, **fields: Any) -> RunKwargs:
    return RunKwargs(
        stream_mode=STREAM, budget=budget.to_json() if budget is not None else None, **fields
    )


def _progress(sink: ProgressSink | None) -> Callable[[RunEvent], None] | None:
    """The run's progress events (``custom``), decoded, for ``sink``."""
    if sink is None:
        return None

    def forward(event: RunEvent) -> None:
        if event.event == "custom":
            chunk = json.loads(event.data)
            if isinstance(chunk, dict):
                sink(chunk)

    return forward
