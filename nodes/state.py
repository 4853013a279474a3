"""State of the ``novel`` graph.

The state holds ids, plans, counters and short summaries only. Chapter texts live in the
app store and world facts in world memory, so a checkpoint does not grow with the book:
``recent_summaries`` is bounded and the outline is fixed once planned.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Required, TypedDict

PausePoint = Literal["outline", "chapter"]
GateAction = Literal["approve", "edit", "revise"]
ReviewDecision = Literal["accept", "revise", "accept_with_issues"]


class NovelInput(TypedDict, total=False):
    """What a caller passes to start a book."""

    premise: Required[str]
    chapters: Required[int]
    genre: str | None
    language: str | None
    """BCP 47 tag of the book's language; default: detected from the premise."""
    pause_after: list[PausePoint]
    max_revisions: int


class VerdictState(TypedDict):
    """The reviewer's last verdict, reduced to what routing and revision need."""

    decision: ReviewDecision
    lowest_score: int
    scores: dict[str, int]
    issues: list[dict[str, Any]]
    summary: str


class NovelState(TypedDict, total=False):
    """The whole graph state (every key optional until the node that sets it ran)."""

    # input
    premise: Required[str]
    chapters: Required[int]
    genre: str | None
    language: str | None
    pause_after: list[PausePoint]
    max_revisions: int
    # set by intake
    novel_id: str
    # plan
    bible: dict[str, Any]
    outline: list[dict[str, Any]]
    plan_notes: str | None
    outline_gate: GateAction | None
    # per chapter
    chapter: int
    beats: dict[str, Any] | None
    draft_id: str | None
    drafts: int
    """Drafts written for the current chapter; never reset within a chapter, so every
    draft gets its own deterministic version id."""
    revision: int
    """Reviewer-requested revisions of the current chapter."""
    verdict: VerdictState | None
    notes: str | None
    """Author's notes for the next draft of the current chapter."""
    chapter_gate: GateAction | None
    # progress
    accepted: int
    recent_summaries: list[str]
    done: bool


class NovelOutput(TypedDict):
    """What a finished run reports."""

    novel_id: str
    bible: dict[str, Any]
    outline: list[dict[str, Any]]
    accepted: int
    done: NotRequired[bool]
