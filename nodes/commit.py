"""Commit an accepted draft: it becomes the chapter's text and its passages are indexed."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from errors import NotFound, StorageError
from memory.retrieval.chunking import split_passages
from nodes.common import novel_id_of, progress
from nodes.context import ScribeContext
from nodes.state import NovelState


async def commit_chapter(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Store the accepted version and (re)index its passages. Idempotent."""
    ctx = runtime.context
    novel_id = novel_id_of(state)
    chapter = state["chapter"]
    draft_id = state.get("draft_id")
    if not draft_id:
        raise StorageError(f"no draft to commit for chapter {chapter}", chapter=chapter)
    version = await ctx.store.get_version(draft_id)
    try:
        summary = (await ctx.store.get_chapter(novel_id, chapter)).summary
    except NotFound:  # first commit of this chapter: the worldsmith writes the summary next
        summary = ""
    await ctx.store.accept_chapter(novel_id, chapter, version.id, version.title, summary)
    count = await ctx.passages.index_chapter(novel_id, chapter, split_passages(version.text))
    progress(
        runtime,
        "writer",
        "committed",
        chapter=chapter,
        passages=count,
        words=len(version.text.split()),
    )
    return {}
