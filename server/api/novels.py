"""Novels under ``/api/v1/novels``: create, write, read chapters, edit, world and export.

Thin routes: pydantic validates input (422 naming the field), the
:class:`~server.novels.NovelService` does the work for the caller only (another user's
novel is a 404 on every route), and errors become responses in ``server/errors.py``.
Writing is queued as a run of the ``novel`` graph on the novel's thread; its answer
points at the run under the LangGraph-compatible ``/threads`` API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from errors import ScribeError
from memory.app.port import ChapterRecord, ChapterVersionRecord
from memory.app.sql import count_words
from memory.runs.events import END, RunEvent
from memory.runs.models import RunRecord
from memory.world.port import WorldSnapshot
from nodes.human import MAX_CHAPTER_CHARS
from nodes.integrity import numbered
from nodes.session import MAX_CHAPTERS, MAX_GENRE_CHARS, MAX_PREMISE_CHARS, MAX_REVISIONS
from nodes.state import PausePoint
from server.api.langgraph.shapes import HEARTBEAT, run_location, sse_frame
from server.deps import CurrentUser, Services
from server.novels import (
    NovelDetail,
    NovelPatch,
    NovelRequest,
    NovelService,
    NovelSummary,
    gate_json,
)
from server.runs.serde import dumps
from server.runs.service import RunService

router = APIRouter(prefix="/api/v1/novels", tags=["novels"])

MAX_TITLE_CHARS = 200
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def get_novels(services: Services) -> NovelService:
    """The novels service of this process."""
    return NovelService(services.runs)


def get_runs(services: Services) -> RunService:
    """The run service (for streaming a run's events)."""
    return services.runs


Novels = Annotated[NovelService, Depends(get_novels)]
Runs = Annotated[RunService, Depends(get_runs)]
ChapterNumber = Annotated[int, Path(ge=1, description="chapter number, from 1")]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE_CHARS)]


# --- requests -------------------------------------------------------------------------


class _Request(BaseModel):
    # Unknown fields are refused so a misspelt one gets a 422 naming it, not silence.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NovelCreate(_Request):
    """A novel to write: premise and chapter count, optionally genre, title and gates."""

    premise: str = Field(min_length=1, max_length=MAX_PREMISE_CHARS)
    chapters: StrictInt = Field(ge=1, le=MAX_CHAPTERS)
    genre: str | None = Field(default=None, max_length=MAX_GENRE_CHARS)
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$",
        description="the book's language as a BCP 47 tag (default: the premise's)",
    )
    title: Title | None = None
    pause_after: list[PausePoint] = Field(
        default_factory=list, description="pause for the author after the outline / chapters"
    )
    max_revisions: StrictInt | None = Field(default=None, ge=0, le=MAX_REVISIONS)


class NovelUpdate(_Request):
    """Changes: ``title`` at any time; the rest only before writing started (else 409).
    ``genre: null`` removes the genre."""

    title: Title | None = None
    premise: str | None = Field(default=None, min_length=1, max_length=MAX_PREMISE_CHARS)
    chapters: StrictInt | None = Field(default=None, ge=1, le=MAX_CHAPTERS)
    genre: str | None = Field(default=None, max_length=MAX_GENRE_CHARS)
    pause_after: list[PausePoint] | None = None
    max_revisions: StrictInt | None = Field(default=None, ge=0, le=MAX_REVISIONS)

    @model_validator(mode="after")
    def _no_nulls(self) -> NovelUpdate:
        for name in ("title", "premise", "chapters", "pause_after", "max_revisions"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null (leave it out to keep it)")
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        return self

    def patch(self) -> NovelPatch:
        """The service's patch."""
        clear_genre = "genre" in self.model_fields_set and not self.genre
        return NovelPatch(
            title=self.title,
            premise=self.premise,
            chapters=self.chapters,
            genre=self.genre or None,
            clear_genre=clear_genre,
            pause_after=tuple(self.pause_after) if self.pause_after is not None else None,
            max_revisions=self.max_revisions,
        )


class Decision(_Request):
    """An answer to the gate the novel waits at.

    At the outline: ``approve``, ``revise`` with ``notes``, or ``edit`` with ``outline``.
    After a chapter: ``approve`` (optionally with ``accept``, the numbers of findings that
    are deliberate changes), ``revise`` with ``notes``, or ``edit`` with ``text`` (and
    optionally ``title``).
    """

    action: Literal["approve", "edit", "revise"]
    notes: str | None = None
    text: str | None = None
    title: str | None = None
    outline: list[dict[str, Any]] | None = None
    accept: list[int] | None = None


class AcceptFindingsRequest(_Request):
    """Findings of a chapter's standing text that are deliberate changes, by number."""

    findings: list[int] = Field(min_length=1, max_length=100)


class WriteRequest(_Request):
    """Start or continue writing; ``decision`` answers the gate the novel waits at."""

    stream: bool = False
    multitask_strategy: Literal["reject", "enqueue", "interrupt"] = "reject"
    decision: Decision | None = None


class ChapterEditRequest(_Request):
    """The author's text for an accepted chapter."""

    text: str = Field(min_length=1, max_length=MAX_CHAPTER_CHARS)
    title: Title | None = None


# --- responses ------------------------------------------------------------------------


class NovelSummaryResponse(BaseModel):
    """A novel as listed."""

    id: str
    thread_id: str
    title: str | None
    premise: str
    chapters: int
    genre: str | None
    status: str
    error: str | None
    thread_status: str
    pause_after: list[str]
    max_revisions: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, summary: NovelSummary, chapters: int | None = None) -> NovelSummaryResponse:
        """The response for ``summary`` (``chapters``: the planned count, if known)."""
        record = summary.record
        return cls(
            id=record.id,
            thread_id=summary.thread.thread_id,
            title=summary.title,
            premise=record.premise,
            chapters=chapters if chapters is not None else record.chapters,
            genre=record.genre,
            status=record.status,
            error=record.error,
            thread_status=summary.thread.status,
            pause_after=list(summary.pause_after),
            max_revisions=summary.max_revisions,
            created_at=record.created_at,
            updated_at=record.updated_at,
        )


class NovelResponse(NovelSummaryResponse):
    """A novel with its progress and, when paused for its author, the gate."""

    started: bool
    chapters_accepted: int
    active_run_id: str | None
    gate: dict[str, Any] | None

    @classmethod
    def of_detail(cls, detail: NovelDetail) -> NovelResponse:
        """The response for ``detail``."""
        base = NovelSummaryResponse.of(detail.summary, detail.planned_chapters)
        return cls(
            **base.model_dump(),
            started=detail.started,
            chapters_accepted=detail.chapters_accepted,
            active_run_id=detail.active_run_id,
            gate=gate_json(detail.gate),
        )


class WriteResponse(BaseModel):
    """A queued run writing the novel; follow it at ``/threads/{thread_id}/runs/{run_id}``."""

    novel_id: str
    thread_id: str
    run_id: str
    status: str

    @classmethod
    def of(cls, run: RunRecord) -> WriteResponse:
        """The response for ``run``."""
        return cls(
            novel_id=run.thread_id, thread_id=run.thread_id, run_id=run.run_id, status=run.status
        )


class FindingResponse(BaseModel):
    """A problem the rules found in a chapter text, quoting it (see ``nodes/integrity.py``)."""

    kind: str
    """life, location, name, attribute, knowledge, custody, time, setup, repetition or
    length."""
    severity: Literal["major", "minor"]
    quote: str
    problem: str
    suggestion: str = ""
    number: int
    """How an author names this finding to accept it (from 1, in this list's order)."""
    accepted: bool = False
    """The author accepted it as a deliberate change."""
    on_accept: list[str] = Field(default_factory=list)
    """What the world records from this chapter on if it is accepted (``subject
    predicate value``); empty when the world follows the draft already."""

    @classmethod
    def listed(cls, findings: Sequence[Mapping[str, Any]] | None) -> list[FindingResponse] | None:
        """The responses for stored findings (``None`` when the text was never reviewed)."""
        if findings is None:
            return None
        return [
            cls.model_validate(
                {
                    **f,
                    "on_accept": [
                        f"{c['subject']} {c['predicate']} {c.get('value') or c.get('object')}"
                        for c in f.get("change") or ()
                    ],
                }
            )
            for f in numbered(findings)
        ]


class ChapterSummaryResponse(BaseModel):
    """An accepted chapter without its text."""

    number: int
    title: str
    summary: str
    word_count: int
    current_version_id: str
    updated_at: datetime

    @classmethod
    def of(cls, chapter: ChapterRecord) -> ChapterSummaryResponse:
        """The response for ``chapter``."""
        return cls(
            number=chapter.number,
            title=chapter.title,
            summary=chapter.summary,
            word_count=chapter.word_count,
            current_version_id=chapter.current_version_id,
            updated_at=chapter.updated_at,
        )


class ChapterResponse(ChapterSummaryResponse):
    """An accepted chapter with its standing text and what the review found in it."""

    text: str
    findings: list[FindingResponse] | None = None
    """Consistency, repetition and length findings of the standing text, majors first;
    ``null`` for a text stored before reviews kept them."""

    @classmethod
    def of_chapter(cls, chapter: ChapterRecord) -> ChapterResponse:
        """The response for ``chapter``."""
        return cls(
            **ChapterSummaryResponse.of(chapter).model_dump(),
            text=chapter.text,
            findings=FindingResponse.listed(chapter.findings),
        )


class VersionResponse(BaseModel):
    """One stored text of a chapter: a writer ``draft`` or an author ``edit``."""

    id: str
    number: int
    version: int
    kind: str
    title: str
    word_count: int
    created_at: datetime
    current: bool
    text: str | None = None
    findings: list[FindingResponse] | None = None
    """What the review of this version found (``null``: not reviewed)."""

    @classmethod
    def of(
        cls, version: ChapterVersionRecord, *, current: bool, include_text: bool
    ) -> VersionResponse:
        """The response for ``version``."""
        return cls(
            id=version.id,
            number=version.number,
            version=version.version,
            kind=version.kind,
            title=version.title,
            word_count=count_words(version.text),
            created_at=version.created_at,
            current=current,
            text=version.text if include_text else None,
            findings=FindingResponse.listed(version.findings),
        )


class EntityResponse(BaseModel):
    """An entity with its fixed and currently valid attributes."""

    key: str
    kind: str
    name: str
    aliases: list[str]
    description: str
    introduced_chapter: int
    attributes: dict[str, str]


class FactResponse(BaseModel):
    """An attribute fact valid at the chapter, with the chapter that recorded it."""

    subject: str
    attribute: str
    value: str
    valid_from_chapter: int
    valid_to_chapter: int | None
    source_chapter: int


class RelationshipResponse(BaseModel):
    """A relationship valid at the chapter."""

    subject: str
    type: str
    object: str
    valid_from_chapter: int
    valid_to_chapter: int | None
    source_chapter: int


class SetupResponse(BaseModel):
    """A set-up planted and not yet paid off."""

    key: str
    description: str
    planted_chapter: int
    due_chapter: int
    entities: list[str]


class WorldResponse(BaseModel):
    """The world as it stands at one chapter (0: the seed, before chapter 1)."""

    chapter: int
    entities: list[EntityResponse]
    facts: list[FactResponse]
    relationships: list[RelationshipResponse]
    open_setups: list[SetupResponse]
    findings: list[FindingResponse] | None = None
    """What the review found in this chapter's accepted text (``null`` for the seed, a
    chapter not accepted yet, or a text stored before reviews kept them)."""

    @classmethod
    def of(
        cls, snapshot: WorldSnapshot, findings: Sequence[Mapping[str, Any]] | None = None
    ) -> WorldResponse:
        """The response for ``snapshot``."""
        return cls(
            chapter=snapshot.chapter,
            findings=FindingResponse.listed(findings),
            entities=[
                EntityResponse(
                    key=e.key,
                    kind=e.kind,
                    name=e.name,
                    aliases=list(e.aliases),
                    description=e.description,
                    introduced_chapter=e.introduced_chapter,
                    attributes=snapshot.attributes(e.key),
                )
                for e in snapshot.entities
            ],
            facts=[
                FactResponse(
                    subject=f.subject,
                    attribute=f.predicate,
                    value=f.value,
                    valid_from_chapter=f.valid_from_chapter,
                    valid_to_chapter=f.valid_to_chapter,
                    source_chapter=f.source_chapter,
                )
                for f in snapshot.facts
                if f.value is not None
            ],
            relationships=[
                RelationshipResponse(
                    subject=f.subject,
                    type=f.predicate,
                    object=f.object,
                    valid_from_chapter=f.valid_from_chapter,
                    valid_to_chapter=f.valid_to_chapter,
                    source_chapter=f.source_chapter,
                )
                for f in snapshot.facts
                if f.object is not None
            ],
            open_setups=[
                SetupResponse(
                    key=s.key,
                    description=s.description,
                    planted_chapter=s.planted_chapter,
                    due_chapter=s.due_chapter,
                    entities=list(s.entities),
                )
                for s in snapshot.open_setups()
            ],
        )


# --- helpers --------------------------------------------------------------------------


def _run_headers(run: RunRecord) -> dict[str, str]:
    location = run_location(run)
    return {"Location": location, "Content-Location": location}


def _accepted(run: RunRecord) -> JSONResponse:
    return JSONResponse(
        WriteResponse.of(run).model_dump(), status_code=202, headers=_run_headers(run)
    )


async def _sse(runs: RunService, user_id: str, run: RunRecord) -> AsyncIterator[bytes]:
    try:
        async for event in runs.events(user_id, run.thread_id, run.run_id):
            yield HEARTBEAT if event is None else sse_frame(event)
    except ScribeError as exc:
        # The response has started: the failure can only be told in the stream itself.
        error = {"error": type(exc).__name__, "message": exc.message}
        yield sse_frame(RunEvent("", "error", dumps(error)))
        yield sse_frame(RunEvent("", END, "null"))


# --- routes ---------------------------------------------------------------------------


@router.post("", status_code=201)
async def create_novel(body: NovelCreate, user: CurrentUser, novels: Novels) -> NovelResponse:
    """Create a novel owned by the caller; nothing is written until ``/write``."""
    request = NovelRequest(
        premise=body.premise,
        chapters=body.chapters,
        genre=body.genre or None,
        pause_after=tuple(body.pause_after),
        max_revisions=body.max_revisions,
        language=body.language,
    )
    detail = await novels.create(user.user_id, request, title=body.title)
    return NovelResponse.of_detail(detail)


@router.get("")
async def list_novels(
    user: CurrentUser,
    novels: Novels,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[NovelSummaryResponse]:
    """The caller's novels, newest first."""
    found = await novels.list_novels(user.user_id, limit=limit, offset=offset)
    return [NovelSummaryResponse.of(s) for s in found]


@router.get("/{novel_id}")
async def get_novel(novel_id: str, user: CurrentUser, novels: Novels) -> NovelResponse:
    """The novel with its status, accepted chapters, thread status and gate."""
    return NovelResponse.of_detail(await novels.get(user.user_id, novel_id))


@router.patch("/{novel_id}")
async def update_novel(
    novel_id: str, body: NovelUpdate, user: CurrentUser, novels: Novels
) -> NovelResponse:
    """Retitle the novel, or change its request before writing started (409 after)."""
    return NovelResponse.of_detail(await novels.update(user.user_id, novel_id, body.patch()))


@router.delete("/{novel_id}", status_code=204)
async def delete_novel(novel_id: str, user: CurrentUser, novels: Novels) -> Response:
    """Delete the novel with its runs, checkpoints, world and passages."""
    await novels.delete(user.user_id, novel_id)
    return Response(status_code=204)


@router.post("/{novel_id}/write", status_code=202, response_model=None)
async def write_novel(
    novel_id: str, body: WriteRequest, user: CurrentUser, novels: Novels, runs: Runs
) -> JSONResponse | StreamingResponse:
    """Queue a run that starts, continues, or (with ``decision``) resumes the novel.

    202 with the run (``Location`` points at it); with ``stream`` the run's events as SSE.
    409 when the novel is completed, busy (``multitask_strategy`` reject), waiting at a
    gate without a decision, or given a decision while not waiting.
    """
    decision = body.decision.model_dump(exclude_none=True) if body.decision else None
    run = await novels.write(
        user.user_id, novel_id, decision=decision, multitask_strategy=body.multitask_strategy
    )
    if not body.stream:
        return _accepted(run)
    return StreamingResponse(
        _sse(runs, user.user_id, run),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **_run_headers(run)},
    )


@router.get("/{novel_id}/chapters")
async def list_chapters(
    novel_id: str, user: CurrentUser, novels: Novels
) -> list[ChapterSummaryResponse]:
    """The accepted chapters in order, without their texts."""
    return [ChapterSummaryResponse.of(c) for c in await novels.chapters(user.user_id, novel_id)]


@router.get("/{novel_id}/chapters/{number}")
async def get_chapter(
    novel_id: str, number: ChapterNumber, user: CurrentUser, novels: Novels
) -> ChapterResponse:
    """One accepted chapter with its text."""
    return ChapterResponse.of_chapter(await novels.chapter(user.user_id, novel_id, number))


@router.put("/{novel_id}/chapters/{number}", response_model=None)
async def edit_chapter(
    novel_id: str,
    number: ChapterNumber,
    body: ChapterEditRequest,
    user: CurrentUser,
    novels: Novels,
) -> ChapterResponse | JSONResponse:
    """Replace an accepted chapter's text with the author's (200 with the chapter).

    When the novel waits at this chapter's gate, the gate is answered instead: 202 with
    the run that records the edit. 409 while a run is active on the novel.
    """
    edited = await novels.edit_chapter(user.user_id, novel_id, number, body.text, body.title)
    if isinstance(edited, RunRecord):
        return _accepted(edited)
    return ChapterResponse.of_chapter(edited)


@router.post("/{novel_id}/chapters/{number}/findings/accept")
async def accept_findings(
    novel_id: str,
    number: ChapterNumber,
    body: AcceptFindingsRequest,
    user: CurrentUser,
    novels: Novels,
) -> ChapterResponse:
    """Accept findings of the chapter's standing text as deliberate changes: they are
    marked ``accepted`` and the world records what they change from this chapter on, so
    later chapters are checked against it. 409 while a run is active on the novel; 422
    for a number that is not one of the chapter's findings (nothing is changed)."""
    return ChapterResponse.of_chapter(
        await novels.accept_findings(user.user_id, novel_id, number, body.findings)
    )


@router.get("/{novel_id}/chapters/{number}/versions")
async def list_versions(
    novel_id: str,
    number: ChapterNumber,
    user: CurrentUser,
    novels: Novels,
    include_text: bool = False,
) -> list[VersionResponse]:
    """Every version of the chapter (drafts and edits), oldest first."""
    found = await novels.versions(user.user_id, novel_id, number)
    return [
        VersionResponse.of(v, current=v.id == found.current_version_id, include_text=include_text)
        for v in found.versions
    ]


@router.get("/{novel_id}/world")
async def get_world(
    novel_id: str,
    user: CurrentUser,
    novels: Novels,
    chapter: Annotated[
        int | None, Query(ge=0, description="default: the latest accepted chapter")
    ] = None,
) -> WorldResponse:
    """The world as of a chapter: entities, attribute facts, relationships, open set-ups,
    and the findings of that chapter's text."""
    world = await novels.world(user.user_id, novel_id, chapter)
    return WorldResponse.of(world.snapshot, world.findings)


@router.get("/{novel_id}/export", response_model=None)
async def export_novel(
    novel_id: str,
    user: CurrentUser,
    novels: Novels,
    fmt: Annotated[Literal["markdown", "epub"], Query(alias="format")] = "markdown",
) -> Response:
    """Download the accepted chapters as Markdown or EPUB (409 before the first chapter)."""
    book = await novels.export(user.user_id, novel_id, fmt)
    return Response(
        book.content,
        media_type=book.media_type,
        headers={"Content-Disposition": f'attachment; filename="{book.filename}"'},
    )
