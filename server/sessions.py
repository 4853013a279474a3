"""Writing sessions: start, resume and inspect runs of the ``novel`` graph.

This is the application service shared by the CLI and (later) the HTTP API. A session id
is a UUID and is also the LangGraph thread id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from graphs.state import NovelInput
from memory.app.port import ChapterRecord, NovelRecord
from memory.errors import Conflict, InvalidInput, NotFound, ScribeError
from nodes.human import parse_chapter_decision, parse_outline_decision
from nodes.session import BookRequest
from server.backends import Backends

ProgressSink = Callable[[dict[str, Any]], None]
RECURSION_LIMIT = 100_000  # a step budget, not a loop guard: routing bounds every loop


@dataclass(frozen=True)
class Gate:
    """Where a paused session waits for its author, and what it shows them."""

    kind: Literal["outline", "chapter"]
    payload: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    """How a run ended: completed, or paused at a gate."""

    session_id: str
    status: str
    gate: Gate | None


def parse_session_id(raw: str) -> str:
    """Normalise a session id; raises InvalidInput for anything but a UUID."""
    try:
        return str(uuid.UUID(raw.strip()))
    except ValueError as exc:
        raise InvalidInput(f"{raw!r} is not a session id (a UUID)", field="session") from exc


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
    ) -> RunResult:
        """Create a session for ``request`` and run it until it ends or pauses."""
        session_id = session_id or self.new_id()
        await self._b.store.create_novel(
            session_id, request.premise, request.chapters, request.genre
        )
        inputs: NovelInput = {
            "premise": request.premise,
            "chapters": request.chapters,
            "genre": request.genre,
            "pause_after": list(request.pause_after),
        }
        return await self._run(session_id, inputs, on_progress)

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
                parse_chapter_decision(decision)
            return await self._run(session_id, Command(resume=decision), on_progress)
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
        return await self._run(session_id, inputs, on_progress)

    async def _run(
        self,
        session_id: str,
        inputs: NovelInput | Command[Any] | None,
        on_progress: ProgressSink | None,
    ) -> RunResult:
        config = thread_config(session_id)
        store = self._b.store
        await store.update_novel(session_id, status="running")
        try:
            async for chunk in self._b.graph.astream(
                inputs,
                config,
                context=self._b.context,
                stream_mode="custom",
                durability="sync",
            ):
                if on_progress is not None and isinstance(chunk, dict):
                    on_progress(chunk)
        except ScribeError as exc:
            await store.update_novel(session_id, status="failed", error=str(exc))
            raise
        except Exception as exc:
            await store.update_novel(
                session_id, status="failed", error=f"{type(exc).__name__}: {exc}"
            )
            raise
        gate = await self.gate(session_id)
        if gate is not None:
            await store.update_novel(session_id, status="paused")
            return RunResult(session_id, "paused", gate)
        record = await store.get_novel(session_id)
        return RunResult(session_id, record.status, None)

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
