"""The offline chat model: every task answered validly, deterministically, with no network.

Inputs are chained the way the pipeline chains them (plan → seed → beats → draft →
review → changes); the world brief between steps is built from the seed by hand.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from nodes.llm.offline import OfflineChatModel, chunks_of
from nodes.llm.offline_prose import split_sentences
from nodes.llm.tasks import TASKS, render_messages
from nodes.schemas import (
    Beat,
    BeatsInput,
    ChapterBeats,
    ChapterClaims,
    CharacterBrief,
    ClaimsInput,
    DraftInput,
    PlaceBrief,
    PlannedEvent,
    RetrievedPassage,
    ReviewInput,
    ReviewIssue,
    SetupBrief,
    StoryPlan,
    StoryPlanInput,
    Verdict,
    WorldBrief,
    WorldCast,
    WorldCastInput,
    WorldLinks,
    WorldLinksInput,
    WorldPlaces,
    WorldSeed,
    WorldSeedInput,
)

PREMISE = (
    "A lighthouse keeper named Mara Venn discovers that her drowned brother is alive "
    "in the city of Saltmere."
)
OTHER_PREMISE = "A disgraced cartographer must map a space station that rearranges itself."
SETUP_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{1,60}$")


# --- helpers --------------------------------------------------------------------------


async def ask(model: OfflineChatModel, task: str, inputs: BaseModel) -> str:
    """The model's whole answer to one task request."""
    reply = await model.ainvoke(render_messages(task, inputs))
    assert isinstance(reply.content, str)
    return reply.content


async def streamed(model: OfflineChatModel, task: str, inputs: BaseModel) -> list[str]:
    """The answer's chunks as streamed."""
    pieces: list[str] = []
    async for chunk in model.astream(render_messages(task, inputs)):
        assert isinstance(chunk.content, str)
        pieces.append(chunk.content)
    return pieces


def words(text: str) -> int:
    return len(text.split())


def brief_from_seed(
    seed: WorldSeed,
    chapter: int,
    *,
    dead: Iterable[str] = (),
    located: dict[str, str] | None = None,
) -> WorldBrief:
    """The world brief a node would build from the seed as stored at chapter 0."""
    dead = set(dead)
    located = located or {}
    characters = [
        CharacterBrief(
            name=c.name,
            aliases=c.aliases,
            description=c.description,
            attributes={
                **c.fixed,
                **c.mutable,
                "role": c.role,
                **({"status": "dead"} if c.name in dead else {}),
            },
            location=located.get(c.name, c.location),
            relations=[f"{r.type} {r.object}" for r in seed.relationships if r.subject == c.name],
        )
        for c in seed.characters
    ]
    places = [
        PlaceBrief(name=p.name, kind=kind, description=p.description)
        for kind, group in (
            ("location", seed.locations),
            ("faction", seed.factions),
            ("item", seed.items),
            ("rule", seed.rules),
        )
        for p in group
    ]
    setups = [
        SetupBrief(
            key=s.key,
            description=s.description,
            plant_chapter=s.plant_chapter,
            payoff_chapter=s.payoff_chapter,
        )
        for s in seed.setups
    ]
    return WorldBrief(chapter=chapter, characters=characters, places=places, open_setups=setups)


def living(world: WorldBrief) -> WorldBrief:
    """The brief the director sees: the dead left out."""
    alive = [c for c in world.characters if c.attributes.get("status") != "dead"]
    return world.model_copy(update={"characters": alive})


@dataclass
class Book:
    plan: StoryPlan
    seed: WorldSeed


async def plan_and_seed(model: OfflineChatModel, premise: str, chapters: int) -> Book:
    plan = StoryPlan.model_validate_json(
        await ask(model, "story_plan", StoryPlanInput(premise=premise, chapters=chapters))
    )
    book = WorldSeedInput(premise=premise, bible=plan.bible, outline=plan.outline)
    places = WorldPlaces.model_validate_json(await ask(model, "world_places", book))
    cast = WorldCast.model_validate_json(
        await ask(
            model,
            "world_cast",
            WorldCastInput(
                **book.model_dump(),
                locations=[p.name for p in places.locations],
                factions=[f.name for f in places.factions],
            ),
        )
    )
    names = [c.name for c in cast.characters]
    links = WorldLinks.model_validate_json(
        await ask(
            model,
            "world_links",
            WorldLinksInput(**book.model_dump(), characters=names, names=names),
        )
    )
    seed = WorldSeed(characters=cast.characters, **places.model_dump(), **links.model_dump())
    return Book(plan, seed)


def beats_input(book: Book, chapter: int, world: WorldBrief) -> BeatsInput:
    outline = book.plan.outline
    return BeatsInput(
        chapter=chapter,
        chapters=len(outline),
        bible=book.plan.bible,
        outline=outline[chapter - 1],
        next_outline=outline[chapter] if chapter < len(outline) else None,
        world=world,
    )


async def chapter_beats(
    model: OfflineChatModel, book: Book, chapter: int, world: WorldBrief
) -> ChapterBeats:
    return ChapterBeats.model_validate_json(
        await ask(model, "chapter_beats", beats_input(book, chapter, living(world)))
    )


def draft_input(book: Book, beats: ChapterBeats, world: WorldBrief, **extra: Any) -> DraftInput:
    return DraftInput(
        chapter=beats.chapter,
        title=beats.title,
        bible=book.plan.bible,
        beats=beats,
        world=world,
        **extra,
    )


@pytest.fixture
def model() -> OfflineChatModel:
    return OfflineChatModel()


@pytest.fixture
async def book(model: OfflineChatModel) -> Book:
    return await plan_and_seed(model, PREMISE, 6)


# --- story plan -----------------------------------------------------------------------


async def test_story_plan_is_valid_and_streams_the_same_text(model: OfflineChatModel) -> None:
    inputs = StoryPlanInput(premise=PREMISE, chapters=5)
    text = await ask(model, "story_plan", inputs)
    plan = StoryPlan.model_validate_json(text)
    assert plan.bible.genre
    assert 2 <= len(plan.bible.themes) <= 4
    assert "Mara Venn" in plan.bible.logline
    assert "Mara Venn" in plan.bible.point_of_view
    pieces = await streamed(model, "story_plan", inputs)
    assert len(pieces) > 10
    assert "".join(pieces) == text


@pytest.mark.parametrize("chapters", [1, 3, 20, 50])
async def test_outline_has_exactly_n_numbered_chapters(
    model: OfflineChatModel, chapters: int
) -> None:
    plan = StoryPlan.model_validate_json(
        await ask(model, "story_plan", StoryPlanInput(premise=PREMISE, chapters=chapters))
    )
    assert [c.number for c in plan.outline] == list(range(1, chapters + 1))
    assert len({c.title for c in plan.outline}) == chapters
    assert len({c.summary for c in plan.outline}) == chapters


async def test_story_plan_is_deterministic_and_follows_the_premise(model: OfflineChatModel) -> None:
    first = await ask(model, "story_plan", StoryPlanInput(premise=PREMISE, chapters=4))
    again = await ask(OfflineChatModel(), "story_plan", StoryPlanInput(premise=PREMISE, chapters=4))
    other = await ask(model, "story_plan", StoryPlanInput(premise=OTHER_PREMISE, chapters=4))
    assert first == again
    assert first != other
    assert (
        StoryPlan.model_validate_json(first).bible.title
        != StoryPlan.model_validate_json(other).bible.title
    )


@pytest.mark.parametrize(
    ("premise", "genre"),
    [
        ("A young witch must return a stolen dragon egg before the curse spreads.", "fantasy"),
        (
            "The last engineer aboard a generation ship hears a signal from a dead planet.",
            "science fiction",
        ),
        ("A retired detective is drawn into a murder at a seaside hotel.", "mystery"),
        ("Three sisters come home to sell their mother's house by the sea.", "literary fiction"),
    ],
)
async def test_genre_is_inferred_from_the_premise(
    model: OfflineChatModel, premise: str, genre: str
) -> None:
    plan = StoryPlan.model_validate_json(
        await ask(model, "story_plan", StoryPlanInput(premise=premise, chapters=3))
    )
    assert plan.bible.genre == genre
    explicit = StoryPlan.model_validate_json(
        await ask(
            model, "story_plan", StoryPlanInput(premise=premise, chapters=3, genre="gothic romance")
        )
    )
    assert explicit.bible.genre == "gothic romance"


async def test_author_notes_visibly_change_the_plan(model: OfflineChatModel) -> None:
    base = StoryPlanInput(premise=PREMISE, chapters=5)
    before = StoryPlan.model_validate_json(await ask(model, "story_plan", base))
    notes = (
        'Call it "The Drowned Lamp". Chapter 2 should end in a storm at sea. '
        "Give the brother a secret."
    )
    revised_input = base.model_copy(update={"notes": notes, "previous_outline": before.outline})
    revised_text = await ask(model, "story_plan", revised_input)
    revised = StoryPlan.model_validate_json(revised_text)
    assert revised_text == await ask(model, "story_plan", revised_input)
    assert revised.bible.title == "The Drowned Lamp"
    assert [c.number for c in revised.outline] == [1, 2, 3, 4, 5]
    assert "storm at sea" in revised.outline[1].summary
    assert "storm at sea" not in before.outline[1].summary
    assert any("brother a secret" in c.summary for c in revised.outline)
    assert revised.bible.logline != before.bible.logline


# --- world seed -----------------------------------------------------------------------


@pytest.mark.parametrize("chapters", [1, 2, 7])
async def test_world_seed_is_consistent_with_the_book(
    model: OfflineChatModel, chapters: int
) -> None:
    book = await plan_and_seed(model, PREMISE, chapters)
    seed = book.seed
    assert 3 <= len(seed.characters) <= 5
    assert 3 <= len(seed.locations) <= 4
    assert 1 <= len(seed.factions) <= 2
    assert 1 <= len(seed.items) <= 2
    assert 1 <= len(seed.rules) <= 2
    assert seed.characters[0].name == "Mara Venn"
    assert seed.characters[0].role == "protagonist"
    locations = {p.name for p in seed.locations}
    people = {c.name for c in seed.characters}
    factions = {f.name for f in seed.factions}
    for character in seed.characters:
        assert character.location in locations
        assert character.aliases
        assert set(character.fixed) == {"species", "eye_colour"}
        assert character.mutable["status"] == "alive"
        assert character.mutable["occupation"]
    assert len(people) == len(seed.characters)
    for rel in seed.relationships:
        assert rel.subject in people
        assert rel.object in (factions if rel.type == "member_of" else people)
    assert {r.type for r in seed.relationships} >= {"ally_of", "rival_of", "member_of"}
    assert 1 <= len(seed.setups) <= 3
    assert len({s.key for s in seed.setups}) == len(seed.setups)
    for setup in seed.setups:
        assert SETUP_KEY.match(setup.key)
        assert 1 <= setup.plant_chapter <= setup.payoff_chapter <= chapters


async def test_world_seed_names_match_the_plan(model: OfflineChatModel, book: Book) -> None:
    outline_text = " ".join(c.summary for c in book.plan.outline)
    named = [c.name for c in book.seed.characters if c.name in outline_text]
    assert len(named) >= 3
    assert any(p.name in outline_text for p in book.seed.locations)


async def test_different_premises_seed_different_worlds(model: OfflineChatModel) -> None:
    one = await plan_and_seed(model, PREMISE, 3)
    two = await plan_and_seed(model, OTHER_PREMISE, 3)
    assert {c.name for c in one.seed.characters} != {c.name for c in two.seed.characters}


# --- chapter beats --------------------------------------------------------------------


async def test_beats_follow_the_world_and_the_setups(model: OfflineChatModel, book: Book) -> None:
    chapters = len(book.plan.outline)
    locations = {p.name for p in book.seed.locations}
    seen_locations: set[str] = set()
    for chapter in range(1, chapters + 1):
        world = brief_from_seed(book.seed, chapter)
        beats = await chapter_beats(model, book, chapter, world)
        people = {c.name for c in world.characters}
        assert beats.chapter == chapter
        assert beats.title == book.plan.outline[chapter - 1].title
        assert beats.pov in people
        assert beats.location in locations
        seen_locations.add(beats.location)
        assert beats.pov in beats.characters
        assert set(beats.characters) <= people
        assert 3 <= len(beats.beats) <= 5
        for beat in beats.beats:
            assert set(beat.characters) <= set(beats.characters)
            assert beat.location in locations
        assert beats.plant == [s.key for s in book.seed.setups if s.plant_chapter == chapter]
        due = [s.key for s in book.seed.setups if s.payoff_chapter == chapter]
        assert set(due) <= set(beats.payoff)
        pov = next(c for c in world.characters if c.name == beats.pov)
        moves = [e for e in beats.events if e.kind == "move" and e.character == beats.pov]
        if pov.location != beats.location:
            assert moves and moves[0].target == beats.location
        else:
            assert not moves
        learned = [e.target for e in beats.events if e.kind == "learn"]
        for key in beats.plant:
            setup = next(s for s in book.seed.setups if s.key == key)
            assert setup.description in learned
    assert len(seen_locations) >= 2


async def test_beats_mostly_follow_the_protagonist(model: OfflineChatModel, book: Book) -> None:
    povs = []
    for chapter in range(1, 7):
        beats = await chapter_beats(model, book, chapter, brief_from_seed(book.seed, chapter))
        povs.append(beats.pov)
    assert povs.count("Mara Venn") >= 4
    assert povs[0] == "Mara Venn"


async def test_dead_characters_never_appear_in_beats(model: OfflineChatModel, book: Book) -> None:
    victim = book.seed.characters[2]
    forms = [victim.name, *victim.aliases]
    for chapter in range(2, 7):
        world = brief_from_seed(book.seed, chapter, dead=[victim.name])
        # Even when the director is shown the dead, they stay out of the chapter.
        beats = ChapterBeats.model_validate_json(
            await ask(model, "chapter_beats", beats_input(book, chapter, world))
        )
        assert victim.name not in beats.characters
        assert beats.pov != victim.name
        for beat in beats.beats:
            assert victim.name not in beat.characters
            assert not any(re.search(rf"\b{re.escape(f)}\b", beat.summary) for f in forms)
        assert all(e.character != victim.name for e in beats.events)


async def test_a_late_chapter_kills_a_secondary_character_once(
    model: OfflineChatModel, book: Book
) -> None:
    chapters = len(book.plan.outline)
    deaths: list[PlannedEvent] = []
    for chapter in range(1, chapters + 1):
        beats = await chapter_beats(model, book, chapter, brief_from_seed(book.seed, chapter))
        found = [e for e in beats.events if e.kind == "death"]
        deaths += found
        for event in found:
            assert chapter >= chapters - 1
            assert event.character not in (beats.pov, "Mara Venn")
            assert event.character in beats.characters
    assert len(deaths) == 1
    # Once dead, the character cannot die again.
    victim = deaths[0].character
    later = await chapter_beats(
        model, book, chapters - 1, brief_from_seed(book.seed, chapters - 1, dead=[victim])
    )
    assert all(e.character != victim for e in later.events if e.kind == "death")


async def test_beats_are_deterministic(model: OfflineChatModel, book: Book) -> None:
    world = living(brief_from_seed(book.seed, 2))
    first = await ask(model, "chapter_beats", beats_input(book, 2, world))
    assert first == await ask(model, "chapter_beats", beats_input(book, 2, world))


# --- chapter draft --------------------------------------------------------------------


@pytest.mark.parametrize("target", [500, 900, 1600])
async def test_draft_is_prose_of_about_the_target_length(
    model: OfflineChatModel, book: Book, target: int
) -> None:
    world = brief_from_seed(book.seed, 2)
    beats = await chapter_beats(model, book, 2, world)
    text = await ask(model, "chapter_draft", draft_input(book, beats, world, target_words=target))
    assert 0.75 * target <= words(text) <= 1.25 * target
    assert not text.lstrip().startswith("#")
    assert not text.startswith(beats.title)
    paragraphs = text.split("\n\n")
    assert len(paragraphs) >= len(beats.beats)
    assert all(p.strip() == p and p for p in paragraphs)
    for name in beats.characters:
        assert name in text
    assert beats.location in text
    assert re.search(r'"[^"]+," \w+ (said|answered)|"[^"]+\?" \w+ asked', text)
    for beat in beats.beats:
        first_words = " ".join(beat.summary.split()[:2])
        assert first_words in text


async def test_draft_streams_token_by_token(model: OfflineChatModel, book: Book) -> None:
    world = brief_from_seed(book.seed, 1)
    beats = await chapter_beats(model, book, 1, world)
    inputs = draft_input(book, beats, world)
    text = await ask(model, "chapter_draft", inputs)
    pieces = await streamed(model, "chapter_draft", inputs)
    assert "".join(pieces) == text
    assert len(pieces) >= words(text)
    reply = await model.ainvoke(render_messages("chapter_draft", inputs))
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == round(words(text) * 1.3)
    assert reply.usage_metadata["input_tokens"] > 0


async def test_draft_recalls_an_earlier_passage(model: OfflineChatModel, book: Book) -> None:
    world = brief_from_seed(book.seed, 3)
    beats = await chapter_beats(model, book, 3, world)
    passage = RetrievedPassage(
        chapter=1,
        text="The lamp at the top of the tower burned green the night the boat went down.",
    )
    text = await ask(model, "chapter_draft", draft_input(book, beats, world, passages=[passage]))
    recall = next(p for p in text.split("\n\n") if "remembered" in p)
    assert "The lamp at the top of the tower burned green" in recall


async def test_draft_plants_and_pays_off_setups(model: OfflineChatModel) -> None:
    book = await plan_and_seed(model, PREMISE, 1)
    world = brief_from_seed(book.seed, 1)
    beats = await chapter_beats(model, book, 1, world)
    assert beats.plant and beats.payoff
    text = await ask(model, "chapter_draft", draft_input(book, beats, world))
    for setup in book.seed.setups:
        # The prose tells set-ups in the past tense; their closing words are unchanged.
        core = " ".join(setup.description.rstrip(".").split()[-3:])
        assert core in text


async def test_revision_differs_and_rewrites_quoted_sentences(
    model: OfflineChatModel, book: Book
) -> None:
    world = brief_from_seed(book.seed, 2)
    beats = await chapter_beats(model, book, 2, world)
    first = await ask(model, "chapter_draft", draft_input(book, beats, world))
    sentences = [s for s in split_sentences(first) if not s.startswith('"')]
    quoted = [sentences[1], sentences[len(sentences) // 2], sentences[-2]]
    issues = [
        ReviewIssue(severity="major", category="prose", quote=q, problem="Flat.", suggestion="")
        for q in quoted
    ]
    notes = 'Let Mara say "The sea keeps what it takes" and linger on the storm.'
    revised = await ask(
        model,
        "chapter_draft",
        draft_input(
            book, beats, world, revision=1, previous_draft=first, issues=issues, notes=notes
        ),
    )
    assert revised != first
    for quote in quoted:
        assert quote not in revised
    assert "The sea keeps what it takes" in revised
    assert "storm" in revised
    for name in beats.characters:
        assert name in revised
    assert beats.location in revised


# --- chapter review -------------------------------------------------------------------


async def review(
    model: OfflineChatModel,
    beats: ChapterBeats,
    draft: str,
    world: WorldBrief,
    revision: int = 0,
    **extra: Any,
) -> Verdict:
    inputs = ReviewInput(
        chapter=beats.chapter, beats=beats, draft=draft, world=world, revision=revision, **extra
    )
    return Verdict.model_validate_json(await ask(model, "chapter_review", inputs))


async def test_review_quotes_the_draft_and_includes_findings(
    model: OfflineChatModel, book: Book
) -> None:
    world = brief_from_seed(book.seed, 2)
    beats = await chapter_beats(model, book, 2, world)
    draft = await ask(model, "chapter_draft", draft_input(book, beats, world))
    sentence = split_sentences(draft)[3]
    findings = [
        ReviewIssue(
            severity="major",
            category="consistency",
            quote=sentence,
            problem="Contradicts the world.",
            suggestion="Fix it.",
        ),
        ReviewIssue(
            severity="minor",
            category="consistency",
            quote="a sentence that is not in the draft at all",
            problem="Elsewhere.",
        ),
    ]
    verdict = await review(model, beats, draft, world, findings=findings)
    assert verdict.issues
    for issue in verdict.issues:
        assert issue.quote in draft
    problems = [i.problem for i in verdict.issues]
    assert "Contradicts the world." in problems and "Elsewhere." in problems
    assert verdict.scores.consistency <= 5
    assert any(i.severity == "major" for i in verdict.issues)
    assert 1 <= len(re.findall(r"[.!?](\s|$)", verdict.summary)) <= 3


async def test_review_flags_a_thin_draft_without_the_cast(
    model: OfflineChatModel, book: Book
) -> None:
    world = brief_from_seed(book.seed, 2)
    beats = await chapter_beats(model, book, 2, world)
    draft = "The rain fell. The rain fell. The rain fell. The rain fell on everything and everyone."
    verdict = await review(model, beats, draft, world)
    categories = {i.category for i in verdict.issues if i.severity == "major"}
    assert {"beats", "pacing"} <= categories
    assert verdict.scores.lowest() < 6
    for issue in verdict.issues:
        assert issue.quote in draft


async def test_some_first_drafts_are_sent_back_and_revisions_converge(
    model: OfflineChatModel,
) -> None:
    rejected = 0
    total = 0
    for premise in (
        PREMISE,
        OTHER_PREMISE,
        "A detective hunts a poisoner through a snowed-in manor.",
    ):
        book = await plan_and_seed(model, premise, 6)
        for chapter in range(1, 7):
            world = brief_from_seed(book.seed, chapter)
            beats = await chapter_beats(model, book, chapter, world)
            draft = await ask(model, "chapter_draft", draft_input(book, beats, world))
            verdict = await review(model, beats, draft, world)
            total += 1
            for issue in verdict.issues:
                assert issue.quote in draft
            if verdict.scores.lowest() >= 6 and not any(
                i.severity == "major" for i in verdict.issues
            ):
                continue
            rejected += 1
            assert verdict.scores.lowest() < 6
            revised = await ask(
                model,
                "chapter_draft",
                draft_input(
                    book, beats, world, revision=1, previous_draft=draft, issues=verdict.issues
                ),
            )
            again = await review(model, beats, revised, world, revision=1)
            assert again.scores.lowest() >= 6
            assert not any(i.severity == "major" for i in again.issues)
            assert again.scores.lowest() > verdict.scores.lowest()
    assert 0.15 * total <= rejected <= 0.7 * total


async def test_review_is_deterministic(model: OfflineChatModel, book: Book) -> None:
    world = brief_from_seed(book.seed, 1)
    beats = await chapter_beats(model, book, 1, world)
    draft = await ask(model, "chapter_draft", draft_input(book, beats, world))
    assert await review(model, beats, draft, world) == await review(model, beats, draft, world)


# --- chapter claims -------------------------------------------------------------------


async def claims_of(
    model: OfflineChatModel, chapter: int, beats: ChapterBeats, text: str, world: WorldBrief
) -> ChapterClaims:
    """The offline model's claims about ``text``; every quote is the text's own."""
    claims = ChapterClaims.model_validate_json(
        await ask(
            model,
            "chapter_claims",
            ClaimsInput(chapter=chapter, beats=beats, draft=text, world=world),
        )
    )
    for part in (claims.present, claims.travel, claims.deaths, claims.knowledge):
        for claim in part:
            assert claim.quote in text
    for paid in claims.paid_off:
        assert paid.quote in text
    return claims


async def test_claims_record_what_the_chapter_did(model: OfflineChatModel, book: Book) -> None:
    chapters = len(book.plan.outline)
    chapter = chapters - 1
    world = brief_from_seed(book.seed, chapter)
    beats = await chapter_beats(model, book, chapter, world)
    text = await ask(model, "chapter_draft", draft_input(book, beats, world))
    changes = await claims_of(model, chapter, beats, text, world)
    assert words(changes.summary) <= 60
    assert beats.pov in changes.summary
    assert beats.location in changes.summary
    planned_moves = {(e.character, e.target) for e in beats.events if e.kind == "move"}
    assert {(m.character, m.to) for m in changes.travel} == planned_moves
    deaths = [d.character for d in changes.deaths]
    assert deaths == [e.character for e in beats.events if e.kind == "death"]
    assert deaths
    assert [p.setup for p in changes.paid_off] == beats.payoff
    assert [p.key for p in changes.planted] == beats.plant
    assert {p.character for p in changes.present} == {beats.pov, *beats.characters}
    assert changes.new_entities == []
    meets = [(e.character, e.target) for e in beats.events if e.kind == "meet"]
    assert [(r.subject, r.object) for r in changes.relationships if r.type == "met"] == meets


async def test_claims_keep_only_events_the_text_bears_out(
    model: OfflineChatModel, book: Book
) -> None:
    world = brief_from_seed(book.seed, 2)
    mara, ally = book.seed.characters[0].name, book.seed.characters[2].name
    beats = ChapterBeats(
        chapter=2,
        title="The Ferry",
        pov=mara,
        location="Gullhaven Pier",
        characters=[mara, ally, "Bellamy Crane"],
        beats=[
            Beat(
                summary=f"{mara} meets Bellamy Crane on the ferry.",
                characters=[mara, "Bellamy Crane"],
                location="Gullhaven Pier",
            ),
            Beat(
                summary=f"{ally} stays behind.",
                characters=[ally],
                location=book.seed.locations[0].name,
            ),
        ],
        events=[
            PlannedEvent(kind="move", character=mara, target="Gullhaven Pier"),
            PlannedEvent(kind="learn", character=mara, target="The ferry never stops at night."),
            PlannedEvent(kind="death", character=ally),
            PlannedEvent(kind="meet", character=mara, target="Bellamy Crane"),
        ],
    )
    text = (
        f"{mara} took the ferry to Gullhaven Pier and met Bellamy Crane there. "
        "The ferry never stopped at night."
    )
    changes = await claims_of(model, 2, beats, text, world)
    assert [(m.character, m.to) for m in changes.travel] == [(mara, "Gullhaven Pier")]
    assert [(k.character, k.action) for k in changes.knowledge] == [(mara, "learns")]
    assert changes.deaths == []  # the ally is never named in the text
    assert [(r.subject, r.type, r.object) for r in changes.relationships] == [
        (mara, "met", "Bellamy Crane")
    ]
    new = {(e.name, e.kind) for e in changes.new_entities}
    assert new == {("Bellamy Crane", "character"), ("Gullhaven Pier", "location")}


# --- requests that are not tasks ------------------------------------------------------


async def test_unparseable_requests_get_a_polite_refusal(model: OfflineChatModel) -> None:
    for messages in (
        [HumanMessage("Hello there, write me a poem.")],
        [SystemMessage("x"), HumanMessage("Task: story_plan\n\nInput:\n```json\n{not json\n```")],
        [HumanMessage('Task: compose_opera\n\nInput:\n```json\n{"a": 1}\n```')],
    ):
        reply = await model.ainvoke(messages)
        assert isinstance(reply.content, str)
        assert "InfiniteScribe" in reply.content
        assert not reply.content.lstrip().startswith("{")


async def test_invalid_task_input_is_explained_not_raised(model: OfflineChatModel) -> None:
    reply = await model.ainvoke(
        [HumanMessage('Task: story_plan\n\nInput:\n```json\n{"chapters": 3}\n```')]
    )
    assert isinstance(reply.content, str)
    assert "premise" in reply.content


async def test_repair_request_gets_the_valid_answer_again(model: OfflineChatModel) -> None:
    inputs = StoryPlanInput(premise=PREMISE, chapters=3)
    messages: list[BaseMessage] = render_messages("story_plan", inputs)
    original = await ask(model, "story_plan", inputs)
    repair = [
        *messages,
        AIMessage("Sure! Here is the plan: {broken"),
        HumanMessage(
            "Your answer was not valid JSON for the schema. Answer again with only the JSON object."
        ),
    ]
    reply = await model.ainvoke(repair)
    assert isinstance(reply.content, str)
    assert StoryPlan.model_validate_json(reply.content)
    assert reply.content == original


# --- the chat-model surface -----------------------------------------------------------


def test_sync_invoke_and_chunking(model: OfflineChatModel) -> None:
    inputs = StoryPlanInput(premise=PREMISE, chapters=2)
    reply = model.invoke(render_messages("story_plan", inputs))
    assert isinstance(reply.content, str)
    StoryPlan.model_validate_json(reply.content)
    pieces = [c.content for c in model.stream(render_messages("story_plan", inputs))]
    assert "".join(str(p) for p in pieces) == reply.content
    assert chunks_of("one  two\nthree") == ["one  ", "two\n", "three"]
    assert "".join(chunks_of('{"a":"' + "x" * 100 + '"}')) == '{"a":"' + "x" * 100 + '"}'
    assert model._llm_type == "offline"


async def test_tokens_per_second_paces_the_stream() -> None:
    slow = OfflineChatModel(tokens_per_second=400.0)
    messages = [HumanMessage("Say hello.")]
    start = time.perf_counter()
    pieces = [c.content async for c in slow.astream(messages)]
    elapsed = time.perf_counter() - start
    assert elapsed >= (len(pieces) - 1) / 400.0 * 0.9
    fast_start = time.perf_counter()
    fast = [c.content async for c in OfflineChatModel().astream(messages)]
    assert fast == pieces
    assert time.perf_counter() - fast_start < elapsed


class _State(TypedDict):
    text: str


async def test_langgraph_messages_mode_sees_tokens(model: OfflineChatModel) -> None:
    inputs = StoryPlanInput(premise=PREMISE, chapters=2)

    async def node(state: _State) -> dict[str, str]:
        reply = await model.ainvoke(render_messages("story_plan", inputs))
        return {"text": str(reply.content)}

    graph = StateGraph(_State)
    graph.add_node("plan", node)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", END)
    app = graph.compile()
    tokens: list[str] = []
    async for chunk, _meta in app.astream({"text": ""}, stream_mode="messages"):
        assert isinstance(chunk, BaseMessage)
        tokens.append(str(chunk.content))
    assert len(tokens) > 10
    assert StoryPlan.model_validate_json("".join(tokens))


def test_every_task_has_a_generator() -> None:
    from nodes.llm.offline import GENERATORS

    assert set(GENERATORS) == set(TASKS)


async def test_sparse_or_foreign_inputs_still_get_valid_answers(model: OfflineChatModel) -> None:
    bible = StoryPlan.model_validate_json(
        await ask(model, "story_plan", StoryPlanInput(premise="Things happen.", chapters=1))
    ).bible
    empty = WorldBrief(chapter=1)
    outline = StoryPlan.model_validate_json(
        await ask(model, "story_plan", StoryPlanInput(premise="Things happen.", chapters=1))
    ).outline[0]
    beats = ChapterBeats.model_validate_json(
        await ask(
            model,
            "chapter_beats",
            BeatsInput(chapter=1, chapters=1, bible=bible, outline=outline, world=empty),
        )
    )
    assert beats.pov in beats.characters
    # Beats written by another model may name people and places the world lacks.
    foreign = ChapterBeats(
        chapter=2,
        title="Elsewhere",
        pov="Zed Orlov",
        location="the Glass Market",
        characters=["Zed Orlov", "Ana Brightwater"],
        beats=[Beat(summary="Zed Orlov haggles for a key.", characters=[], location=None)],
        events=[PlannedEvent(kind="reveal", character="Zed Orlov", target="the key is a fake")],
    )
    draft = await ask(
        model,
        "chapter_draft",
        DraftInput(chapter=2, title="Elsewhere", bible=bible, beats=foreign, world=empty),
    )
    assert "Zed Orlov" in draft and "Ana Brightwater" in draft and "the Glass Market" in draft
    for text in (draft, "One word"):
        verdict = await review(model, foreign, text, empty)
        assert all(i.quote in text for i in verdict.issues)
    blank = await review(model, foreign, "   ", empty)
    assert blank.issues == [] and blank.scores.lowest() == 1
    changes = await claims_of(model, 2, foreign, draft, empty)
    assert {e.name for e in changes.new_entities} == {
        "Zed Orlov",
        "Ana Brightwater",
        "the Glass Market",
    }
    assert changes.knowledge[0].secret == "the key is a fake"
