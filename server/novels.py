"""The novels service behind ``/api/v1/novels``: a novel is an owned thread of the graph.

A novel's id is its LangGraph thread id. Ownership lives in the run store's ``threads``
table, so every operation first loads the thread for its owner: another user's novel (or a
thread that is not a novel) is reported as not found, before any novel data is read.

What the author asked for lives in two places: premise, chapter count and genre in the
app store's novel record, and the rest of the graph input (``pause_after``,
``max_revisions``) plus an author-chosen title in the thread's metadata. Writing runs on
the durable run queue (:class:`~server.runs.service.RunService`), exactly like a run
created through the LangGraph-compatible API.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from langchain_core.runnables import RunnableConfig
from langgraph.types import StateSnapshot
from pydantic import BaseModel, ValidationError

from errors import Conflict, InvalidInput, NotFound
from graphs.novel import GRAPH_ID
from memory.app.port import (
    AppStore,
    ChapterRecord,
    ChapterVersionRecord,
    NovelRecord,
    NovelStatus,
)
from memory.retrieval.chunking import split_passages
from memory.runs.models import MultitaskStrategy, RunKwargs, RunRecord, ThreadRecord, normalise_id
from memory.world.port import WorldSnapshot
from nodes.common import language_of, slugify, stable_id
from nodes.context import ScribeContext
from nodes.human import (
    Approve,
    ApproveChapter,
    EditChapter,
    EditOutline,
    Revise,
    parse_chapter_decision,
    parse_outline_decision,
)
from nodes.schemas import ChapterBeats
from nodes.session import BookRequest, detect_language, validate_request
from nodes.state import PausePoint
from nodes.worldsmith import accept_findings, record_chapter_world
from server.export import book_to_epub, book_to_markdown
from server.runs.serde import jsonable
from server.runs.service import ASSISTANT_ID, RunRequest, RunService
from server.sessions import Gate

NOVEL_KIND = "novel"
"""``metadata.kind`` of threads created as novels through this API."""
INITIAL_STATUS: NovelStatus = "paused"
"""Status of a novel nobody has started writing yet (the record has no ``draft``)."""
WRITE_STREAM_MODES: tuple[str, ...] = ("values", "custom")
"""Stream modes of runs queued here: the state after each step and agents' progress."""
LIST_BATCH = 100
ExportFormat = Literal["markdown", "epub"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
UNTITLED = "Untitled novel"


@dataclass(frozen=True)
class NovelRequest:
    """What the author asks for: the novel graph's input."""

    premise: str
    chapters: int
    genre: str | None
    pause_after: tuple[PausePoint, ...]
    max_revisions: int | None
    language: str | None = None
    """BCP 47 tag; ``None``: detected from the premise."""


@dataclass(frozen=True)
class NovelPatch:
    """Changes to a novel; ``None`` leaves a field alone (``clear_genre`` removes it)."""

    title: str | None = None
    premise: str | None = None
    chapters: int | None = None
    genre: str | None = None
    clear_genre: bool = False
    pause_after: tuple[str, ...] | None = None
    max_revisions: int | None = None

    @property
    def changes_request(self) -> bool:
        """True when the patch touches what the graph is asked to write."""
        return (
            self.premise is not None
            or self.chapters is not None
            or self.genre is not None
            or self.clear_genre
            or self.pause_after is not None
            or self.max_revisions is not None
        )


@dataclass(frozen=True)
class NovelSummary:
    """A novel as listed: its record, thread and display title."""

    record: NovelRecord
    thread: ThreadRecord
    title: str | None
    pause_after: tuple[str, ...]
    max_revisions: int | None


@dataclass(frozen=True)
class NovelDetail:
    """A novel with its progress: accepted chapters, active run and the gate it waits at."""

    summary: NovelSummary
    planned_chapters: int
    chapters_accepted: int
    started: bool
    gate: Gate | None
    active_run_id: str | None


@dataclass(frozen=True)
class ChapterVersions:
    """Every stored text of a chapter and which one stands for it (if accepted)."""

    versions: tuple[ChapterVersionRecord, ...]
    current_version_id: str | None


@dataclass(frozen=True)
class WorldAt:
    """The world as of a chapter, with what the review found in that chapter's text."""

    snapshot: WorldSnapshot
    findings: Sequence[Mapping[str, Any]] | None
    """Findings of the accepted chapter (``None`` for the seed, a chapter not accepted
    yet, or a text stored before reviews kept them)."""


@dataclass(frozen=True)
class ExportedBook:
    """A rendered book ready to download."""

    filename: str
    media_type: str
    content: bytes


@dataclass(frozen=True)
class _Owned:
    """A novel loaded for its owner."""

    thread: ThreadRecord
    record: NovelRecord

    @property
    def id(self) -> str:
        """The novel's id (its thread's)."""
        return self.thread.thread_id


def gate_of(snapshot: StateSnapshot) -> Gate | None:
    """The author gate the thread waits at, if any."""
    for pending in snapshot.interrupts:
        value = pending.value
        if isinstance(value, dict) and value.get("gate") in ("outline", "chapter"):
            return Gate(value["gate"], value)
    return None


def _stored_book(record: NovelRecord, metadata: Mapping[str, Any]) -> BookRequest:
    """The book as the novel stores it: validated when it was created or changed."""
    request = _metadata_request(record, metadata)
    return BookRequest(
        premise=request.premise,
        chapters=request.chapters,
        genre=request.genre,
        pause_after=request.pause_after,
        language=request.language or detect_language(request.premise),
        max_revisions=request.max_revisions,
    )


def _metadata_request(record: NovelRecord, metadata: Mapping[str, Any]) -> NovelRequest:
    pauses = metadata.get("pause_after") or ()
    revisions = metadata.get("max_revisions")
    language = metadata.get("language")
    return NovelRequest(
        premise=record.premise,
        chapters=record.chapters,
        genre=record.genre,
        pause_after=tuple(p for p in pauses if p in get_args(PausePoint)),
        max_revisions=revisions if isinstance(revisions, int) else None,
        language=language if isinstance(language, str) else None,
    )


def _summary(owned: _Owned) -> NovelSummary:
    meta = owned.thread.metadata
    author_title = meta.get("title")
    # The finish node names the book after the story bible; an author's title wins.
    title = author_title if isinstance(author_title, str) and author_title else None
    request = _metadata_request(owned.record, meta)
    return NovelSummary(
        record=owned.record,
        thread=owned.thread,
        title=title or owned.record.title,
        pause_after=request.pause_after,
        max_revisions=request.max_revisions,
    )


class NovelService:
    """Novels of one process, always acting for one owner at a time."""

    def __init__(self, runs: RunService) -> None:
        self._runs = runs

    @property
    def _ctx(self) -> ScribeContext:
        return self._runs.backends.context

    @property
    def _store(self) -> AppStore:
        return self._runs.backends.store

    # --- loading ------------------------------------------------------------------------

    async def _owned(self, owner_id: str, novel_id: str) -> _Owned:
        """The novel if ``owner_id`` owns its thread; NotFound (the same for every reason)
        otherwise, so another user learns nothing about it."""
        try:
            tid = normalise_id(novel_id, "novel_id")
            thread = await self._runs.store.get_thread(tid, owner_id)
            record = await self._store.get_novel(tid)
        except (InvalidInput, NotFound):
            raise NotFound("novel", novel_id) from None
        return _Owned(thread, record)

    async def _snapshot(self, thread_id: str) -> StateSnapshot:
        return await self._runs.backends.graph.aget_state(_config(thread_id))

    # --- novels -------------------------------------------------------------------------

    async def create(
        self, owner_id: str, request: NovelRequest, *, title: str | None = None
    ) -> NovelDetail:
        """Create an idle thread owned by ``owner_id`` and its novel record (not started)."""
        checked = validate_request(
            request.premise,
            request.chapters,
            request.genre,
            request.pause_after,
            request.language,
            request.max_revisions,
        )
        revisions = checked.max_revisions
        metadata: dict[str, Any] = {
            "graph_id": GRAPH_ID,
            "kind": NOVEL_KIND,
            "pause_after": list(checked.pause_after),
        }
        if request.language:
            metadata["language"] = checked.language
        if revisions is not None:
            metadata["max_revisions"] = revisions
        if title:
            metadata["title"] = title
        view = await self._runs.create_thread(owner_id, metadata=metadata)
        tid = view.thread.thread_id
        try:
            await self._store.create_novel(
                tid,
                checked.premise,
                checked.chapters,
                checked.genre,
                status=INITIAL_STATUS,
                title=title or None,
            )
        except BaseException:
            # A thread without its novel would be an orphan no novel endpoint can see.
            await self._runs.delete_thread(owner_id, tid)
            raise
        return await self.get(owner_id, tid)

    async def list_novels(self, owner_id: str, *, limit: int, offset: int) -> list[NovelSummary]:
        """The owner's novels, newest first: their threads that carry a novel record
        (threads created through the LangGraph API become novels on their first run)."""
        found: list[NovelSummary] = []
        skipped = 0
        start = 0
        while len(found) < limit:
            views = await self._runs.search_threads(
                owner_id, limit=LIST_BATCH, offset=start, with_state=False
            )
            for view in views:
                try:
                    record = await self._store.get_novel(view.thread.thread_id)
                except NotFound:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(_summary(_Owned(view.thread, record)))
                if len(found) == limit:
                    break
            if len(views) < LIST_BATCH:
                break
            start += LIST_BATCH
        return found

    async def get(self, owner_id: str, novel_id: str) -> NovelDetail:
        """The novel with its progress and the gate it waits at."""
        owned = await self._owned(owner_id, novel_id)
        return await self._detail(owned)

    async def _detail(self, owned: _Owned) -> NovelDetail:
        snapshot = await self._snapshot(owned.id)
        chapters = await self._store.list_chapters(owned.id)
        active = await self._runs.store.active_runs(owned.id)
        return NovelDetail(
            summary=_summary(owned),
            planned_chapters=_planned_chapters(owned.record, snapshot),
            chapters_accepted=len(chapters),
            started=bool(snapshot.values) or bool(active),
            gate=gate_of(snapshot),
            active_run_id=active[0].run_id if active else None,
        )

    async def update(self, owner_id: str, novel_id: str, patch: NovelPatch) -> NovelDetail:
        """Retitle a novel at any time; change what it asks for only before writing began
        (Conflict afterwards: the graph already holds the old request)."""
        owned = await self._owned(owner_id, novel_id)
        tid = owned.id
        if patch.changes_request:
            await self._require_not_started(owned)
            current = _metadata_request(owned.record, owned.thread.metadata)
            genre = None if patch.clear_genre else (patch.genre or current.genre)
            checked = validate_request(
                patch.premise if patch.premise is not None else current.premise,
                patch.chapters if patch.chapters is not None else current.chapters,
                genre,
                patch.pause_after if patch.pause_after is not None else current.pause_after,
                max_revisions=patch.max_revisions,
            )
            metadata: dict[str, Any] = {"pause_after": list(checked.pause_after)}
            if checked.max_revisions is not None:
                metadata["max_revisions"] = checked.max_revisions
            await self._store.update_request(
                tid, premise=checked.premise, chapters=checked.chapters, genre=checked.genre
            )
            await self._runs.update_thread(owner_id, tid, metadata)
        if patch.title is not None:
            await self._runs.update_thread(owner_id, tid, {"title": patch.title})
            await self._store.update_novel(tid, title=patch.title)
        return await self.get(owner_id, tid)

    async def _require_not_started(self, owned: _Owned) -> None:
        runs = await self._runs.store.list_runs(owned.id, owned.thread.owner_id, limit=1)
        snapshot = await self._snapshot(owned.id)
        if runs or snapshot.values:
            raise Conflict(
                f"novel {owned.id} has started; only its title can change now",
                novel_id=owned.id,
            )

    async def delete(self, owner_id: str, novel_id: str) -> None:
        """Delete the novel: thread, runs, checkpoints, world, passages and record."""
        owned = await self._owned(owner_id, novel_id)
        await self._runs.delete_thread(owner_id, owned.id)

    # --- writing ------------------------------------------------------------------------

    async def write(
        self,
        owner_id: str,
        novel_id: str,
        *,
        decision: Mapping[str, Any] | None = None,
        multitask_strategy: MultitaskStrategy = "reject",
    ) -> RunRecord:
        """Queue a run that writes the novel: its first run starts from the request; later
        ones continue from the last checkpoint, and at a gate ``decision`` answers it.

        Conflict when the novel is completed, when a run is active (with ``reject``), when
        it waits at a gate and no decision is given, or a decision is given and it does not.
        """
        owned = await self._owned(owner_id, novel_id)
        tid = owned.id
        active = await self._runs.store.active_runs(tid)
        if active and multitask_strategy == "reject":
            raise _busy(tid, active[0])
        snapshot = await self._snapshot(tid)
        if owned.record.status == "completed" or (
            snapshot.values.get("done") and not snapshot.next
        ):
            raise Conflict(f"novel {tid} is already completed", novel_id=tid)
        gate = gate_of(snapshot)
        book: BookRequest | None = None
        command: dict[str, Any] | None = None
        if gate is not None:
            if decision is None:
                raise Conflict(
                    f"novel {tid} waits for its author at the {_gate_name(gate)}; send a "
                    "decision {action: approve | edit | revise}",
                    novel_id=tid,
                    gate=gate.kind,
                )
            command = {"resume": _checked_decision(gate, decision)}
        elif decision is not None:
            raise Conflict(
                f"novel {tid} is not waiting at a gate; write without a decision",
                novel_id=tid,
            )
        elif not snapshot.values and (not active or multitask_strategy == "interrupt"):
            # Nothing written yet and nothing queued that would write it: start the book.
            book = _stored_book(owned.record, owned.thread.metadata)
        return await self._queue(owner_id, tid, book, command, multitask_strategy)

    async def _queue(
        self,
        owner_id: str,
        thread_id: str,
        book: BookRequest | None,
        command: dict[str, Any] | None,
        multitask_strategy: MultitaskStrategy,
    ) -> RunRecord:
        kwargs = RunKwargs(
            command=command,
            stream_mode=WRITE_STREAM_MODES,
            # A queued answer must not land on a gate that another run answered meanwhile.
            strict_resume=command is not None,
        )
        request = RunRequest(
            assistant_id=ASSISTANT_ID,
            kwargs=kwargs,
            metadata={"novel_id": thread_id, "source": "api/v1/novels"},
            multitask_strategy=multitask_strategy,
            if_not_exists="reject",
            book=book,
        )
        return await self._runs.create_run(owner_id, thread_id, request)

    # --- chapters -----------------------------------------------------------------------

    async def chapters(self, owner_id: str, novel_id: str) -> list[ChapterRecord]:
        """The accepted chapters in order."""
        owned = await self._owned(owner_id, novel_id)
        return await self._store.list_chapters(owned.id)

    async def chapter(self, owner_id: str, novel_id: str, number: int) -> ChapterRecord:
        """One accepted chapter with its text."""
        owned = await self._owned(owner_id, novel_id)
        await self._check_number(owned, number)
        return await self._accepted(owned.id, number)

    async def versions(self, owner_id: str, novel_id: str, number: int) -> ChapterVersions:
        """Every stored text of a chapter (drafts and edits), oldest first."""
        owned = await self._owned(owner_id, novel_id)
        await self._check_number(owned, number)
        versions = await self._store.list_versions(owned.id, number)
        try:
            current: str | None = (
                await self._store.get_chapter(owned.id, number)
            ).current_version_id
        except NotFound:
            current = None
        return ChapterVersions(tuple(versions), current)

    async def _accepted(self, novel_id: str, number: int) -> ChapterRecord:
        try:
            return await self._store.get_chapter(novel_id, number)
        except NotFound:
            raise NotFound(
                "chapter", number, f"chapter {number} of novel {novel_id} is not accepted yet"
            ) from None

    async def _check_number(self, owned: _Owned, number: int) -> int:
        planned = _planned_chapters(owned.record, await self._snapshot(owned.id))
        if not 1 <= number <= planned:
            raise InvalidInput(
                f"chapter must be between 1 and {planned}, got {number}", field="chapter"
            )
        return planned

    async def edit_chapter(
        self, owner_id: str, novel_id: str, number: int, text: str, title: str | None = None
    ) -> ChapterRecord | RunRecord:
        """The author's text replaces an accepted chapter; returns the chapter as it now
        stands, or the run that answers the chapter's gate.

        Waiting at this chapter's gate, the gate is answered (``edit``) by a queued run, so
        the graph's own flow records it. Otherwise, with no run active, the edit is saved
        as an ``edit`` version (same text, same id: a retry changes nothing), becomes the
        chapter's text, its passages are re-indexed and its world facts recomputed as the
        worldsmith does after a gate edit.
        """
        owned = await self._owned(owner_id, novel_id)
        tid = owned.id
        await self._check_number(owned, number)
        current = await self._accepted(tid, number)
        snapshot = await self._snapshot(tid)
        gate = gate_of(snapshot)
        if gate is not None and gate.kind == "chapter" and gate.payload.get("chapter") == number:
            decision: dict[str, Any] = {"action": "edit", "text": text}
            if title is not None:
                decision["title"] = title
            command = {"resume": _checked_decision(gate, decision)}
            return await self._queue(owner_id, tid, None, command, "reject")
        active = await self._runs.store.active_runs(tid)
        if active:
            raise _busy(tid, active[0])
        _check_edit(text, title)
        # Found first: without its plan the world cannot be redone, so nothing is changed.
        beats = await self._chapter_beats(tid, number)
        ctx = self._ctx
        version = await self._store.save_version(
            stable_id(tid, "chapter", number, "edit", text),
            tid,
            number,
            "edit",
            title or current.title,
            text,
        )
        await self._store.accept_chapter(tid, number, version.id, version.title, current.summary)
        await ctx.passages.index_chapter(tid, number, split_passages(version.text))
        state = (await self._snapshot(tid)).values or {}
        recorded = await record_chapter_world(
            ctx, tid, number, beats, version.text, language=language_of(state)
        )
        await self._store.save_review(
            version.id,
            recorded.claims.model_dump(mode="json"),
            [asdict(f) for f in recorded.findings],
        )
        return await self._store.accept_chapter(
            tid, number, version.id, version.title, recorded.claims.summary
        )

    async def accept_findings(
        self, owner_id: str, novel_id: str, number: int, findings: Sequence[int]
    ) -> ChapterRecord:
        """Accept findings (by number) of an accepted chapter's standing text as deliberate
        changes; returns the chapter. Conflict while a run is active on the novel (its
        world facts may be in the middle of being recorded)."""
        owned = await self._owned(owner_id, novel_id)
        tid = owned.id
        await self._check_number(owned, number)
        await self._accepted(tid, number)
        active = await self._runs.store.active_runs(tid)
        if active:
            raise _busy(tid, active[0])
        beats = await self._chapter_beats(tid, number)
        state = (await self._snapshot(tid)).values or {}
        await accept_findings(self._ctx, tid, number, beats, findings, language_of(state))
        return await self._store.get_chapter(tid, number)

    async def _chapter_beats(self, thread_id: str, number: int) -> ChapterBeats:
        """The plan the director made for chapter ``number``, from the thread's history
        (the state keeps only the current chapter's beats)."""
        async for snapshot in self._runs.backends.graph.aget_state_history(_config(thread_id)):
            values = snapshot.values
            beats = values.get("beats") if values else None
            if values.get("chapter") == number and isinstance(beats, dict):
                return ChapterBeats(**beats)
        raise Conflict(
            f"the plan of chapter {number} is not in the history of novel {thread_id}; "
            "its world facts cannot be recomputed",
            novel_id=thread_id,
            chapter=number,
        )

    # --- world and export ---------------------------------------------------------------

    async def world(self, owner_id: str, novel_id: str, chapter: int | None = None) -> WorldAt:
        """The world as of ``chapter`` (0 is the seed; default: latest accepted chapter)
        and the findings of that chapter's text."""
        owned = await self._owned(owner_id, novel_id)
        planned = _planned_chapters(owned.record, await self._snapshot(owned.id))
        accepted = {c.number: c for c in await self._store.list_chapters(owned.id)}
        if chapter is None:
            chapter = max(accepted, default=0)
        elif not 0 <= chapter <= planned:
            raise InvalidInput(
                f"chapter must be between 0 and {planned}, got {chapter}", field="chapter"
            )
        record = accepted.get(chapter)
        return WorldAt(
            await self._ctx.world.world_as_of(owned.id, chapter),
            record.findings if record else None,
        )

    async def export(self, owner_id: str, novel_id: str, fmt: str) -> ExportedBook:
        """The accepted chapters as one Markdown document or an EPUB 3 file."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(
                f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}", field="format"
            )
        owned = await self._owned(owner_id, novel_id)
        chapters = await self._store.list_chapters(owned.id)
        if not chapters:
            raise Conflict(
                f"novel {owned.id} has no accepted chapter to export yet", novel_id=owned.id
            )
        snapshot = await self._snapshot(owned.id)
        bible = snapshot.values.get("bible") if snapshot.values else None
        logline = bible.get("logline") if isinstance(bible, dict) else None
        title = _summary(owned).title or (bible or {}).get("title") or UNTITLED
        stem = slugify(title)
        if fmt == "markdown":
            text = book_to_markdown(title, chapters, logline=logline)
            return ExportedBook(f"{stem}.md", "text/markdown; charset=utf-8", text.encode())
        content = await asyncio.to_thread(_epub_bytes, title, chapters, logline, owned.id)
        return ExportedBook(f"{stem}.epub", "application/epub+zip", content)


def _epub_bytes(
    title: str, chapters: Sequence[ChapterRecord], logline: str | None, novel_id: str
) -> bytes:
    # book_to_epub writes a file; a private temporary folder keeps requests apart.
    with tempfile.TemporaryDirectory(prefix="scribe-export-") as folder:
        out = Path(folder) / "book.epub"
        book_to_epub(title, chapters, out, logline=logline, identifier=f"urn:uuid:{novel_id}")
        return out.read_bytes()


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def _planned_chapters(record: NovelRecord, snapshot: StateSnapshot) -> int:
    # An edited outline may change the chapter count; the graph state has the current one.
    planned = snapshot.values.get("chapters") if snapshot.values else None
    return planned if isinstance(planned, int) and planned >= 1 else record.chapters


def _gate_name(gate: Gate) -> str:
    if gate.kind == "chapter":
        return f"gate after chapter {gate.payload.get('chapter')}"
    return "outline gate"


_DECISIONS: dict[str, dict[str, type[BaseModel]]] = {
    "outline": {"approve": Approve, "revise": Revise, "edit": EditOutline},
    "chapter": {"approve": ApproveChapter, "revise": Revise, "edit": EditChapter},
}
_TAKES = {
    "approve": {"outline": "nothing else", "chapter": "optionally accept (finding numbers)"},
    "revise": "notes",
    "edit": {"outline": "outline", "chapter": "text (and optionally title)"},
}


def _checked_decision(gate: Gate, decision: Mapping[str, Any]) -> dict[str, Any]:
    """The decision as the gate's node will read it; InvalidInput names the field.

    Checked against the model of its action first, so the message says what that action
    lacks (the gate's own parser tries every action and reports the first mismatch).
    """
    value = {k: v for k, v in decision.items() if v is not None}
    action = value.get("action")
    model = _DECISIONS[gate.kind].get(action) if isinstance(action, str) else None
    if model is None:
        raise InvalidInput(
            f"decision.action must be approve, edit or revise, got {action!r}", field="decision"
        )
    try:
        model.model_validate(value)
        if gate.kind == "outline":
            parse_outline_decision(value)
        else:
            parse_chapter_decision(value, gate.payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        takes = _TAKES[str(action)]
        needs = takes[gate.kind] if isinstance(takes, dict) else takes
        raise InvalidInput(
            f"decision.{where}: {first['msg']} ({action} at the {_gate_name(gate)} takes {needs})",
            field="decision",
            gate=gate.kind,
        ) from exc
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field="decision", gate=gate.kind) from exc
    return value


def _check_edit(text: str, title: str | None) -> None:
    """The limits a gate puts on an author's chapter text, named by field."""
    try:
        parse_chapter_decision({"action": "edit", "text": text, "title": title})
    except InvalidInput as exc:
        field = "title" if "title" in exc.message else "text"
        raise InvalidInput(exc.message, field=field) from exc


def _busy(thread_id: str, run: RunRecord) -> Conflict:
    return Conflict(
        f"novel {thread_id} is busy with run {run.run_id}; wait for it or cancel it",
        novel_id=thread_id,
        run_id=run.run_id,
    )


def gate_json(gate: Gate | None) -> dict[str, Any] | None:
    """A gate as JSON: its kind, the chapter (at a chapter gate) and what it shows."""
    if gate is None:
        return None
    payload = {k: v for k, v in gate.payload.items() if k != "gate"}
    chapter = payload.get("chapter") if gate.kind == "chapter" else None
    return {"kind": gate.kind, "chapter": chapter, "payload": jsonable(payload)}
