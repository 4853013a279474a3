"""Deterministic routing on state: verdict decisions, gate actions and counters."""

from __future__ import annotations

from typing import Literal

from nodes.state import NovelState


def after_outline_gate(state: NovelState) -> Literal["director_plan", "worldsmith_seed"]:
    """Revise notes send the plan back to the director; approve or edit go on."""
    return "director_plan" if state.get("outline_gate") == "revise" else "worldsmith_seed"


def after_review(state: NovelState) -> Literal["writer", "commit_chapter"]:
    """Back to the writer only when the reviewer's decision is ``revise``."""
    verdict = state.get("verdict")
    if verdict is not None and verdict["decision"] == "revise":
        return "writer"
    return "commit_chapter"


def after_chapter_gate(
    state: NovelState,
) -> Literal["writer", "commit_chapter", "next_chapter", "finish"]:
    """Author notes → writer; author text → commit; otherwise the next chapter or the end."""
    action = state.get("chapter_gate")
    if action == "revise":
        return "writer"
    if action == "edit":
        return "commit_chapter"
    if state["chapter"] >= state["chapters"]:
        return "finish"
    return "next_chapter"
