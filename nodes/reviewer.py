"""The reviewer: judges a draft and decides, by fixed rules, to accept or send it back."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from langgraph.runtime import Runtime

from errors import ModelOutputError, StorageError
from memory.world.port import WorldSnapshot
from nodes.common import language_of, novel_id_of, progress
from nodes.consistency import with_findings
from nodes.context import ScribeContext
from nodes.integrity import draft_findings
from nodes.llm.gateway import ModelGateway
from nodes.schemas import (
    CLAIM_PARTS,
    ChapterBeats,
    ChapterClaims,
    ClaimsInput,
    ReviewInput,
    Verdict,
)
from nodes.state import NovelState, ReviewDecision, VerdictState
from nodes.world_view import chapter_brief

REVIEW_CONSTRAINTS: dict[str, dict[str, Any]] = {
    "issues": {"maxItems": 8},
    "issues[].quote": {"maxLength": 300},
    "issues[].problem": {"maxLength": 300},
    "issues[].suggestion": {"maxLength": 300},
}
"""Schema narrowing for the model's verdict: a handful of issues one revision can act on,
each quoting a phrase or a sentence (the deterministic findings added after it may be
longer and more)."""


CLAIMS_CONSTRAINTS: dict[str, dict[str, Any]] = {
    "present": {"maxItems": 16},
    **{f"{part}": {"maxItems": 6} for part in ("travel", "items", "knowledge", "time")},
    "attributes": {"maxItems": 8},
    **{
        f"{part}[].quote": {"maxLength": 200}
        for part in (
            "present",
            "travel",
            "deaths",
            "renames",
            "items",
            "knowledge",
            "attributes",
            "time",
            "paid_off",
            "planted",
        )
    },
}
"""Schema narrowing for the claims: enough for a chapter's cast and events, each claim
quoting a sentence, so a small model cannot list the same walk-on forty times."""


def decide(
    verdict: Verdict, *, revision: int, max_revisions: int, accept_score: int
) -> ReviewDecision:
    """Accept a draft whose weakest score reaches ``accept_score`` with no major issue;
    otherwise revise, until ``max_revisions`` revisions were spent."""
    majors = any(issue.severity == "major" for issue in verdict.issues)
    if verdict.scores.lowest() >= accept_score and not majors:
        return "accept"
    if revision >= max_revisions:
        return "accept_with_issues"
    return "revise"


def quote_problems(verdict: Verdict, draft: str) -> list[str]:
    """Every issue must quote the draft verbatim."""
    return [
        f"issue {n}: quote {issue.quote[:80]!r} does not occur verbatim in the draft"
        for n, issue in enumerate(verdict.issues, 1)
        if issue.quote not in draft
    ]


def grounded(verdict: Verdict, draft: str) -> Verdict:
    """The verdict without issues whose quote is not in the draft.

    Used once the repair round is spent: an issue that cannot point at the draft is the
    model's invention, and a verdict's scores and summary stay usable without it.
    """
    return verdict.model_copy(
        update={"issues": [issue for issue in verdict.issues if issue.quote in draft]}
    )


@dataclass(frozen=True)
class ReadClaims:
    """What :func:`read_claims` got: the claims, or (``unread`` says why) none."""

    claims: ChapterClaims
    unread: str | None = None
    """Why the model gave no usable claims; the claims are then empty, with the plan's
    summary, so the book goes on with the text checks only."""


async def read_claims(
    ctx: ScribeContext,
    chapter: int,
    beats: ChapterBeats,
    text: str,
    snapshot: WorldSnapshot,
    language: str | None = None,
) -> ReadClaims:
    """The reviewer's model's reading of ``text``: what it states that the world can
    confirm or contradict (one ``chapter_claims`` answer, or its three parts when the
    reviewer's model is asked for answers in parts). The same reading of the accepted
    draft is what the chapter records in world memory.

    A model that never gives usable claims (its answers are traced) does not stop the
    book: the chapter is checked by the text rules alone, records nothing in the world
    (of the parts it could not read), and ``unread`` says so, for the caller to tell the
    author.
    """
    inputs = ClaimsInput(
        language=language,
        chapter=chapter,
        beats=beats,
        draft=text,
        world=chapter_brief(snapshot, beats),
    )
    return await read_draft(ctx.models, inputs)


async def read_draft(models: ModelGateway, inputs: ClaimsInput) -> ReadClaims:
    """The claims of ``inputs.draft`` as the reviewer's model reads them (see
    :func:`read_claims`), in one answer or in parts as the gateway says."""
    beats = inputs.beats
    if not models.splits("reviewer"):
        try:
            claims = await models.structured(
                "chapter_claims", inputs, ChapterClaims, constraints=CLAIMS_CONSTRAINTS
            )
        except ModelOutputError as exc:
            return ReadClaims(ChapterClaims(summary=planned_summary(beats)), exc.message)
        return ReadClaims(claims)
    # One part after the other, not at once: a replay finds each answer by its place in
    # the node's sequence of calls.
    read: dict[str, Any] = {}
    unread: list[str] = []
    for task, part in CLAIM_PARTS.items():
        constraints = {
            path: bound
            for path, bound in CLAIMS_CONSTRAINTS.items()
            if path.partition("[")[0] in part.model_fields
        }
        try:
            answer = await models.structured(task, inputs, part, constraints=constraints)
        except ModelOutputError as exc:
            unread.append(exc.message)
            continue
        read.update({name: getattr(answer, name) for name in part.model_fields})
    read.setdefault("summary", planned_summary(beats))
    return ReadClaims(ChapterClaims.model_validate(read), "; ".join(unread) or None)


def planned_summary(beats: ChapterBeats) -> str:
    """The chapter's summary as planned (its beats), for a chapter whose claims are unread."""
    summary = " ".join(b.summary.strip() for b in beats.beats if b.summary.strip())
    summary = summary or beats.title
    return summary if len(summary) <= 800 else summary[:799].rstrip() + "\u2026"


async def reviewer(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Review the current draft; the decision goes into state for routing."""
    ctx = runtime.context
    novel_id = novel_id_of(state)
    chapter = state["chapter"]
    revision = state.get("revision", 0)
    draft_id = state.get("draft_id")
    if not draft_id:
        raise StorageError("the reviewer was reached without a draft in state")
    draft = (await ctx.store.get_version(draft_id)).text
    beats = ChapterBeats(**(state.get("beats") or {}))
    progress(runtime, "reviewer", "reviewing", chapter=chapter, revision=revision)
    snapshot = await ctx.world.world_as_of(novel_id, chapter)
    # Deterministic checks first: the draft's claims against the world, then the text
    # itself. The model sees the findings, and they stay in the verdict (as issues, majors
    # forcing a revision) whether or not the model repeats them.
    read = await read_claims(ctx, chapter, beats, draft, snapshot, language_of(state))
    claims = read.claims
    if read.unread is not None:
        progress(runtime, "reviewer", "claims_unread", chapter=chapter, error=read.unread)
    earlier = [
        (c.number, c.text) for c in await ctx.store.list_chapters(novel_id) if c.number < chapter
    ]
    found = draft_findings(
        draft,
        claims,
        snapshot,
        chapter,
        beats,
        target=ctx.options.words_per_chapter,
        earlier=earlier,
        language=language_of(state),
    )
    await ctx.store.save_review(
        draft_id, claims.model_dump(mode="json"), [asdict(f) for f in found]
    )
    findings = [f.issue() for f in found]
    verdict = await ctx.models.structured(
        "chapter_review",
        ReviewInput(
            language=language_of(state),
            chapter=chapter,
            beats=beats,
            draft=draft,
            world=chapter_brief(snapshot, beats),
            revision=revision,
            findings=findings,
        ),
        Verdict,
        check=lambda v: quote_problems(v, draft),
        constraints=REVIEW_CONSTRAINTS,
        salvage=lambda v: grounded(v, draft),
    )
    verdict = with_findings(verdict, findings)
    decision = decide(
        verdict,
        revision=revision,
        max_revisions=state.get("max_revisions", ctx.options.max_revisions),
        accept_score=ctx.options.accept_score,
    )
    progress(
        runtime,
        "reviewer",
        decision,
        chapter=chapter,
        revision=revision,
        score=verdict.scores.lowest(),
        findings=[f"{f.severity} {f.kind}: {f.problem}" for f in found],
    )
    verdict_state: VerdictState = {
        "decision": decision,
        "lowest_score": verdict.scores.lowest(),
        "scores": verdict.scores.model_dump(),
        "issues": [i.model_dump() for i in verdict.issues],
        "summary": verdict.summary,
    }
    update: dict[str, Any] = {"verdict": verdict_state}
    if decision == "revise":
        update["revision"] = revision + 1
    else:
        update["notes"] = None
    return update
