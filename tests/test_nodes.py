"""Each node on its own, with the offline model and real embedded stores."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.runtime import ExecutionInfo, Runtime

from errors import InvalidInput, NotFound
from nodes.commit import commit_chapter
from nodes.context import ScribeContext
from nodes.director import director_beats, director_plan, outline_beats, outline_problems
from nodes.human import chapter_gate, next_chapter, outline_gate
from nodes.reviewer import reviewer
from nodes.schemas import (
    ChapterOutline,
    CharacterBrief,
    PlaceBrief,
    SetupBrief,
    StoryBible,
    StoryPlan,
    WorldBrief,
)
from nodes.session import finish, intake, validate_request
from nodes.state import NovelState
from nodes.worldsmith import worldsmith_seed, worldsmith_update
from nodes.writer import writer
from server.backends import Backends

PREMISE = "A cartographer named Ilse Marr maps a city that rearranges itself every night."


def _runtime(
    ctx: ScribeContext, events: list[dict[str, Any]], thread_id: str
) -> Runtime[ScribeContext]:
    info = ExecutionInfo(checkpoint_id="", checkpoint_ns="", task_id="t", thread_id=thread_id)
    return Runtime(context=ctx, stream_writer=events.append, execution_info=info)


class Driver:
    """Runs nodes one after another, merging their updates into a state like the graph does."""

    def __init__(self, backends: Backends, chapters: int = 2) -> None:
        self.events: list[dict[str, Any]] = []
        self.thread = str(uuid.uuid4())
        self.runtime = _runtime(backends.context, self.events, self.thread)
        self.state: dict[str, Any] = {"premise": PREMISE, "chapters": chapters}
        self.store = backends.store
        self.recorded = False

    async def run(self, node: Any) -> dict[str, Any]:
        if not self.recorded:
            # What the run service does before it queues a book's first run.
            await self.store.create_novel(self.thread, PREMISE, self.state["chapters"], None)
            self.recorded = True
        update: dict[str, Any] = await node(self.as_state(), self.runtime)
        self.state.update(update)
        return update

    def as_state(self) -> NovelState:
        return self.state  # type: ignore[return-value]


async def _through_draft(backends: Backends) -> Driver:
    d = Driver(backends)
    for node in (intake, director_plan, outline_gate, worldsmith_seed, director_beats, writer):
        await d.run(node)
    return d


async def test_intake_opens_the_recorded_session(backends: Backends) -> None:
    d = Driver(backends)
    update = await d.run(intake)
    assert update["novel_id"] == d.thread
    assert update["chapter"] == 1 and update["accepted"] == 0
    assert update["premise"] == PREMISE and update["language"] == "en"
    assert await d.run(intake) == update  # a replayed intake is harmless

    unrecorded = Driver(backends)
    unrecorded.recorded = True  # nobody recorded it: the graph was run around the service
    with pytest.raises(NotFound, match="books start through the run service"):
        await unrecorded.run(intake)


def test_a_book_request_is_validated_at_the_edge() -> None:
    with pytest.raises(InvalidInput, match="chapters"):
        validate_request(PREMISE, 0)
    with pytest.raises(InvalidInput, match="unknown pause point"):
        validate_request(PREMISE, 2, pause_after=["prologue"])
    with pytest.raises(InvalidInput, match="max_revisions"):
        validate_request(PREMISE, 2, max_revisions=11)
    book = validate_request(f"  {PREMISE}  ", 2, " fantasy ", max_revisions=0)
    assert book.graph_input() == {
        "premise": PREMISE,
        "chapters": 2,
        "genre": "fantasy",
        "language": "en",
        "pause_after": [],
        "max_revisions": 0,
    }


async def test_director_plan_outlines_exactly_the_chapters(backends: Backends) -> None:
    d = Driver(backends, chapters=5)
    await d.run(intake)
    update = await d.run(director_plan)
    assert [c["number"] for c in update["outline"]] == [1, 2, 3, 4, 5]
    StoryBible(**update["bible"])
    assert (await backends.store.get_novel(d.thread)).title == update["bible"]["title"]


def test_outline_problems_catch_wrong_numbering() -> None:
    bible = StoryBible(title="t", logline="l", genre="g", tone="t", point_of_view="p", themes=["x"])
    plan = StoryPlan(bible=bible, outline=[ChapterOutline(number=1, title="a", summary="s")])
    assert outline_problems(plan, 1) == []
    assert outline_problems(plan, 2)


async def test_worldsmith_seed_is_idempotent(backends: Backends) -> None:
    d = Driver(backends)
    for node in (intake, director_plan, outline_gate, worldsmith_seed):
        await d.run(node)
    world = backends.context.world
    first = await world.world_as_of(d.thread, 0)
    assert any(e.kind == "character" for e in first.entities)
    assert any(f.predicate == "located_in" for f in first.facts)
    await d.run(worldsmith_seed)  # replayed after a crash: same world, no duplicates
    again = await world.world_as_of(d.thread, 0)
    assert len(again.entities) == len(first.entities)
    assert len(again.facts) == len(first.facts)


async def test_beats_and_writer_store_a_draft_by_deterministic_id(backends: Backends) -> None:
    d = await _through_draft(backends)
    beats = d.state["beats"]
    assert beats["chapter"] == 1 and beats["characters"]
    draft_id = d.state["draft_id"]
    version = await backends.store.get_version(draft_id)
    assert version.kind == "draft" and version.number == 1
    assert beats["pov"].split()[0] in version.text

    # the same writer step replayed (drafts counter not advanced) reuses the stored draft
    d.state["drafts"] = 0
    await d.run(writer)
    assert d.state["draft_id"] == draft_id
    assert len(await backends.store.list_versions(d.thread, 1)) == 1


async def test_reviewer_verdict_quotes_the_draft(backends: Backends) -> None:
    d = await _through_draft(backends)
    update = await d.run(reviewer)
    verdict = update["verdict"]
    assert verdict["decision"] in ("accept", "revise", "accept_with_issues")
    text = (await backends.store.get_version(d.state["draft_id"])).text
    assert all(issue["quote"] in text for issue in verdict["issues"])
    assert verdict["lowest_score"] == min(verdict["scores"].values())
    assert ("revision" in update) == (verdict["decision"] == "revise")


async def test_commit_and_world_update_are_idempotent(backends: Backends) -> None:
    d = await _through_draft(backends)
    await d.run(commit_chapter)
    await d.run(commit_chapter)
    passages = backends.context.passages
    count = await passages.count(d.thread, 1)
    assert count > 0
    chapter = await backends.store.get_chapter(d.thread, 1)
    assert chapter.current_version_id == d.state["draft_id"]

    await d.run(worldsmith_update)
    world = backends.context.world
    facts = [f for f in (await world.world_as_of(d.thread, 1)).facts if f.source_chapter == 1]
    await d.run(worldsmith_update)
    again = [f for f in (await world.world_as_of(d.thread, 1)).facts if f.source_chapter == 1]
    assert sorted(map(repr, facts)) == sorted(map(repr, again))
    assert (await backends.store.get_chapter(d.thread, 1)).summary
    assert d.state["accepted"] == 1
    assert len(d.state["recent_summaries"]) == 1
    assert await passages.count(d.thread, 1) == count


async def test_gates_pass_through_without_pause_and_chapters_advance(backends: Backends) -> None:
    d = await _through_draft(backends)
    for node in (commit_chapter, worldsmith_update, chapter_gate):
        await d.run(node)
    assert d.state["chapter_gate"] == "approve"
    update = await d.run(next_chapter)
    assert update["chapter"] == 2 and update["drafts"] == 0 and update["beats"] is None


async def test_recent_summaries_stay_bounded(backends: Backends) -> None:
    d = await _through_draft(backends)
    d.state["recent_summaries"] = [f"Chapter {n}: old" for n in range(10)]
    await d.run(commit_chapter)
    await d.run(worldsmith_update)
    assert len(d.state["recent_summaries"]) == backends.context.options.recent_summaries


async def test_finish_closes_the_book_and_leaves_the_status_to_its_run(
    backends: Backends,
) -> None:
    d = Driver(backends)
    for node in (intake, director_plan):
        await d.run(node)
    update = await d.run(finish)
    assert update == {"done": True}
    record = await backends.store.get_novel(d.thread)
    # The status has one writer, the run executor (server.runs.worker.record_novel_status).
    assert record.status == "running" and record.title == d.state["bible"]["title"]


def test_the_seed_is_held_to_the_book_s_size_and_names() -> None:
    """Each world-seed call's decoding schema bounds its lists by the book's length and
    allows only names an earlier answer made (what keeps a small model's seed small and
    linked); the bounds never exceed the answer models' own."""
    from nodes.llm.structured import decoding_schema
    from nodes.schemas import PlaceSeed, WorldCast, WorldLinks, WorldPlaces
    from nodes.worldsmith import (
        cast_constraints,
        links_constraints,
        places_constraints,
        world_size,
    )

    short, long = world_size(3), world_size(60)
    assert all(short[kind] <= long[kind] for kind in short)
    assert short["locations"] == 5 and short["characters"] == 6 and short["setups"] == 3
    places = decoding_schema(WorldPlaces, places_constraints(3))["properties"]
    assert places["locations"]["maxItems"] == 5
    assert places["items"]["items"]["properties"]["description"]["maxLength"] == 240
    full = WorldPlaces.model_json_schema()["properties"]
    huge = decoding_schema(WorldPlaces, places_constraints(60))["properties"]
    assert all(huge[k]["maxItems"] == full[k]["maxItems"] for k in full)

    world = WorldPlaces(
        locations=[PlaceSeed(name="Harbour", aliases=["the docks"])],
        factions=[PlaceSeed(name="Guild")],
    )
    cast = decoding_schema(WorldCast, cast_constraints(world, 3))["properties"]["characters"]
    assert cast["maxItems"] == 6
    where = cast["items"]["properties"]["location"]["anyOf"]
    assert where[0]["enum"] == ["Harbour", "the docks"] and where[1] == {"type": "null"}
    links = decoding_schema(WorldLinks, links_constraints(["Mara", "Harbour"], 3))
    setups = links["properties"]["setups"]
    assert setups["maxItems"] == 3
    assert setups["items"]["properties"]["payoff_chapter"]["maximum"] == 3


def test_a_plan_made_from_the_outline_when_the_model_gives_none() -> None:
    brief = WorldBrief(
        chapter=2,
        characters=[CharacterBrief(name="Ada Quill", location="Saltmere")],
        places=[PlaceBrief(name="Saltmere", kind="location")],
        open_setups=[
            SetupBrief(
                key="brass-key",
                description="The key opens the door.",
                plant_chapter=1,
                payoff_chapter=2,
            )
        ],
    )
    entry = ChapterOutline(number=2, title="The Door", summary="Ada opens the sea door.")
    beats = outline_beats(2, entry, brief)
    assert (beats.chapter, beats.title, beats.pov, beats.location) == (
        2,
        "The Door",
        "Ada Quill",
        "Saltmere",
    )
    assert [b.summary for b in beats.beats] == ["Ada opens the sea door."]
    assert beats.payoff == ["brass-key"] and beats.plant == []
    empty = outline_beats(1, entry, WorldBrief(chapter=1))
    assert empty.pov == "the narrator" and empty.characters == ["the narrator"]
