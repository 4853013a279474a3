"""Author gates: the graph pauses with ``interrupt()`` after the outline or a chapter.

Resume values: ``{"action": "approve"}``, ``{"action": "edit", "outline": [...]}`` (at the
outline) or ``{"action": "edit", "text": "..."}`` (at a chapter), and
``{"action": "revise", "notes": "..."}``. At a chapter, ``{"action": "approve", "accept":
[1, 3]}`` also accepts those findings (numbered from 1 in the gate's ``findings``) as
deliberate changes: the world records the draft's version from that chapter on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from errors import InvalidInput
from nodes.common import CHAPTER_START, language_of, novel_id_of, progress, stable_id
from nodes.context import ScribeContext
from nodes.integrity import numbered, with_accepted
from nodes.schemas import ChapterBeats, ChapterOutline
from nodes.state import NovelState
from nodes.worldsmith import accept_findings

MAX_CHAPTER_CHARS = 200_000


class _Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Approve(_Decision):
    """Carry on as planned."""

    action: Literal["approve"]


class ApproveChapter(Approve):
    """Carry on; the findings numbered in ``accept`` are deliberate changes."""

    accept: list[int] = Field(default_factory=list, max_length=100)


class Revise(_Decision):
    """Send the outline back to the director, or the chapter back to the writer."""

    action: Literal["revise"]
    notes: str = Field(min_length=1, max_length=4000)


class EditOutline(_Decision):
    """Replace the outline with the author's."""

    action: Literal["edit"]
    outline: list[ChapterOutline] = Field(min_length=1, max_length=100)


class EditChapter(_Decision):
    """Replace the chapter's text with the author's."""

    action: Literal["edit"]
    text: str = Field(min_length=1, max_length=MAX_CHAPTER_CHARS)
    title: str | None = Field(default=None, max_length=200)


_OUTLINE = TypeAdapter[Approve | Revise | EditOutline](Approve | Revise | EditOutline)
_CHAPTER = TypeAdapter[ApproveChapter | Revise | EditChapter](ApproveChapter | Revise | EditChapter)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"][1:]) or "value"
    return f"{where}: {first['msg']}"


def parse_outline_decision(value: object) -> Approve | Revise | EditOutline:
    """Validate a resume value given at the outline gate."""
    try:
        decision = _OUTLINE.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput(f"invalid resume value for the outline: {_first_error(exc)}") from exc
    if isinstance(decision, EditOutline):
        numbers = [c.number for c in decision.outline]
        if numbers != list(range(1, len(numbers) + 1)):
            raise InvalidInput(f"edited outline must be numbered 1..{len(numbers)}, got {numbers}")
    return decision


def parse_chapter_decision(
    value: object, gate: Mapping[str, Any] | None = None
) -> ApproveChapter | Revise | EditChapter:
    """Validate a resume value given at a chapter gate; ``gate`` is the gate's payload,
    whose ``findings`` the numbers in ``accept`` must name."""
    try:
        decision = _CHAPTER.validate_python(value)
    except ValidationError as exc:
        raise InvalidInput(f"invalid resume value for the chapter: {_first_error(exc)}") from exc
    if isinstance(decision, ApproveChapter) and decision.accept and gate is not None:
        findings = gate.get("findings") or []
        # Raises for a number that is not one of the gate's findings.
        with_accepted(findings, decision.accept)
    return decision


async def outline_gate(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Pause after the outline when asked to; apply the author's decision."""
    if "outline" not in state.get("pause_after", []):
        return {"outline_gate": "approve"}
    progress(runtime, "director", "awaiting_author", gate="outline")
    decision = parse_outline_decision(
        interrupt({"gate": "outline", "bible": state["bible"], "outline": state["outline"]})
    )
    if isinstance(decision, Revise):
        return {"outline_gate": "revise", "plan_notes": decision.notes}
    if isinstance(decision, EditOutline):
        outline = [c.model_dump() for c in decision.outline]
        return {"outline_gate": "edit", "outline": outline, "chapters": len(outline)}
    return {"outline_gate": "approve"}


async def chapter_gate(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Pause after an accepted chapter when asked to; apply the author's decision."""
    ctx = runtime.context
    chapter = state["chapter"]
    if state.get("chapter_gate") == "edit":
        return {"chapter_gate": "approve"}  # the author's own text needs no second look
    if "chapter" in state.get("pause_after", []):
        novel_id = novel_id_of(state)
        progress(runtime, "writer", "awaiting_author", gate="chapter", chapter=chapter)
        record = await ctx.store.get_chapter(novel_id, chapter)
        payload = {
            "gate": "chapter",
            "chapter": chapter,
            "title": record.title,
            "version_id": record.current_version_id,
            "summary": record.summary,
            "verdict": state.get("verdict"),
            # What the rules found in the accepted text, with quotes, so the author can
            # accept a deliberate change (by number) or send the chapter back.
            "findings": numbered(record.findings),
        }
        decision = parse_chapter_decision(interrupt(payload), payload)
        if isinstance(decision, ApproveChapter) and decision.accept:
            await accept_findings(
                ctx,
                novel_id,
                chapter,
                ChapterBeats(**(state.get("beats") or {})),
                decision.accept,
                language_of(state),
            )
        if isinstance(decision, Revise):
            return {
                "chapter_gate": "revise",
                "notes": decision.notes,
                "revision": 0,
                "verdict": None,
            }
        if isinstance(decision, EditChapter):
            version = await ctx.store.save_version(
                stable_id(novel_id, "chapter", chapter, "edit", decision.text),
                novel_id,
                chapter,
                "edit",
                decision.title or record.title,
                decision.text,
            )
            return {"chapter_gate": "edit", "draft_id": version.id}
    return {"chapter_gate": "approve"}


async def next_chapter(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Move on to the next chapter: reset the per-chapter fields."""
    progress(runtime, "director", "next_chapter", chapter=state["chapter"] + 1)
    return {
        "chapter": state["chapter"] + 1,
        "beats": None,
        **CHAPTER_START,
    }
