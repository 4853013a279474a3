"""Deterministic consistency checks of drafts against world memory (nodes/consistency.py).

Pure-function tests build :class:`WorldSnapshot` values directly; the integration tests
build the world by applying :class:`WorldChanges` to the SQL backend on a temporary
SQLite file, and the reviewer test runs the reviewer node on the embedded backends.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from langgraph.runtime import Runtime

from memory.db import make_engine
from memory.world.port import (
    Entity,
    EntitySpec,
    Fact,
    FactSpec,
    Setup,
    SetupSpec,
    WorldChanges,
    WorldMemory,
    WorldSnapshot,
)
from memory.world.sql import SqlWorldMemory
from nodes.consistency import (
    check_draft,
    consistency_findings,
    damerau_levenshtein,
    dead_character_findings,
    fixed_attribute_findings,
    merge_issues,
    near_miss_name_findings,
    overdue_setup_findings,
    split_sentences,
    two_places_findings,
    with_findings,
)
from nodes.reviewer import reviewer
from nodes.schemas import Beat, ChapterBeats, PlannedEvent, ReviewIssue, Scores, Verdict
from server.backends import Backends

# --- fixtures and builders --------------------------------------------------------------------


def _entity(
    key: str,
    kind: str,
    name: str,
    aliases: tuple[str, ...] = (),
    fixed: Mapping[str, str] | None = None,
) -> Entity:
    return Entity(key, kind, name, aliases, "", dict(fixed or {}), 0)  # type: ignore[arg-type]


def _attr(subject: str, predicate: str, value: str, since: int = 0) -> Fact:
    return Fact(subject, predicate, value, None, since, None, since)


def _rel(subject: str, predicate: str, obj: str, since: int = 0) -> Fact:
    return Fact(subject, predicate, None, obj, since, None, since)


ADA = _entity(
    "ada-quill",
    "character",
    "Ada Quill",
    ("Ada",),
    {"eye_colour": "grey", "species": "human", "hair_colour": "black"},
)
TOBIN = _entity("tobin-venn", "character", "Tobin Venn", ("Tobin",))
WREN = _entity("wren-marr", "character", "Wren Marr", ("Wren",))
SALTMERE = _entity("saltmere", "location", "Saltmere")
GREYFORD = _entity("greyford", "location", "Greyford")
HARBOUR = _entity("saltmere-harbour", "location", "Saltmere Harbour")
LAMP_ROOM = _entity("lamp-room", "location", "the Lamp Room")


def _snapshot(
    chapter: int = 5,
    *,
    tobin_dead_since: int | None = 3,
    facts: tuple[Fact, ...] = (),
    setups: tuple[Setup, ...] = (),
) -> WorldSnapshot:
    status = (
        _attr("tobin-venn", "status", "dead", tobin_dead_since)
        if tobin_dead_since is not None
        else _attr("tobin-venn", "status", "alive")
    )
    return WorldSnapshot(
        chapter=chapter,
        entities=(ADA, TOBIN, WREN, SALTMERE, GREYFORD, HARBOUR, LAMP_ROOM),
        facts=(
            _attr("ada-quill", "status", "alive"),
            _attr("wren-marr", "status", "alive"),
            status,
            _rel("lamp-room", "part_of", "greyford"),
            *facts,
        ),
        setups=setups,
    )


def _beats(
    chapter: int = 5, events: list[PlannedEvent] | None = None, **extra: Any
) -> ChapterBeats:
    return ChapterBeats(
        chapter=chapter,
        title="The Tide Clock",
        pov="Ada Quill",
        location="Saltmere",
        characters=["Ada Quill"],
        beats=[Beat(summary="Ada keeps watch at Saltmere.", characters=["Ada Quill"])],
        events=events or [],
        **extra,
    )


def _quotes(issues: list[ReviewIssue]) -> list[str]:
    return [i.quote for i in issues]


def _assert_well_formed(issues: list[ReviewIssue], draft: str) -> None:
    for issue in issues:
        assert issue.category == "consistency"
        assert issue.quote in draft, issue.quote
        assert issue.problem and issue.suggestion


# --- sentence splitting and memory markers ----------------------------------------------------


def test_sentences_are_verbatim_and_keep_dialogue_whole() -> None:
    draft = (
        'Mr. Venn waited.  "Stay. Please," Ada said. "Stop!" Tobin shouted.\n'
        "It rained \u2026 and rained.\n\n"
        "\u201cWho is there?\u201d asked Wren. She did not answer.\n"
        "* * *\n"
        "Morning came."
    )
    sentences = split_sentences(draft)
    assert [s.text for s in sentences] == [
        "Mr. Venn waited.",
        '"Stay. Please," Ada said.',
        '"Stop!" Tobin shouted.',
        "It rained \u2026 and rained.",
        "\u201cWho is there?\u201d asked Wren.",
        "She did not answer.",
        "Morning came.",
    ]
    for sentence in sentences:
        assert draft[sentence.start : sentence.end] == sentence.text
    assert [s.scene for s in sentences] == [0, 0, 0, 0, 0, 0, 1]
    # Quoted words are blanked for narration checks, the marks kept.
    assert sentences[1].masked.startswith('"') and "Stay" not in sentences[1].masked
    assert sentences[1].masked.endswith(" Ada said.")


@pytest.mark.parametrize(
    ("draft", "memory"),
    [
        ("Ada remembered how Tobin laughed.", [True]),
        ("Years ago, Tobin walked these cliffs. He was happy then.", [True, True]),
        ("Once, long before the war, Tobin sang.", [True]),
        ("In the memory, Tobin was smiling.", [True]),
        ('"Go," Tobin had said.', [True]),
        ("*Tobin sang in the kitchen.* Ada listened.", [True, False]),
        ("Flashback: the harbour.\n\nTobin laughed.\n\n***\n\nAda woke.", [True, True, False]),
        ("Ada woke. Tobin laughed.", [False, False]),
    ],
)
def test_memory_markers(draft: str, memory: list[bool]) -> None:
    assert [s.memory for s in split_sentences(draft)] == memory


# --- check 1: the dead do not act -------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "quote"),
    [
        ('Ada shivered. "We should go," Tobin said.', '"We should go," Tobin said.'),
        ('"Go," said Tobin. Ada stayed.', '"Go," said Tobin.'),
        ("Tobin walked to the window.", "Tobin walked to the window."),
        ("The wind rose. Then Tobin laughed.", "Then Tobin laughed."),
        ("Tobin and Ada waited by the door.", "Tobin and Ada waited by the door."),
        (
            "Beside the lamp, Tobin Venn quietly smiled.",
            "Beside the lamp, Tobin Venn quietly smiled.",
        ),
        ("Tobin was walking along the quay.", "Tobin was walking along the quay."),
        ("Ada said no. Tobin buried the knife.", "Tobin buried the knife."),
        (
            '"I remember this place," Tobin said.',
            '"I remember this place," Tobin said.',
        ),
    ],
)
def test_dead_character_acting_is_flagged(draft: str, quote: str) -> None:
    issues = dead_character_findings(draft, _snapshot(), _beats(), 5)
    assert _quotes(issues) == [quote]
    issue = issues[0]
    assert issue.severity == "major"
    assert "Tobin Venn" in issue.problem and "'dead' since chapter 3" in issue.problem
    _assert_well_formed(issues, draft)


@pytest.mark.parametrize(
    "draft",
    [
        "They buried Tobin at dawn.",
        "Tobin's grave was cold. Ada left flowers on Tobin\u2019s stone.",
        "Tobin was buried beside his father.",
        "Tobin lay still under the sheet.",
        "Tobin loved the sea, and Tobin owed the harbour-master money.",
        "Ada remembered how Tobin laughed at storms.",
        "Years ago, Tobin walked these cliffs every morning.",
        "*Tobin sang in the kitchen.*",
        "Tobin had walked these halls once.",
        '"Go," Tobin had said, the last time.',
        "Flashback.\n\nTobin laughed and poured the wine.",
        '"Tobin walked into the sea," Ada said.',
        "Ada watched the place where Tobin used to stand.",
        "The war was over, and Tobin buried beneath the cairn.",
        "She counted them all, Tobin included.",
        "Tobin claimed to have been at Saltmere that night, and no one checked.",
        "Tobin would have laughed at them.",
    ],
)
def test_mentions_and_memories_of_the_dead_are_not_flagged(draft: str) -> None:
    assert dead_character_findings(draft, _snapshot(), _beats(), 5) == []


def test_a_name_shared_by_two_characters_is_not_pinned_on_the_dead_one() -> None:
    """ "Ada" is Ada Quill's alias; the dead Ada Venn is recognised by her full name only."""
    ada_venn = _entity("ada-venn", "character", "Ada Venn")
    base = _snapshot()
    snapshot = WorldSnapshot(
        chapter=5,
        entities=(*base.entities, ada_venn),
        facts=(*base.facts, _attr("ada-venn", "status", "dead", 2)),
        setups=(),
    )
    assert dead_character_findings('"Go," Ada said.', snapshot, _beats(), 5) == []
    issues = dead_character_findings('"Go," Ada Venn said.', snapshot, _beats(), 5)
    assert _quotes(issues) == ['"Go," Ada Venn said.']
    assert "Ada Venn is dead" in issues[0].problem


def test_character_who_dies_in_this_chapter_may_act_before_the_death() -> None:
    death = [PlannedEvent(kind="death", character="Tobin Venn")]
    before = '"Hold the line," Tobin said. Tobin drew his knife. Tobin died there, quickly.'
    alive = _snapshot(tobin_dead_since=None)
    assert dead_character_findings(before, alive, _beats(events=death), 5) == []

    after = before + " Later, Tobin smiled at Ada."
    issues = dead_character_findings(after, alive, _beats(events=death), 5)
    assert _quotes(issues) == ["Later, Tobin smiled at Ada."]
    assert "dies earlier in this chapter" in issues[0].problem

    # Without the death event the character is simply alive: nothing to report.
    assert dead_character_findings(after, alive, _beats(), 5) == []


def test_death_recorded_at_this_chapter_counts_as_dying_here() -> None:
    """A chapter re-drafted after it was recorded sees its own death in world memory."""
    snapshot = _snapshot(tobin_dead_since=5)
    draft = "Tobin laughed at the storm. Tobin fell and did not rise again. Ada wept."
    assert dead_character_findings(draft, snapshot, _beats(), 5) == []
    assert _quotes(dead_character_findings(draft + " Tobin waved.", snapshot, _beats(), 5)) == [
        "Tobin waved."
    ]


# --- check 2: one place at a time -------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "quote"),
    [
        (
            "Ada Quill was in Saltmere, waiting for the tide. The gulls cried. "
            "Ada stood in Greyford, watching the gate.",
            "Ada stood in Greyford, watching the gate.",
        ),
        (
            "Ada was at Saltmere. The lamp guttered.\n\nAt Greyford, Ada counted the exits.",
            "At Greyford, Ada counted the exits.",
        ),
        (
            "Ada and Wren were there at Saltmere for all of it. Wren sat in Greyford.",
            "Wren sat in Greyford.",
        ),
    ],
)
def test_two_places_at_once_is_flagged(draft: str, quote: str) -> None:
    issues = two_places_findings(draft, _snapshot(), _beats(), 5)
    assert _quotes(issues) == [quote]
    assert issues[0].severity == "major"
    assert "Saltmere" in issues[0].problem and "Greyford" in issues[0].problem
    _assert_well_formed(issues, draft)


@pytest.mark.parametrize(
    "draft",
    [
        "Ada was in Saltmere. Ada walked to Greyford before noon. Ada stood in Greyford.",
        "Ada was in Saltmere. By dusk she had reached the ford. Ada stood in Greyford.",
        "Ada was in Saltmere. She set out for the north. Ada stood in Greyford.",
        "Ada was in Saltmere.\n\n* * *\n\nAda stood in Greyford.",
        "Ada was in Saltmere. Ada stood in Saltmere Harbour.",
        "Ada was in Greyford. Ada stood in the Lamp Room.",
        'Ada was in Saltmere. "I was in Greyford yesterday," Ada said.',
        "Ada was in Saltmere. Ada had been in Greyford once.",
        "Ada was in Saltmere. Ada remembered the day she stood in Greyford.",
    ],
)
def test_travel_scene_breaks_and_nested_places_are_not_flagged(draft: str) -> None:
    assert two_places_findings(draft, _snapshot(), _beats(), 5) == []


def test_move_event_allows_the_change_of_place() -> None:
    draft = "Ada was in Saltmere. Ada stood in Greyford."
    move = [PlannedEvent(kind="move", character="Ada", target="Greyford")]
    assert two_places_findings(draft, _snapshot(), _beats(events=move), 5) == []
    elsewhere = [PlannedEvent(kind="move", character="Wren Marr", target="Greyford")]
    assert len(two_places_findings(draft, _snapshot(), _beats(events=elsewhere), 5)) == 1


# --- check 3: near-miss names -----------------------------------------------------------------


def test_damerau_levenshtein() -> None:
    assert damerau_levenshtein("Tobin", "Tobin") == 0
    assert damerau_levenshtein("Tobin", "Tboin") == 1  # one adjacent swap
    assert damerau_levenshtein("Ada", "Adda") == 1
    assert damerau_levenshtein("Saltmere", "Satlmore") == 2  # a swap and a substitution
    assert damerau_levenshtein("kitten", "sitting") == 3


@pytest.mark.parametrize(
    ("draft", "quote", "canonical"),
    [
        ("The tide turned. Adda frowned at the sea.", "Adda frowned at the sea.", "'Ada'"),
        ("Ada crossed to Saltmore at dusk.", "Ada crossed to Saltmore at dusk.", "'Saltmere'"),
        ("Wren met Ada Quil at the gate.", "Wren met Ada Quil at the gate.", "'Ada Quill'"),
        ("Tboin's letter lay open.", "Tboin's letter lay open.", "'Tobin'"),
    ],
)
def test_near_miss_names_are_flagged(draft: str, quote: str, canonical: str) -> None:
    issues = near_miss_name_findings(draft, _snapshot(), _beats(), 5)
    assert _quotes(issues) == [quote]
    assert issues[0].severity == "minor"
    assert canonical in issues[0].problem
    _assert_well_formed(issues, draft)


@pytest.mark.parametrize(
    "draft",
    [
        "Ada's lamp burned. Wren's boots were wet. The Quills kept the light.",
        "Marguerite Oakes arrived from the capital with a sealed letter.",
        "When the tide turned, Wren went down. Then the rain came.",
        "Whence came the storm? Hence the silence.",
        "Don't touch it. Ada Quill laughed. Saltmere slept.",
        '"Wait," Ada said. Stop was the only word the sign said, and she would not stop.',
    ],
)
def test_known_names_common_words_and_new_far_names_are_not_flagged(draft: str) -> None:
    assert near_miss_name_findings(draft, _snapshot(), _beats(), 5) == []


# --- check 4: fixed attributes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("draft", "quote", "word"),
    [
        ("Ada's green eyes narrowed.", "Ada's green eyes narrowed.", "'green'"),
        (
            "The light was poor. Ada Quill's eyes were green as bottle glass.",
            "Ada Quill's eyes were green as bottle glass.",
            "'green'",
        ),
        ("Ada had bright blue eyes.", "Ada had bright blue eyes.", "'blue'"),
        ("Wren followed the green-eyed Ada.", "Wren followed the green-eyed Ada.", "'green'"),
        (
            "Ada's blond hair whipped in the wind.",
            "Ada's blond hair whipped in the wind.",
            "'blond'",
        ),
        ("The elf Ada drew her bow.", "The elf Ada drew her bow.", "'elf'"),
        ("Ada, an elf of the old blood, waited.", "Ada, an elf of the old blood, waited.", "'elf'"),
        ("Ada was a dwarf among giants.", "Ada was a dwarf among giants.", "'dwarf'"),
    ],
)
def test_contradicted_fixed_attribute_is_flagged(draft: str, quote: str, word: str) -> None:
    issues = fixed_attribute_findings(draft, _snapshot(), _beats(), 5)
    assert _quotes(issues) == [quote]
    assert issues[0].severity == "major"
    assert "Ada Quill" in issues[0].problem and word in issues[0].problem
    _assert_well_formed(issues, draft)


@pytest.mark.parametrize(
    "draft",
    [
        "Ada's grey eyes narrowed. Ada's gray eyes closed. Ada's silver eyes opened.",
        "Ada's eyes were grey-green in that light.",
        "Ada's tired eyes closed. Ada's dark eyes opened.",
        "Ada's black hair was wet. The human Ada laughed.",
        "Wren's green eyes narrowed. Wren was an elf.",
        "The dragon Ada rode was old.",
        "Ada was an angel that night.",
    ],
)
def test_consistent_or_unrelated_descriptions_are_not_flagged(draft: str) -> None:
    assert fixed_attribute_findings(draft, _snapshot(), _beats(), 5) == []


def test_mutable_attribute_change_is_not_a_contradiction() -> None:
    """Wren's hair colour is mutable (she dyed it): only fixed attributes are checked."""
    snapshot = _snapshot(facts=(_attr("wren-marr", "hair_colour", "red", 4),))
    assert fixed_attribute_findings("Wren's red hair was wet.", snapshot, _beats(), 5) == []
    assert fixed_attribute_findings("Wren's blue hair was wet.", snapshot, _beats(), 5) == []


# --- check 5: overdue set-ups -----------------------------------------------------------------


def _setup(due: int, key: str = "brass-key", entities: tuple[str, ...] = ("ada-quill",)) -> Setup:
    return Setup(key, "The brass key opens a door under the sea.", 1, due, None, entities)


def test_setup_overdue_by_three_is_tolerated_and_by_four_is_flagged() -> None:
    draft = "Rain came in sheets. Ada Quill climbed the stairs."
    by_three = _snapshot(chapter=5, setups=(_setup(due=2),))
    assert overdue_setup_findings(draft, by_three, _beats(), 5) == []
    by_four = _snapshot(chapter=5, setups=(_setup(due=1),))
    issues = overdue_setup_findings(draft, by_four, _beats(), 5)
    assert _quotes(issues) == ["Ada Quill climbed the stairs."]
    assert issues[0].severity == "minor"
    assert "'brass-key'" in issues[0].problem and "4 chapters late" in issues[0].problem
    assert "first sentence naming one of its entities" in issues[0].problem


def test_overdue_setup_without_named_entities_quotes_the_first_sentence() -> None:
    draft = "Rain came in sheets. The gulls were silent."
    snapshot = _snapshot(chapter=6, setups=(_setup(due=1, entities=("tobin-venn",)),))
    issues = overdue_setup_findings(draft, snapshot, _beats(chapter=6), 6)
    assert _quotes(issues) == ["Rain came in sheets."]
    assert "draft's first sentence" in issues[0].problem


def test_setup_paid_off_by_the_beats_or_already_is_not_flagged() -> None:
    draft = "Ada Quill climbed the stairs."
    snapshot = _snapshot(chapter=7, setups=(_setup(due=1),))
    assert overdue_setup_findings(draft, snapshot, _beats(chapter=7, payoff=["brass-key"]), 7) == []
    paid = Setup("brass-key", "The brass key.", 1, 1, 6, ("ada-quill",))
    assert overdue_setup_findings(draft, _snapshot(chapter=7, setups=(paid,)), _beats(), 7) == []


# --- all checks together ----------------------------------------------------------------------

MIXED = (
    "Adda frowned at the sea. Ada Quill was in Saltmere, waiting.\n\n"
    '"We should go," Tobin said. Ada stood in Greyford. Ada\'s green eyes narrowed.'
)


def test_check_draft_orders_majors_first_by_position_without_duplicates() -> None:
    snapshot = _snapshot(setups=(_setup(due=1),))
    issues = check_draft(MIXED, snapshot, _beats(), 5)
    assert [(i.severity, i.quote) for i in issues] == [
        ("major", '"We should go," Tobin said.'),
        ("major", "Ada stood in Greyford."),
        ("major", "Ada's green eyes narrowed."),
        ("minor", "Adda frowned at the sea."),
        ("minor", "Ada Quill was in Saltmere, waiting."),
    ]
    assert check_draft(MIXED, snapshot, _beats(), 5) == issues
    _assert_well_formed(issues, MIXED)


def test_long_sentences_are_clipped_to_a_verbatim_window() -> None:
    padding = ", and the wind went on" * 40
    draft = f"The rain fell{padding}, and Tobin walked on{padding}."
    issues = dead_character_findings(draft, _snapshot(), _beats(), 5)
    assert len(issues) == 1
    assert len(issues[0].quote) <= 600
    assert "Tobin walked" in issues[0].quote and issues[0].quote in draft


def _verdict(issues: list[ReviewIssue]) -> Verdict:
    scores = Scores(prose=8, coherence=8, pacing=8, character=8, consistency=8)
    return Verdict(scores=scores, issues=issues, summary="Fine.")


def test_findings_are_merged_into_the_verdict() -> None:
    findings = check_draft(MIXED, _snapshot(), _beats(), 5)
    restated = findings[0].model_copy(update={"severity": "minor", "problem": "Tobin talks."})
    own = ReviewIssue(
        severity="minor", category="prose", quote="Adda frowned", problem="Flat.", suggestion=""
    )
    merged = with_findings(_verdict([restated, own]), findings)
    assert merged.issues == [*findings, own]
    assert with_findings(_verdict([own]), []).issues == [own]

    # Findings are never dropped; model issues only fill the list up to twenty.
    many = [own.model_copy(update={"quote": f"q{n}"}) for n in range(20)]
    assert merge_issues(findings, many) == [*findings, *many[: 20 - len(findings)]]
    assert merge_issues([*findings, *findings], []) == findings


# --- integration with the SQL world memory ----------------------------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[WorldMemory]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'world.sqlite3'}")
    memory = SqlWorldMemory(engine)
    await memory.setup()
    try:
        yield memory
    finally:
        await memory.close()
        await engine.dispose()


SEED = WorldChanges(
    entities=(
        EntitySpec(
            "ada-quill",
            "character",
            "Ada Quill",
            ("Ada",),
            fixed={"eye_colour": "grey", "species": "human"},
            mutable={"status": "alive", "hair_colour": "black"},
        ),
        EntitySpec(
            "tobin-venn", "character", "Tobin Venn", ("Tobin",), mutable={"status": "alive"}
        ),
        EntitySpec("saltmere", "location", "Saltmere"),
        EntitySpec("greyford", "location", "Greyford"),
    ),
    facts=(
        FactSpec("ada-quill", "located_in", object="saltmere"),
        FactSpec("tobin-venn", "located_in", object="saltmere"),
    ),
    setups=(SetupSpec("brass-key", "The brass key opens a door.", 1, 2, ("ada-quill",)),),
)


async def _build(world: WorldMemory) -> str:
    novel = str(uuid.uuid4())
    await world.apply(novel, 0, SEED)
    # Chapter 3 kills Tobin; chapter 4 Ada dyes her hair (a mutable attribute).
    await world.apply(novel, 3, WorldChanges(facts=(FactSpec("tobin-venn", "status", "dead"),)))
    await world.apply(novel, 4, WorldChanges(facts=(FactSpec("ada-quill", "hair_colour", "red"),)))
    return novel


INTEGRATION_DRAFT = (
    "Ada Quill was in Saltmere at dusk. Ada's red hair was wet with spray. "
    '"Light the lamp," Tobin said. They buried Tobin in the end. '
    "Ada's green eyes stung. Ada stood in Greyford."
)


async def test_consistency_findings_read_the_world_as_of_the_chapter(world: WorldMemory) -> None:
    novel = await _build(world)
    issues = await consistency_findings(world, novel, 7, _beats(chapter=7), INTEGRATION_DRAFT)
    assert [(i.severity, i.quote) for i in issues] == [
        ("major", '"Light the lamp," Tobin said.'),
        ("major", "Ada's green eyes stung."),
        ("major", "Ada stood in Greyford."),
        ("minor", "Ada Quill was in Saltmere at dusk."),
    ]
    assert "'dead' since chapter 3" in issues[0].problem
    assert "'brass-key'" in issues[3].problem and "5 chapters late" in issues[3].problem


async def test_before_the_death_and_with_explicit_events_nothing_is_reported(
    world: WorldMemory,
) -> None:
    novel = await _build(world)
    draft = (
        "Ada Quill was in Saltmere at dusk. "
        '"Light the lamp," Tobin said. Ada walked to Greyford. Ada stood in Greyford.'
    )
    # Chapter 2: Tobin is alive, the set-up is due now, Ada's walk is narrated.
    assert await consistency_findings(world, novel, 2, _beats(chapter=2), draft) == []
    # Chapter 3 is the chapter of his death (as recorded): he may speak before it.
    dying = draft + " Tobin died there, quickly."
    assert await consistency_findings(world, novel, 3, _beats(chapter=3), dying) == []
    # A move event in the beats instead of narrated travel.
    moved = "Ada Quill was in Saltmere at dusk. Ada stood in Greyford."
    move = [PlannedEvent(kind="move", character="Ada Quill", target="Greyford")]
    beats = _beats(chapter=2, events=move)
    assert await consistency_findings(world, novel, 2, beats, moved) == []


# --- the reviewer node ------------------------------------------------------------------------


async def test_reviewer_reports_a_dead_character_speaking(backends: Backends) -> None:
    ctx = backends.context
    novel = str(uuid.uuid4())
    await ctx.store.create_novel(novel, "A lighthouse keeper and a key.", 5, "fantasy")
    await _build(ctx.world)  # another novel's world must not leak into this one
    await ctx.world.apply(novel, 0, SEED)
    await ctx.world.apply(novel, 3, WorldChanges(facts=(FactSpec("tobin-venn", "status", "dead"),)))
    draft = (
        "Rain came in off the sea in long grey sheets. Ada Quill climbed to the lamp room "
        "at Saltmere and trimmed the wick.\n\n"
        '"The tide is wrong tonight," Tobin said.\n\n'
        "Ada did not answer. She watched the water rise."
    )
    version = await ctx.store.save_version(str(uuid.uuid4()), novel, 4, "draft", "Tide", draft)
    state: dict[str, Any] = {
        "premise": "A lighthouse keeper and a key.",
        "chapters": 5,
        "novel_id": novel,
        "chapter": 4,
        "revision": 0,
        "draft_id": version.id,
        "beats": _beats(chapter=4).model_dump(),
    }
    events: list[dict[str, Any]] = []
    update = await reviewer(state, Runtime(context=ctx, stream_writer=events.append))  # type: ignore[arg-type]

    verdict = update["verdict"]
    assert verdict["decision"] != "accept"
    found = [
        i for i in verdict["issues"] if i["quote"] == '"The tide is wrong tonight," Tobin said.'
    ]
    assert found, verdict["issues"]
    assert found[0]["severity"] == "major" and found[0]["category"] == "consistency"
    assert "Tobin Venn is dead" in found[0]["problem"]
    assert update.get("revision") == 1
    decided = [e for e in events if e["step"] in ("accept", "revise", "accept_with_issues")]
    assert decided and any("Tobin" in f for f in decided[0]["findings"])
