"""Story integrity: claims checked against the world, recorded into it, and text checks.

The planted cases of ``tests/benchmarks/consistency.py`` (every kind, every gap, each with
look-alikes) run here through the real SQL world memory on SQLite: every contradiction
must be found and no look-alike flagged. The benchmark prints the same figures.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from errors import NotFound
from memory.app.sql import SqlAppStore
from memory.db import make_engine
from memory.text import has_cjk, is_cjk, text_length
from memory.world.port import EntitySpec, FactSpec, WorldChanges
from memory.world.sql import SqlWorldMemory
from nodes.integrity import (
    TIMELINE_KEY,
    check_claims,
    length_findings,
    locate,
    repetition_findings,
    values_conflict,
)
from nodes.schemas import ChapterClaims
from nodes.world_view import world_brief
from nodes.worldsmith import claims_to_world
from tests.benchmarks import consistency

NOVEL = "00000000-0000-4000-8000-0000000000aa"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SqlWorldMemory]:
    """The SQL world memory on a fresh SQLite file."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'world.db'}")
    memory = SqlWorldMemory(engine)
    await memory.setup()
    yield memory
    await memory.close()
    await engine.dispose()


async def test_every_planted_contradiction_is_found_and_no_look_alike_flagged(
    world: SqlWorldMemory,
) -> None:
    outcomes = [await consistency.run_case(world, case) for case in consistency.cases((1, 5))]
    kinds = {o.case.kind for o in outcomes}
    assert kinds == set(consistency.KINDS) and len(kinds) == 8
    missed = [
        (o.case.kind, o.case.variant, o.case.gap)
        for o in outcomes
        if o.case.contradiction and not o.found
    ]
    alarms = [
        (o.case.kind, o.case.variant, [f.problem for f in o.majors])
        for o in outcomes
        if o.false_alarm
    ]
    assert missed == [] and alarms == []
    for outcome in outcomes:
        draft = outcome.case.draft.text()
        assert all(f.quote in draft for f in outcome.findings)


def test_a_quote_copied_loosely_is_found_in_the_draft() -> None:
    draft = "Rain fell.\n\nMara  stood at the Market, counting coins. Then she left."
    assert locate(draft, "Mara  stood at the Market") == (12, "Mara  stood at the Market")
    assert locate(draft, "mara stood at the market") == (12, "Mara  stood at the Market")
    found = locate(draft, "Mara was standing at the Market counting her coins")
    assert found is not None and found[1] == "Mara  stood at the Market, counting coins."
    assert locate(draft, "Tobin sailed away") is None


def test_values_conflict_by_meaning_not_spelling() -> None:
    assert not values_conflict("grey", "silver")
    assert not values_conflict("grey-green", "green")
    assert values_conflict("grey", "blue")
    assert not values_conflict("tall", "very tall")
    assert values_conflict("left cheek", "right cheek")
    assert values_conflict("17", "30")
    assert not values_conflict("dark", "grey")  # vague words never contradict


def test_text_length_counts_words_or_cjk_characters() -> None:
    assert text_length("Mara climbed the stairs.") == 4
    assert text_length("玛拉爬上了楼梯。") == 7
    assert is_cjk("玛拉爬上了楼梯。她点亮了灯。") and not is_cjk("Mara 爬")
    short = length_findings("玛拉爬上了楼梯。", 400)
    assert short and short[0].severity == "major" and "7 characters" in short[0].problem
    assert length_findings("word " * 300, 400) == []
    long = length_findings("Word after word. " * 400, 400)
    assert long and long[0].severity == "minor"


def test_repetition_within_and_across_chapters_is_found() -> None:
    paragraph = (
        "The wind came off the water in long cold gusts that rattled every shutter on the "
        "keeper's house and set the old bell humming in its frame."
    )
    other = "Mara went down to the harbour, where the boats knocked together in the swell."
    within = repetition_findings(f"{paragraph}\n\n{other}\n\n{paragraph}")
    assert [f.kind for f in within] == ["repetition"]
    assert "paragraph 1 of this chapter" in within[0].problem
    across = repetition_findings(f"{other}\n\n{paragraph}", [(1, f"Intro.\n\n{paragraph}")])
    assert len(across) == 1 and "chapter 1" in across[0].problem
    assert repetition_findings(f"{other}\n\n{paragraph}", [(1, "Something else entirely.")]) == []
    cjk = "风从海上吹来，吹得窗板咯咯作响，钟在架子上嗡嗡作响，玛拉站在灯塔上看着远方的船只。"
    assert [f.kind for f in repetition_findings(f"{cjk}\n\n玛拉下楼了。\n\n{cjk}")] == [
        "repetition"
    ]
    # A Chinese book's findings are worded in Chinese.
    [zh] = repetition_findings(f"{cjk}\n\n玛拉下楼了。\n\n{cjk}", language="zh")
    assert zh.problem == "第3段几乎逐字重复了本章第1段。"
    [short] = length_findings("玛拉爬上了楼梯。", 400, language="zh-Hans")
    assert short.problem == "本章共7字，远少于目标的400字。"


async def test_findings_of_every_kind_are_worded_in_a_chinese_book_s_language(
    world: SqlWorldMemory,
) -> None:
    english = ("but", "the", "and", "not", "here")
    worded: set[str] = set()
    for case in consistency.cases((1,)):
        if not case.contradiction:
            continue
        novel = str(uuid.uuid4())
        await consistency.build_world(world, novel, case)
        snapshot = await world.world_as_of(novel, case.chapter)
        claims = case.draft.chapter_claims()
        draft = case.draft.text()
        # The world's names (English here) and the draft's words may be quoted as they are.
        names = sorted(
            {n for e in snapshot.entities for n in (e.name, e.key, *e.aliases)}
            | {t.rstrip(".") for u in snapshot.setups for t in (u.key, u.description)},
            key=len,
        )
        for finding in check_claims(draft, claims, snapshot, case.chapter, language="zh"):
            for text in (finding.problem, finding.suggestion):
                for name in [*reversed(names), *re.findall(r"“([^”]*)”", text)]:
                    text = text.replace(name, "")
                words = set(re.findall(r"[a-z]+", text))
                assert has_cjk(text) and not words & set(english), text
            worded.add(finding.kind)
    assert worded == set(consistency.KINDS)


async def test_claims_of_an_accepted_chapter_are_recorded_in_the_world(
    world: SqlWorldMemory,
) -> None:
    await world.apply(NOVEL, 0, consistency.seed())
    await world.apply(NOVEL, 1, consistency.ILSE_HOLDS)
    draft = (
        "Ilse pressed the Brass Key into Tobin's hand. Tobin walked to the Market. "
        "Ilse told Tobin that Mara was the old king's daughter. From that night on, Mara "
        "called herself Wren. Wren had dyed her hair red with madder root. Two days later "
        "the bell rang. Mara was seventeen. Oren fell and did not rise."
    )
    claims = ChapterClaims.model_validate(
        {
            "summary": "Keys and secrets change hands.",
            "items": [
                {
                    "item": "the Brass Key",
                    "character": "Tobin",
                    "action": "receives",
                    "quote": "Ilse pressed the Brass Key into Tobin's hand.",
                }
            ],
            "travel": [
                {"character": "Tobin", "to": "the Market", "quote": "Tobin walked to the Market."}
            ],
            "knowledge": [
                {
                    "character": "Tobin",
                    "secret": "Mara is the old king's daughter",
                    "action": "learns",
                    "quote": "Ilse told Tobin that Mara was the old king's daughter.",
                },
                {
                    "character": "Mara",
                    "secret": "the bell hides a second key",
                    "action": "learns",
                    "quote": "the bell rang",
                },
            ],
            "renames": [
                {"old": "Mara", "new": "Wren", "quote": "Mara called herself Wren"},
            ],
            "attributes": [
                {
                    "entity": "Wren",
                    "attribute": "hair_colour",
                    "value": "red",
                    "cause": "dyed with madder root",
                    "quote": "Wren had dyed her hair red with madder root.",
                },
                {
                    "entity": "Tobin",
                    "attribute": "eye_colour",
                    "value": "brown",
                    "permanent": True,
                    "quote": "Tobin",
                },
            ],
            "time": [{"kind": "elapsed", "value": 2, "quote": "Two days later"}],
            "deaths": [{"character": "Oren", "quote": "Oren fell and did not rise."}],
            "planted": [
                {
                    "key": "second-key",
                    "description": "the bell hides a second key",
                    "payoff_chapter": 4,
                    "quote": "the bell rang",
                }
            ],
        }
    )
    before = await world.world_as_of(NOVEL, 2)
    assert check_claims(draft, claims, before, 2) == []
    result = await world.apply(NOVEL, 2, claims_to_world(before, 2, claims, draft))
    assert result.rejected == ()
    after = await world.world_as_of(NOVEL, 2)
    facts = {(f.subject, f.predicate, f.object or f.value) for f in after.facts}
    assert ("brass-key", "held_by", "tobin-hale") in facts
    assert ("tobin-hale", "located_in", "market") in facts
    assert ("tobin-hale", "knows", "the-heir") in facts
    assert (TIMELINE_KEY, "day", str(consistency.day_of(0) + 2)) in facts
    assert ("oren-kask", "status", "dead") in facts
    mara = after.entity("mara-venn")
    assert mara is not None and mara.name == "Wren" and "Mara Venn" in mara.aliases
    assert after.attributes("mara-venn")["hair_colour"] == "red"
    tobin = after.entity("tobin-hale")
    assert tobin is not None and tobin.fixed["eye_colour"] == "brown"
    secrets = [e for e in after.entities if e.kind == "secret"]
    assert {s.key for s in secrets} >= {"the-heir", "the-bell-hides-a-second-key"}
    assert [s.key for s in after.setups if s.planted_chapter == 2] == ["second-key"]
    # The writer's brief of the next chapter says who holds what and what day it is.
    brief = world_brief(after)
    assert brief.day == consistency.day_of(0) + 2
    key = next(p for p in brief.places if p.name == "the Brass Key")
    assert key.held_by == "Tobin Hale"
    assert "Story time" not in {p.name for p in brief.places}
    # The next chapter is checked against what this one recorded.
    nxt = "Tobin turned the Brass Key. Oren laughed. Wren's grey eyes narrowed."
    later = ChapterClaims.model_validate(
        {
            "summary": "Later.",
            "items": [{"item": "the Brass Key", "character": "Tobin", "quote": "Tobin turned"}],
            "present": [{"character": "Oren", "quote": "Oren laughed."}],
            "attributes": [
                {
                    "entity": "Wren",
                    "attribute": "eye_colour",
                    "value": "grey",
                    "quote": "Wren's grey eyes narrowed.",
                }
            ],
        }
    )
    found = check_claims(nxt, later, await world.world_as_of(NOVEL, 3), 3)
    assert [(f.kind, f.quote) for f in found] == [("life", "Oren laughed.")]


async def test_a_version_keeps_the_claims_and_findings_of_its_review(tmp_path: Path) -> None:
    store = SqlAppStore(make_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"))
    await store.setup()
    novel = str(uuid.uuid4())
    await store.create_novel(novel, "A premise.", 3, None)
    version = await store.save_version("v1", novel, 1, "draft", "One", "Text.")
    assert version.claims is None and version.findings is None
    claims = {"summary": "s", "present": [{"character": "Mara", "quote": "Text."}]}
    finding = {"kind": "life", "severity": "major", "quote": "Text.", "problem": "p"}
    await store.save_review("v1", claims, [finding])
    stored = await store.get_version("v1")
    assert stored.claims == claims and stored.findings == [finding]
    await store.save_review("v1", {"summary": "again"}, [])
    again = (await store.list_versions(novel, 1))[0]
    assert again.claims == {"summary": "again"} and again.findings == []
    with pytest.raises(NotFound):
        await store.save_review("nope", {}, [])
    await store.close()


async def test_name_drift_and_world_facts_need_no_english(world: SqlWorldMemory) -> None:
    await world.apply(
        NOVEL,
        0,
        WorldChanges(
            entities=(
                EntitySpec("lin", "character", "林晓月", fixed={"eye_colour": "黑色"}),
                EntitySpec("tower", "location", "白塔"),
                EntitySpec("port", "location", "港口"),
            ),
            facts=(FactSpec("lin", "located_in", object="tower"),),
        ),
    )
    draft = "林小月站在港口。她的眼睛是蓝色的。"
    claims = ChapterClaims.model_validate(
        {
            "summary": "林晓月在港口。",
            "present": [{"character": "林小月", "place": "港口", "quote": "林小月站在港口。"}],
            "attributes": [
                {
                    "entity": "林晓月",
                    "attribute": "eye_colour",
                    "value": "蓝色",
                    "quote": "她的眼睛是蓝色的。",
                }
            ],
        }
    )
    found = check_claims(draft, claims, await world.world_as_of(NOVEL, 1), 1)
    assert {f.kind for f in found} == {"name", "attribute"}
    assert all(f.severity == "major" and f.quote in draft for f in found)
    # A sister introduced as new, one character from her sibling's name, is no drift.
    sister = ChapterClaims.model_validate(
        {
            "summary": "林晓星来了。",
            "present": [{"character": "林晓星", "quote": "林晓星来了。"}],
            "new_entities": [{"name": "林晓星", "kind": "character"}],
        }
    )
    assert check_claims("林晓星来了。", sister, await world.world_as_of(NOVEL, 1), 1) == []


async def test_an_accepted_contradiction_becomes_the_world_s_truth(
    world: SqlWorldMemory,
) -> None:
    """Accepting a finding records its change with the chapter; the same claims a chapter
    later then contradict nothing of that kind (for the kinds a world fact can settle)."""
    still: list[tuple[str, str]] = []
    settled = 0
    for case in consistency.cases((1,)):
        # A caused change of a fixed trait (a look-alike) must settle the world the same way.
        caused = case.kind == "attribute" and not case.contradiction
        if not case.contradiction and not caused:
            continue
        outcome = await consistency.run_case(world, case)
        changes = [fact for f in outcome.findings if f.kind == case.kind for fact in f.change]
        if not changes and not caused:
            continue  # nothing for the world to record: an author approves the text as is
        novel = str(uuid.uuid4())
        await consistency.build_world(world, novel, case)
        before = await world.world_as_of(novel, case.chapter)
        assert outcome.claims is not None
        draft = case.draft.text()
        recorded = claims_to_world(before, case.chapter, outcome.claims, draft)
        extra = tuple(f for f in changes if f not in recorded.facts)
        batch = WorldChanges(
            entities=recorded.entities,
            facts=recorded.facts + extra,
            ended=recorded.ended,
            setups=recorded.setups,
            paid_off=recorded.paid_off,
            renames=recorded.renames,
        )
        assert not (await world.apply(novel, case.chapter, batch)).rejected
        after = await world.world_as_of(novel, case.chapter + 1)
        again = check_claims(draft, outcome.claims, after, case.chapter + 1)
        settled += 1
        if any(f.kind == case.kind and f.severity == "major" for f in again):
            still.append((case.kind, case.variant))
    assert settled >= 10 and still == [], still
