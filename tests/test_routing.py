"""Routing is deterministic code on state."""

from __future__ import annotations

from typing import Any

import pytest

from graphs import routing
from nodes.reviewer import decide, quote_problems
from nodes.schemas import ReviewIssue, Scores, Verdict
from nodes.state import NovelState, VerdictState


def _verdict(lowest: int, *, major: bool = False) -> Verdict:
    issues = [
        ReviewIssue(
            severity="major" if major else "minor", category="prose", quote="x", problem="p"
        )
    ]
    return Verdict(
        scores=Scores(prose=9, coherence=9, pacing=lowest, character=9, consistency=9),
        issues=issues,
        summary="s",
    )


@pytest.mark.parametrize(
    ("lowest", "major", "revision", "expected"),
    [
        (8, False, 0, "accept"),
        (6, False, 0, "accept"),
        (5, False, 0, "revise"),
        (9, True, 0, "revise"),
        (5, False, 1, "revise"),
        (5, False, 2, "accept_with_issues"),
        (9, True, 2, "accept_with_issues"),
    ],
)
def test_decide(lowest: int, major: bool, revision: int, expected: str) -> None:
    got = decide(_verdict(lowest, major=major), revision=revision, max_revisions=2, accept_score=6)
    assert got == expected


def test_decide_with_no_revisions_allowed_never_revises() -> None:
    assert decide(_verdict(1), revision=0, max_revisions=0, accept_score=6) == "accept_with_issues"


def test_quotes_must_be_verbatim() -> None:
    verdict = _verdict(5)
    assert quote_problems(verdict, "a draft with x in it") == []
    assert len(quote_problems(verdict, "a draft without it")) == 1


def _state(**values: Any) -> NovelState:
    state: dict[str, Any] = {"premise": "p", "chapters": 3, "chapter": 1, **values}
    return state  # type: ignore[return-value]


def _vs(decision: str) -> VerdictState:
    return {"decision": decision, "lowest_score": 5, "scores": {}, "issues": [], "summary": ""}  # type: ignore[typeddict-item]


def test_after_review() -> None:
    assert routing.after_review(_state(verdict=_vs("revise"))) == "writer"
    assert routing.after_review(_state(verdict=_vs("accept"))) == "commit_chapter"
    assert routing.after_review(_state(verdict=_vs("accept_with_issues"))) == "commit_chapter"


def test_after_outline_gate() -> None:
    assert routing.after_outline_gate(_state(outline_gate="revise")) == "director_plan"
    assert routing.after_outline_gate(_state(outline_gate="approve")) == "worldsmith_seed"
    assert routing.after_outline_gate(_state(outline_gate="edit")) == "worldsmith_seed"


def test_after_chapter_gate() -> None:
    assert routing.after_chapter_gate(_state(chapter_gate="revise")) == "writer"
    assert routing.after_chapter_gate(_state(chapter_gate="edit")) == "commit_chapter"
    assert routing.after_chapter_gate(_state(chapter_gate="approve", chapter=2)) == "next_chapter"
    assert routing.after_chapter_gate(_state(chapter_gate="approve", chapter=3)) == "finish"
