"""The director: plans the book (bible and outline) and each chapter's beats."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from errors import ModelOutputError
from nodes.common import CHAPTER_START, language_of, novel_id_of, progress
from nodes.context import ScribeContext
from nodes.schemas import (
    Beat,
    BeatsInput,
    ChapterBeats,
    ChapterOutline,
    StoryBible,
    StoryPlan,
    StoryPlanInput,
    WorldBrief,
)
from nodes.state import NovelState
from nodes.world_view import world_brief


def outline_problems(plan: StoryPlan, chapters: int) -> list[str]:
    """Domain checks on a plan that a schema cannot express."""
    numbers = [c.number for c in plan.outline]
    if numbers != list(range(1, chapters + 1)):
        return [
            f"outline must have exactly {chapters} chapters numbered 1..{chapters}, got {numbers}"
        ]
    return []


def plan_constraints(chapters: int) -> dict[str, dict[str, Any]]:
    """Schema narrowing for constrained decoding: exactly ``chapters`` outline entries."""
    return {
        "outline": {"minItems": chapters, "maxItems": chapters},
        "outline[].number": {"minimum": 1, "maximum": chapters},
    }


def renumbered(plan: StoryPlan, chapters: int) -> StoryPlan:
    """A plan with the right number of entries but wrong numbers, numbered 1..n in order
    (small models restart or skip numbers; the order of the entries is the outline)."""
    if len(plan.outline) != chapters:
        return plan
    outline = [c.model_copy(update={"number": n}) for n, c in enumerate(plan.outline, 1)]
    return plan.model_copy(update={"outline": outline})


BEATS_PER_CHAPTER = 6
"""The most beats (and planned events) a chapter's plan asks for."""


def beats_constraints(
    chapter: int, names: list[str], setups: list[str]
) -> dict[str, dict[str, Any]]:
    """Schema narrowing: this chapter's number, living characters only, known set-ups,
    and a plan one chapter can hold (a small model rambles through twelve beats of six
    hundred characters until its token limit cuts the answer off)."""
    narrowed: dict[str, dict[str, Any]] = {
        "chapter": {"enum": [chapter]},
        "title": {"maxLength": 100},
        "beats": {"minItems": 1, "maxItems": BEATS_PER_CHAPTER},
        "beats[].summary": {"maxLength": 300},
        "events": {"maxItems": BEATS_PER_CHAPTER},
    }
    if names:
        narrowed["pov"] = {"enum": names}
        narrowed["characters[]"] = {"enum": names}
    for field in ("plant", "payoff"):
        narrowed[field] = {"maxItems": len(setups)} if setups else {"maxItems": 0}
        if setups:
            narrowed[f"{field}[]"] = {"enum": setups}
    return narrowed


def mended_beats(
    beats: ChapterBeats, chapter: int, living: set[str], setups: set[str]
) -> ChapterBeats:
    """Beats with what cannot stand removed: another chapter's number corrected, dead or
    unknown characters and unknown set-up keys left out (the prose is then checked)."""
    characters = [n for n in beats.characters if n.strip().lower() in living]
    pov = beats.pov if beats.pov.strip().lower() in living or not characters else characters[0]
    return beats.model_copy(
        update={
            "chapter": chapter,
            "pov": pov,
            "characters": characters or [pov],
            "plant": [k for k in beats.plant if k in setups],
            "payoff": [k for k in beats.payoff if k in setups],
        }
    )


def beats_problems(
    beats: ChapterBeats, chapter: int, living: set[str], setups: set[str]
) -> list[str]:
    """Beats must be for this chapter, use living characters and known set-up keys."""
    problems: list[str] = []
    if beats.chapter != chapter:
        problems.append(f"chapter must be {chapter}, got {beats.chapter}")
    if living:
        for name in {beats.pov, *beats.characters}:
            if name.strip().lower() not in living:
                problems.append(f"{name!r} is not a living character of the world")
    unknown = [k for k in (*beats.plant, *beats.payoff) if k not in setups]
    if unknown:
        problems.append(f"unknown set-up keys {unknown}; use keys from open_setups")
    return problems


async def director_plan(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Write the story bible and the chapter outline (again, with the author's notes)."""
    ctx = runtime.context
    novel_id = novel_id_of(state)
    chapters = state["chapters"]
    notes = state.get("plan_notes")
    progress(runtime, "director", "planning", revising=notes is not None)
    previous = [ChapterOutline(**c) for c in state.get("outline", [])] or None
    plan = await ctx.models.structured(
        "story_plan",
        StoryPlanInput(
            language=language_of(state),
            premise=state["premise"],
            chapters=chapters,
            genre=state.get("genre"),
            notes=notes,
            previous_outline=previous if notes else None,
        ),
        StoryPlan,
        check=lambda p: outline_problems(p, chapters),
        constraints=plan_constraints(chapters),
        salvage=lambda p: renumbered(p, chapters),
    )
    await ctx.store.update_novel(novel_id, title=plan.bible.title)
    progress(runtime, "director", "planned", title=plan.bible.title)
    return {
        "bible": plan.bible.model_dump(),
        "outline": [c.model_dump() for c in plan.outline],
        "plan_notes": None,
        "outline_gate": None,
    }


async def director_beats(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Plan the current chapter: who, where, what happens, which set-ups move."""
    ctx = runtime.context
    novel_id = novel_id_of(state)
    chapter = state["chapter"]
    outline = [ChapterOutline(**c) for c in state["outline"]]
    progress(runtime, "director", "beats", chapter=chapter)
    snapshot = await ctx.world.world_as_of(novel_id, chapter)
    brief = world_brief(snapshot, include_dead=False)
    living: set[str] = set()
    names: list[str] = []
    for character in brief.characters:
        living.add(character.name.lower())
        living.update(alias.lower() for alias in character.aliases)
        names.extend([character.name, *character.aliases])
    setups = {s.key for s in brief.open_setups}
    try:
        beats = await _planned_beats(ctx, state, chapter, outline, brief, living, names, setups)
    except ModelOutputError as exc:
        # The outline already says what the chapter is about: a plan made from it keeps
        # the book going when the model cannot give one (its failed answers are traced).
        beats = outline_beats(chapter, outline[chapter - 1], brief)
        progress(runtime, "director", "beats_from_outline", chapter=chapter, error=exc.message)
    return {"beats": beats.model_dump(), **CHAPTER_START}


async def _planned_beats(
    ctx: ScribeContext,
    state: NovelState,
    chapter: int,
    outline: list[ChapterOutline],
    brief: WorldBrief,
    living: set[str],
    names: list[str],
    setups: set[str],
) -> ChapterBeats:
    return await ctx.models.structured(
        "chapter_beats",
        BeatsInput(
            language=language_of(state),
            chapter=chapter,
            chapters=state["chapters"],
            bible=StoryBible(**state["bible"]),
            outline=outline[chapter - 1],
            next_outline=outline[chapter] if chapter < len(outline) else None,
            recent_summaries=state.get("recent_summaries", []),
            world=brief,
        ),
        ChapterBeats,
        check=lambda b: beats_problems(b, chapter, living, setups),
        constraints=beats_constraints(chapter, names, sorted(setups)),
        salvage=lambda b: mended_beats(b, chapter, living, setups),
    )


def outline_beats(chapter: int, entry: ChapterOutline, brief: WorldBrief) -> ChapterBeats:
    """A plan made from the chapter's outline entry alone: the first living character
    where the world puts them, one beat (the entry's summary), and the set-ups the world
    plans for this chapter."""
    character = brief.characters[0] if brief.characters else None
    pov = character.name if character else "the narrator"
    location = (character.location if character else None) or (
        brief.places[0].name if brief.places else "where the story stands"
    )
    return ChapterBeats(
        chapter=chapter,
        title=entry.title[:100],
        pov=pov[:80],
        location=location[:80],
        characters=[pov[:80]],
        beats=[Beat(summary=entry.summary[:600], characters=[pov[:80]], location=location[:80])],
        plant=[s.key for s in brief.open_setups if s.plant_chapter == chapter][:12],
        payoff=[s.key for s in brief.open_setups if s.payoff_chapter == chapter][:12],
    )
