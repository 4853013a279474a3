"""The writer: drafts the current chapter from its beats, the world and earlier passages."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from nodes.common import language_of, novel_id_of, progress, stable_id
from nodes.context import ScribeContext
from nodes.llm.answers import word_count
from nodes.schemas import ChapterBeats, DraftInput, RetrievedPassage, ReviewIssue, StoryBible
from nodes.state import NovelState
from nodes.world_view import chapter_brief


def retrieval_query(beats: ChapterBeats) -> str:
    """What to look for among earlier passages: who, where and what happens now."""
    parts = [beats.title, beats.location, *beats.characters, *(b.summary for b in beats.beats)]
    return " ".join(parts)


def draft_version_id(
    novel_id: str, chapter: int, draft_number: int, checkpoint_id: str | None = None
) -> str:
    """Deterministic id of a chapter's n-th draft written from ``checkpoint_id``.

    A node re-executed after a crash starts from the same checkpoint and gets the same id
    (the stored draft is reused); a fork from a past checkpoint starts from a new one, so
    its draft is a new version instead of silently reusing the abandoned branch's text.
    """
    if checkpoint_id is None:
        return stable_id(novel_id, "chapter", chapter, "draft", draft_number)
    return stable_id(novel_id, "chapter", chapter, "draft", draft_number, checkpoint_id)


async def writer(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Draft (or revise) the chapter and store the text; the state keeps its version id."""
    ctx = runtime.context
    novel_id = novel_id_of(state)
    chapter = state["chapter"]
    beats = ChapterBeats(**(state.get("beats") or {}))
    revision = state.get("revision", 0)
    drafts = state.get("drafts", 0)
    notes = state.get("notes")
    progress(runtime, "writer", "drafting", chapter=chapter, revision=revision)

    snapshot = await ctx.world.world_as_of(novel_id, chapter)
    hits = await ctx.passages.search(
        novel_id,
        retrieval_query(beats),
        before_chapter=chapter,
        limit=ctx.options.retrieval_limit,
    )
    previous_draft: str | None = None
    issues: list[ReviewIssue] = []
    draft_id = state.get("draft_id")
    if draft_id and (revision > 0 or notes):
        previous_draft = (await ctx.store.get_version(draft_id)).text
        verdict = state.get("verdict")
        issues = [ReviewIssue(**i) for i in (verdict["issues"] if verdict else [])]
    summaries = state.get("recent_summaries", [])
    text = await ctx.models.prose(
        "chapter_draft",
        DraftInput(
            language=language_of(state),
            chapter=chapter,
            title=beats.title,
            bible=StoryBible(**state["bible"]),
            beats=beats,
            world=chapter_brief(snapshot, beats),
            passages=[
                RetrievedPassage(chapter=h.passage.chapter, text=h.passage.text) for h in hits
            ],
            previous_summary=summaries[-1] if summaries else None,
            target_words=ctx.options.words_per_chapter,
            revision=revision,
            previous_draft=previous_draft,
            issues=issues,
            notes=notes,
        ),
        target_words=ctx.options.words_per_chapter,
    )
    version = await ctx.store.save_version(
        draft_version_id(
            novel_id,
            chapter,
            drafts + 1,
            (runtime.execution_info.checkpoint_id or None) if runtime.execution_info else None,
        ),
        novel_id,
        chapter,
        "draft",
        beats.title,
        text,
    )
    progress(
        runtime, "writer", "drafted", chapter=chapter, revision=revision, words=word_count(text)
    )
    return {"draft_id": version.id, "drafts": drafts + 1}
