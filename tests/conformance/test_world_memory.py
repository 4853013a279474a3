"""Conformance suite of the world-memory port, run against every backend in conftest.

Written against :class:`memory.world.port.WorldMemory` only: no test reads a backend's
storage directly, so the same expectations hold for SQL and graph backends alike.
"""

from __future__ import annotations

import uuid

import pytest

from memory.world.port import (
    EXCLUSIVE_RELATIONS,
    EntitySpec,
    Fact,
    FactEnd,
    FactSpec,
    Rename,
    SetupSpec,
    WorldChanges,
    WorldMemory,
    WorldSnapshot,
)

# --- a small world --------------------------------------------------------------------

MARA = EntitySpec(
    key="mara",
    kind="character",
    name="Mara Voss",
    aliases=("Mara", "the Smuggler"),
    description="A smuggler who owes the guild.",
    fixed={"species": "human", "eye_colour": "grey"},
    mutable={"status": "alive", "occupation": "smuggler"},
)
TOBIN = EntitySpec(
    key="tobin",
    kind="character",
    name="Tobin Voss",
    aliases=("Tobin",),
    fixed={"species": "human"},
    mutable={"status": "alive"},
)
HARBOUR = EntitySpec(
    key="harbour", kind="location", name="Saltmarsh Harbour", aliases=("the Harbour",)
)
CITADEL = EntitySpec(key="citadel", kind="location", name="The Glass Citadel")
GUILD = EntitySpec(key="guild", kind="faction", name="Lantern Guild")

SEED = WorldChanges(
    entities=(MARA, TOBIN, HARBOUR, CITADEL, GUILD),
    facts=(
        FactSpec("mara", "located_in", object="harbour"),
        FactSpec("tobin", "located_in", object="harbour"),
        FactSpec("mara", "sibling_of", object="tobin"),
        FactSpec("tobin", "member_of", object="guild"),
    ),
    setups=(SetupSpec("the-debt", "Mara owes the guild a fortune", 1, 5, ("mara", "guild")),),
)

# A chapter that touches every kind of change, used by the re-apply and retract tests.
RICH_CHAPTER = WorldChanges(
    entities=(
        EntitySpec(
            key="wren",
            kind="character",
            name="Wren",
            aliases=("the Archivist",),
            description="Keeper of the citadel archive.",
            fixed={"species": "elf"},
            mutable={"status": "alive", "mood": "wary"},
        ),
        EntitySpec(key="mara", kind="character", name="Mara Voss", aliases=("Captain Voss",)),
        EntitySpec(
            key="tobin",
            kind="character",
            name="Tobin Voss",
            description="Mara's younger brother.",
            fixed={"height": "short"},
        ),
    ),
    facts=(
        FactSpec("mara", "located_in", object="citadel"),
        FactSpec("mara", "status", value="wounded"),
        FactSpec("mara", "ally_of", object="wren"),
        FactSpec("wren", "located_in", object="citadel"),
    ),
    ended=(FactEnd("tobin", "member_of", "guild"),),
    setups=(
        SetupSpec("the-letter", "Wren hides a letter", 2, 4, ("wren",)),
        SetupSpec("the-debt", "Mara owes the guild her ship", 1, 6, ("mara", "guild")),
    ),
    paid_off=("the-letter",),
)


async def apply_ok(world: WorldMemory, novel_id: str, chapter: int, changes: WorldChanges) -> None:
    """Apply a batch that must be accepted in full."""
    result = await world.apply(novel_id, chapter, changes)
    assert result.rejected == ()


def facts_about(snapshot: WorldSnapshot, subject: str, predicate: str) -> list[Fact]:
    """The facts of one subject and predicate in a snapshot."""
    return [f for f in snapshot.facts if f.subject == subject and f.predicate == predicate]


def objects(snapshot: WorldSnapshot, subject: str, predicate: str) -> set[str | None]:
    """The other ends of one subject's relationships of one type."""
    return {f.object for f in facts_about(snapshot, subject, predicate)}


async def history(world: WorldMemory, novel_id: str, last: int) -> list[WorldSnapshot]:
    """The snapshots at chapters 0..last."""
    return [await world.world_as_of(novel_id, chapter) for chapter in range(last + 1)]


def replace_chapter(snapshot: WorldSnapshot, chapter: int) -> WorldSnapshot:
    """The same world, said to stand at another chapter."""
    return WorldSnapshot(chapter, snapshot.entities, snapshot.facts, snapshot.setups)


# --- setup and entities ---------------------------------------------------------------


async def test_setup_is_idempotent(world: WorldMemory, novel_id: str) -> None:
    await world.setup()
    await apply_ok(world, novel_id, 0, SEED)
    await world.setup()
    assert (await world.world_as_of(novel_id, 0)).entity("mara") is not None


async def test_empty_novel_has_an_empty_world(world: WorldMemory, novel_id: str) -> None:
    snapshot = await world.world_as_of(novel_id, 3)
    assert snapshot == WorldSnapshot(chapter=3, entities=(), facts=(), setups=())
    assert await world.lookup(novel_id, "anyone") is None


async def test_seed_is_stored_as_given(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    snapshot = await world.world_as_of(novel_id, 0)

    assert snapshot.chapter == 0
    assert sorted(e.key for e in snapshot.entities) == [
        "citadel",
        "guild",
        "harbour",
        "mara",
        "tobin",
    ]
    mara = snapshot.entity("mara")
    assert mara is not None
    assert (mara.kind, mara.name, mara.description) == ("character", MARA.name, MARA.description)
    assert mara.aliases == ("Mara", "the Smuggler")
    assert dict(mara.fixed) == {"species": "human", "eye_colour": "grey"}
    assert mara.introduced_chapter == 0
    assert snapshot.attributes("mara") == {
        "species": "human",
        "eye_colour": "grey",
        "status": "alive",
        "occupation": "smuggler",
    }
    # Mutable attributes are facts valid from the apply chapter; fixed ones are not facts.
    assert {(f.predicate, f.value) for f in snapshot.facts if f.subject == "mara" and f.value} == {
        ("status", "alive"),
        ("occupation", "smuggler"),
    }
    for fact in snapshot.facts:
        assert (fact.valid_from_chapter, fact.valid_to_chapter, fact.source_chapter) == (0, None, 0)
    assert {(f.subject, f.predicate, f.object) for f in snapshot.relations("tobin")} == {
        ("tobin", "located_in", "harbour"),
        ("mara", "sibling_of", "tobin"),
        ("tobin", "member_of", "guild"),
    }
    assert [s.key for s in snapshot.setups] == ["the-debt"]
    setup = snapshot.setups[0]
    assert (setup.planted_chapter, setup.due_chapter, setup.paid_off_chapter) == (1, 5, None)
    assert setup.entities == ("mara", "guild")


async def test_entities_appear_from_their_introduction(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    wren = EntitySpec(key="wren", kind="character", name="Wren", mutable={"mood": "wary"})
    await apply_ok(world, novel_id, 3, WorldChanges(entities=(wren,)))

    assert (await world.world_as_of(novel_id, 2)).entity("wren") is None
    at_three = await world.world_as_of(novel_id, 3)
    found = at_three.entity("wren")
    assert found is not None
    assert found.introduced_chapter == 3
    [mood] = facts_about(at_three, "wren", "mood")
    assert (mood.value, mood.valid_from_chapter, mood.source_chapter) == ("wary", 3, 3)
    assert (await world.world_as_of(novel_id, 9)).attributes("wren")["mood"] == "wary"


async def test_upsert_merges_aliases_without_duplicates(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    again = EntitySpec(
        key="mara",
        kind="character",
        name="Mara Voss",
        aliases=("Mara", " mara ", "THE SMUGGLER", "Captain Voss", "captain voss"),
    )
    await apply_ok(world, novel_id, 2, WorldChanges(entities=(again,)))
    await apply_ok(world, novel_id, 3, WorldChanges(entities=(again,)))

    stored = await world.lookup(novel_id, "mara")
    assert stored is not None
    assert stored.aliases == ("Mara", "the Smuggler", "Captain Voss")
    # Everything else about the entity is unchanged by an alias-only upsert.
    assert stored.introduced_chapter == 0
    assert stored.description == MARA.description
    assert dict(stored.fixed) == dict(MARA.fixed)
    before = (await world.world_as_of(novel_id, 1)).entity("mara")
    assert before is not None
    assert before.aliases == ("Mara", "the Smuggler")
    assert len([e for e in (await world.world_as_of(novel_id, 3)).entities if e.key == "mara"]) == 1


async def test_upsert_keeps_kind_name_and_description(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    result = await world.apply(
        novel_id,
        2,
        WorldChanges(
            entities=(
                EntitySpec(
                    key="mara",
                    kind="location",
                    name="Captain Mara",
                    description="Someone else entirely.",
                ),
                EntitySpec(key="tobin", kind="character", name="Tobin", description="A boy."),
            )
        ),
    )

    assert len(result.rejected) == 1
    assert "mara" in result.rejected[0].change
    assert result.rejected[0].reason
    snapshot = await world.world_as_of(novel_id, 2)
    mara = snapshot.entity("mara")
    assert mara is not None
    assert (mara.kind, mara.name, mara.description) == ("character", "Mara Voss", MARA.description)
    # A different name is another way to call the same entity.
    assert "Captain Mara" in mara.aliases
    found = await world.lookup(novel_id, "captain mara")
    assert found is not None
    assert found.key == "mara"
    # An empty description is filled from the chapter that supplies one.
    tobin_now = snapshot.entity("tobin")
    tobin_before = (await world.world_as_of(novel_id, 1)).entity("tobin")
    assert tobin_now is not None
    assert tobin_before is not None
    assert (tobin_before.description, tobin_now.description) == ("", "A boy.")


# --- lookup ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("mara", "mara"),
        ("MARA", "mara"),
        ("Mara Voss", "mara"),
        ("  mara voss\t", "mara"),
        ("the smuggler", "mara"),
        (" THE SMUGGLER ", "mara"),
        ("tobin", "tobin"),
        ("saltmarsh harbour", "harbour"),
        ("The Harbour", "harbour"),
        ("harbour", "harbour"),
        ("the glass citadel", "citadel"),
        ("lantern guild", "guild"),
        ("nobody", None),
        ("", None),
        ("   ", None),
    ],
)
async def test_lookup_by_key_name_or_alias(
    world: WorldMemory, novel_id: str, query: str, expected: str | None
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    found = await world.lookup(novel_id, query)
    assert (found.key if found else None) == expected


async def test_lookup_returns_the_whole_entity(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    found = await world.lookup(novel_id, "The Smuggler")
    assert found == (await world.world_as_of(novel_id, 0)).entity("mara")


async def test_lookup_prefers_a_key_to_another_entitys_alias(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    # "Mara" becomes an alias of Tobin too; the key "mara" still names Mara.
    tobin = EntitySpec(key="tobin", kind="character", name="Tobin Voss", aliases=("mara",))
    await apply_ok(world, novel_id, 1, WorldChanges(entities=(tobin,)))
    found = await world.lookup(novel_id, "MARA")
    assert found is not None
    assert found.key == "mara"


# --- rejections -----------------------------------------------------------------------


async def test_fixed_contradiction_is_rejected_and_nothing_else_lost(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    batch = WorldChanges(
        entities=(
            EntitySpec(
                key="mara",
                kind="character",
                name="Mara Voss",
                aliases=("Captain Voss",),
                fixed={"eye_colour": "blue", "species": "Human", "height": "tall"},
            ),
            EntitySpec(key="wren", kind="character", name="Wren"),
        ),
        facts=(
            FactSpec("mara", "eye_colour", value="green"),
            FactSpec("mara", "species", value="human"),
            FactSpec("tobin", "status", value="wounded"),
            FactSpec("wren", "located_in", object="citadel"),
        ),
    )
    result = await world.apply(novel_id, 2, batch)

    # Two contradictions of eye_colour; restating "Human" for species is no contradiction.
    assert len(result.rejected) == 2
    assert all("eye_colour" in r.change and r.reason for r in result.rejected)
    snapshot = await world.world_as_of(novel_id, 2)
    mara = snapshot.entity("mara")
    assert mara is not None
    assert dict(mara.fixed) == {"species": "human", "eye_colour": "grey", "height": "tall"}
    assert "Captain Voss" in mara.aliases
    assert snapshot.attributes("mara")["eye_colour"] == "grey"
    # Restating a fixed attribute does not turn it into a fact.
    assert facts_about(snapshot, "mara", "species") == []
    assert facts_about(snapshot, "mara", "eye_colour") == []
    assert snapshot.attributes("tobin")["status"] == "wounded"
    assert objects(snapshot, "wren", "located_in") == {"citadel"}
    # The fixed attribute added at chapter 2 is not known before it.
    earlier = (await world.world_as_of(novel_id, 1)).entity("mara")
    assert earlier is not None
    assert "height" not in earlier.fixed


async def test_unknown_entities_are_rejected_not_raised(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    batch = WorldChanges(
        facts=(
            FactSpec("ghost", "status", value="restless"),
            FactSpec("mara", "ally_of", object="ghost"),
            FactSpec("mara", "ally_of", object="tobin"),
            FactSpec("mara", "mood", value="tense", object="tobin"),
            FactSpec("mara", "mood"),
        ),
        ended=(FactEnd("ghost", "located_in"), FactEnd("mara", "ally_of", "phantom")),
        paid_off=("no-such-setup",),
    )
    result = await world.apply(novel_id, 1, batch)

    assert len(result.rejected) == 7
    assert all(r.change and r.reason for r in result.rejected)
    assert sum("ghost" in r.change for r in result.rejected) == 3
    snapshot = await world.world_as_of(novel_id, 1)
    assert objects(snapshot, "mara", "ally_of") == {"tobin"}
    assert snapshot.entity("ghost") is None
    assert "mood" not in snapshot.attributes("mara")


# --- facts over time ------------------------------------------------------------------


async def test_attribute_change_closes_the_previous_value(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 3, WorldChanges(facts=(FactSpec("mara", "status", "dead"),)))

    at_two = await world.world_as_of(novel_id, 2)
    [alive] = facts_about(at_two, "mara", "status")
    assert (alive.value, alive.valid_from_chapter, alive.valid_to_chapter) == ("alive", 0, 3)
    for chapter in (3, 4, 20):
        snapshot = await world.world_as_of(novel_id, chapter)
        [dead] = facts_about(snapshot, "mara", "status")
        assert (dead.value, dead.valid_from_chapter, dead.valid_to_chapter) == ("dead", 3, None)
        assert dead.source_chapter == 3
        assert snapshot.attributes("mara")["status"] == "dead"
    # Other attributes of the same subject are untouched.
    assert (await world.world_as_of(novel_id, 3)).attributes("mara")["occupation"] == "smuggler"


async def test_mutable_attributes_of_an_upsert_are_facts_from_its_chapter(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    upsert = EntitySpec(
        key="tobin", kind="character", name="Tobin Voss", mutable={"status": "missing"}
    )
    await apply_ok(world, novel_id, 4, WorldChanges(entities=(upsert,)))

    assert (await world.world_as_of(novel_id, 3)).attributes("tobin")["status"] == "alive"
    [missing] = facts_about(await world.world_as_of(novel_id, 4), "tobin", "status")
    assert (missing.value, missing.valid_from_chapter, missing.source_chapter) == ("missing", 4, 4)


@pytest.mark.parametrize("predicate", sorted(EXCLUSIVE_RELATIONS))
async def test_exclusive_relation_closes_the_previous_one(
    world: WorldMemory, novel_id: str, predicate: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    first = WorldChanges(facts=(FactSpec("tobin", predicate, object="harbour"),))
    second = WorldChanges(facts=(FactSpec("tobin", predicate, object="citadel"),))
    await apply_ok(world, novel_id, 1, first)
    await apply_ok(world, novel_id, 3, second)

    assert objects(await world.world_as_of(novel_id, 2), "tobin", predicate) == {"harbour"}
    at_three = await world.world_as_of(novel_id, 3)
    assert objects(at_three, "tobin", predicate) == {"citadel"}
    # The seed already placed Tobin in the harbour, so re-asserting it kept that fact.
    started = 0 if predicate == "located_in" else 1
    before = facts_about(await world.world_as_of(novel_id, 2), "tobin", predicate)
    assert [(f.valid_from_chapter, f.valid_to_chapter) for f in before] == [(started, 3)]
    # Another subject's relation of the same type is not closed.
    assert objects(at_three, "mara", "located_in") == {"harbour"}


async def test_non_exclusive_relations_accumulate(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    wren = EntitySpec(key="wren", kind="character", name="Wren")
    await apply_ok(
        world,
        novel_id,
        1,
        WorldChanges(entities=(wren,), facts=(FactSpec("mara", "ally_of", object="tobin"),)),
    )
    await apply_ok(
        world, novel_id, 2, WorldChanges(facts=(FactSpec("mara", "ally_of", object="wren"),))
    )
    await apply_ok(
        world, novel_id, 3, WorldChanges(facts=(FactSpec("mara", "ally_of", object="tobin"),))
    )

    assert objects(await world.world_as_of(novel_id, 1), "mara", "ally_of") == {"tobin"}
    at_three = await world.world_as_of(novel_id, 3)
    allies = facts_about(at_three, "mara", "ally_of")
    assert sorted((f.object, f.valid_from_chapter) for f in allies) == [("tobin", 1), ("wren", 2)]
    assert all(f.valid_to_chapter is None for f in allies)


async def test_fact_end_closes_matching_open_facts(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(
        world,
        novel_id,
        1,
        WorldChanges(
            facts=(
                FactSpec("tobin", "member_of", object="citadel"),
                FactSpec("mara", "ally_of", object="tobin"),
            )
        ),
    )
    await apply_ok(
        world,
        novel_id,
        4,
        WorldChanges(
            ended=(
                FactEnd("tobin", "member_of", "guild"),
                FactEnd("mara", "sibling_of"),
                FactEnd("mara", "ally_of", "guild"),
                FactEnd("mara", "enemy_of"),
            )
        ),
    )

    at_three = await world.world_as_of(novel_id, 3)
    assert objects(at_three, "tobin", "member_of") == {"guild", "citadel"}
    assert objects(at_three, "mara", "sibling_of") == {"tobin"}
    at_four = await world.world_as_of(novel_id, 4)
    assert objects(at_four, "tobin", "member_of") == {"citadel"}
    assert facts_about(at_four, "mara", "sibling_of") == []
    # An end that names a different object leaves the relation alone.
    assert objects(at_four, "mara", "ally_of") == {"tobin"}
    [closed] = facts_about(at_three, "mara", "sibling_of")
    assert closed.valid_to_chapter == 4


async def test_last_single_valued_assertion_of_a_batch_wins(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    batch = WorldChanges(
        facts=(
            FactSpec("mara", "status", value="wounded"),
            FactSpec("mara", "located_in", object="citadel"),
            FactSpec("mara", "status", value="dead"),
            FactSpec("mara", "located_in", object="harbour"),
        )
    )
    await apply_ok(world, novel_id, 2, batch)
    await apply_ok(world, novel_id, 2, batch)

    snapshot = await world.world_as_of(novel_id, 2)
    assert [f.value for f in facts_about(snapshot, "mara", "status")] == ["dead"]
    # Re-asserting the current location changes nothing: the seed fact stays open.
    [location] = facts_about(snapshot, "mara", "located_in")
    assert (location.object, location.valid_from_chapter) == ("harbour", 0)


async def test_world_as_of_walks_through_history(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    moves = {2: "citadel", 5: "harbour", 7: "citadel"}
    for chapter, place in moves.items():
        await apply_ok(
            world,
            novel_id,
            chapter,
            WorldChanges(facts=(FactSpec("mara", "located_in", object=place),)),
        )
    expected = "harbour"
    for chapter in range(10):
        expected = moves.get(chapter, expected)
        snapshot = await world.world_as_of(novel_id, chapter)
        assert snapshot.chapter == chapter
        assert objects(snapshot, "mara", "located_in") == {expected}


async def test_a_late_applied_earlier_chapter_does_not_override_later_ones(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    chapter_five = WorldChanges(
        facts=(FactSpec("mara", "status", "dead"), FactSpec("mara", "mood", "grim"))
    )
    await apply_ok(world, novel_id, 5, chapter_five)
    await apply_ok(world, novel_id, 6, WorldChanges(ended=(FactEnd("mara", "located_in"),)))
    before = await history(world, novel_id, 8)
    # Chapter 3 is recorded after chapters 5 and 6 (e.g. a rewritten chapter applied again).
    late = WorldChanges(
        facts=(
            FactSpec("mara", "status", "wounded"),
            FactSpec("mara", "located_in", object="citadel"),
            FactSpec("mara", "mood", "calm"),
        )
    )
    await apply_ok(world, novel_id, 3, late)

    statuses = {
        c: [f.value for f in facts_about(await world.world_as_of(novel_id, c), "mara", "status")]
        for c in (2, 3, 4, 5, 8)
    }
    assert statuses == {
        2: ["alive"],
        3: ["wounded"],
        4: ["wounded"],
        5: ["dead"],
        8: ["dead"],
    }
    moods = [
        [f.value for f in facts_about(await world.world_as_of(novel_id, c), "mara", "mood")]
        for c in (2, 3, 4, 5)
    ]
    assert moods == [[], ["calm"], ["calm"], ["grim"]]
    # Chapter 6 ended Mara's stay wherever she was, so it ends the late-recorded one too.
    places = [objects(await world.world_as_of(novel_id, c), "mara", "located_in") for c in range(8)]
    assert places == [{"harbour"}] * 3 + [{"citadel"}] * 3 + [set()] * 2

    await world.retract_chapter(novel_id, 3)
    assert await history(world, novel_id, 8) == before


# --- story integrity: knowledge, custody, caused changes, renames ----------------------


async def test_a_character_knows_a_secret_from_the_chapter_that_reveals_it(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    debt = EntitySpec(
        key="true-debt",
        kind="secret",
        name="The guild forged Mara's debt",
        aliases=("the forgery",),
    )
    await apply_ok(world, novel_id, 1, WorldChanges(entities=(debt,)))
    await apply_ok(
        world,
        novel_id,
        3,
        WorldChanges(facts=(FactSpec("tobin", "knows", object="true-debt"),)),
    )

    assert objects(await world.world_as_of(novel_id, 2), "tobin", "knows") == set()
    at_three = await world.world_as_of(novel_id, 3)
    assert objects(at_three, "tobin", "knows") == {"true-debt"}
    secret = at_three.entity("true-debt")
    assert secret is not None
    assert secret.kind == "secret"
    found = await world.lookup(novel_id, "The Forgery")
    assert found is not None
    assert found.key == "true-debt"
    # Knowledge is not exclusive: knowing a second secret keeps the first.
    other = EntitySpec(key="map-fake", kind="secret", name="The map is a fake")
    await apply_ok(
        world,
        novel_id,
        4,
        WorldChanges(entities=(other,), facts=(FactSpec("tobin", "knows", object="map-fake"),)),
    )
    assert objects(await world.world_as_of(novel_id, 4), "tobin", "knows") == {
        "true-debt",
        "map-fake",
    }
    assert {f.subject for f in (await world.neighbourhood(novel_id, "true-debt", 4)).facts} == {
        "tobin"
    }

    await world.retract_chapter(novel_id, 3)
    for chapter in (3, 4, 5):
        snapshot = await world.world_as_of(novel_id, chapter)
        assert objects(snapshot, "tobin", "knows") == ({"map-fake"} if chapter >= 4 else set())


async def test_custody_passes_from_hand_to_hand(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    ledger = EntitySpec(key="ledger", kind="item", name="The guild ledger")
    await apply_ok(
        world,
        novel_id,
        1,
        WorldChanges(entities=(ledger,), facts=(FactSpec("ledger", "held_by", object="mara"),)),
    )
    await apply_ok(
        world, novel_id, 4, WorldChanges(facts=(FactSpec("ledger", "held_by", object="tobin"),))
    )

    holders = [objects(s, "ledger", "held_by") for s in await history(world, novel_id, 6)]
    assert holders == [set()] + [{"mara"}] * 3 + [{"tobin"}] * 3
    [with_mara] = facts_about(await world.world_as_of(novel_id, 2), "ledger", "held_by")
    assert (with_mara.valid_from_chapter, with_mara.valid_to_chapter) == (1, 4)

    await world.retract_chapter(novel_id, 4)
    holders = [objects(s, "ledger", "held_by") for s in await history(world, novel_id, 6)]
    assert holders == [set()] + [{"mara"}] * 6


async def test_a_fixed_attribute_changes_for_a_cause(world: WorldMemory, novel_id: str) -> None:
    wren = EntitySpec(key="wren", kind="character", name="Wren", fixed={"hair_colour": "black"})
    await apply_ok(world, novel_id, 0, WorldChanges(entities=(wren,)))

    uncaused = await world.apply(
        novel_id, 5, WorldChanges(facts=(FactSpec("wren", "hair_colour", "blue"),))
    )
    assert len(uncaused.rejected) == 1
    assert "hair_colour" in uncaused.rejected[0].change
    assert "cause" in uncaused.rejected[0].reason
    assert (await world.world_as_of(novel_id, 5)).attributes("wren")["hair_colour"] == "black"

    dyed = WorldChanges(facts=(FactSpec("wren", "hair_colour", "blue", cause="dyed"),))
    await apply_ok(world, novel_id, 5, dyed)
    await apply_ok(world, novel_id, 5, dyed)
    at_four = await world.world_as_of(novel_id, 4)
    at_five = await world.world_as_of(novel_id, 5)
    assert at_four.attributes("wren")["hair_colour"] == "black"
    assert at_five.attributes("wren")["hair_colour"] == "blue"
    # The fixed value itself is still what the entity was introduced with.
    wren_at_five = at_five.entity("wren")
    assert wren_at_five is not None
    assert dict(wren_at_five.fixed) == {"hair_colour": "black"}
    [blue] = facts_about(at_five, "wren", "hair_colour")
    assert (blue.value, blue.valid_from_chapter, blue.valid_to_chapter) == ("blue", 5, None)

    # Restating what holds is a no-op; going back needs a cause as much as going away did.
    await apply_ok(
        world, novel_id, 7, WorldChanges(facts=(FactSpec("wren", "hair_colour", "blue"),))
    )
    assert await world.world_as_of(novel_id, 7) == replace_chapter(at_five, 7)
    back = await world.apply(
        novel_id, 8, WorldChanges(facts=(FactSpec("wren", "hair_colour", "black"),))
    )
    assert len(back.rejected) == 1
    await apply_ok(
        world,
        novel_id,
        8,
        WorldChanges(facts=(FactSpec("wren", "hair_colour", "black", cause="washed out"),)),
    )
    colours = [s.attributes("wren")["hair_colour"] for s in await history(world, novel_id, 9)]
    assert colours == ["black"] * 5 + ["blue"] * 3 + ["black"] * 2

    await world.retract_chapter(novel_id, 5)
    colours = [s.attributes("wren")["hair_colour"] for s in await history(world, novel_id, 9)]
    assert colours == ["black"] * 10


async def test_a_renamed_entity_is_known_by_every_name(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    before = await history(world, novel_id, 5)
    lookups_before = [await world.lookup(novel_id, q) for q in ("mara", "mara voss")]
    await apply_ok(world, novel_id, 3, WorldChanges(renames=(Rename("mara", "Captain Mara"),)))
    # Again, and to the name that holds: nothing more happens.
    await apply_ok(world, novel_id, 3, WorldChanges(renames=(Rename("mara", "Captain Mara"),)))
    await apply_ok(world, novel_id, 4, WorldChanges(renames=(Rename("mara", " captain MARA "),)))

    at_two = (await world.world_as_of(novel_id, 2)).entity("mara")
    assert at_two is not None
    assert (at_two.name, at_two.aliases) == ("Mara Voss", ("Mara", "the Smuggler"))
    at_three = await world.world_as_of(novel_id, 3)
    renamed = at_three.entity("mara")
    assert renamed is not None
    assert (renamed.name, renamed.aliases) == (
        "Captain Mara",
        ("Mara Voss", "Mara", "the Smuggler"),
    )
    # A rename is no fact of the snapshot; everything else about Mara is as it was.
    assert at_three.facts == before[3].facts
    assert at_three.attributes("mara") == before[3].attributes("mara")
    around = (await world.neighbourhood(novel_id, "tobin", 3)).entity("mara")
    assert around == renamed
    for query in ("Captain Mara", "mara voss", "the smuggler", "mara"):
        found = await world.lookup(novel_id, query)
        assert found == renamed, query

    await world.retract_chapter(novel_id, 3)
    assert await history(world, novel_id, 5) == before
    assert await world.lookup(novel_id, "captain mara") is None
    assert [await world.lookup(novel_id, q) for q in ("mara", "mara voss")] == lookups_before


async def test_renames_follow_one_another_and_unknown_entities_are_rejected(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 2, WorldChanges(renames=(Rename("tobin", "Brother Tobin"),)))
    await apply_ok(world, novel_id, 6, WorldChanges(renames=(Rename("tobin", "Abbot Tobin"),)))
    result = await world.apply(
        novel_id,
        4,
        WorldChanges(
            renames=(Rename("ghost", "The Spectre"),),
            facts=(FactSpec("tobin", "@name", value="Sneaky"),),
        ),
    )
    assert len(result.rejected) == 2
    assert "ghost" in result.rejected[0].change
    assert await world.lookup(novel_id, "the spectre") is None

    def names(snapshot: WorldSnapshot) -> tuple[str, tuple[str, ...]]:
        tobin = snapshot.entity("tobin")
        assert tobin is not None
        return tobin.name, tobin.aliases

    history_of_names = [names(s) for s in await history(world, novel_id, 7)]
    assert history_of_names == (
        [("Tobin Voss", ("Tobin",))] * 2
        + [("Brother Tobin", ("Tobin Voss", "Tobin"))] * 4
        + [("Abbot Tobin", ("Tobin Voss", "Tobin", "Brother Tobin"))] * 2
    )
    # A lookup shows the entity as it is now, under its latest name.
    found = await world.lookup(novel_id, "brother tobin")
    assert found is not None
    assert found.name == "Abbot Tobin"

    # Undoing the first rename leaves the second, from its own chapter on.
    await world.retract_chapter(novel_id, 2)
    history_of_names = [names(s) for s in await history(world, novel_id, 7)]
    assert (
        history_of_names
        == [("Tobin Voss", ("Tobin",))] * 6 + [("Abbot Tobin", ("Tobin Voss", "Tobin"))] * 2
    )
    assert await world.lookup(novel_id, "brother tobin") is None


# --- idempotence ----------------------------------------------------------------------


async def test_reapplying_a_batch_is_a_no_op(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    once = await history(world, novel_id, 4)
    found_once = await world.lookup(novel_id, "the archivist")

    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    assert await history(world, novel_id, 4) == once
    assert await world.lookup(novel_id, "the archivist") == found_once

    # A replayed older batch (e.g. after a crash) changes nothing either.
    await apply_ok(world, novel_id, 0, SEED)
    assert await history(world, novel_id, 4) == once


async def test_rich_chapter_is_applied_in_full(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    snapshot = await world.world_as_of(novel_id, 2)

    assert snapshot.attributes("wren") == {"species": "elf", "status": "alive", "mood": "wary"}
    assert snapshot.attributes("mara")["status"] == "wounded"
    assert objects(snapshot, "mara", "located_in") == {"citadel"}
    assert objects(snapshot, "mara", "ally_of") == {"wren"}
    assert facts_about(snapshot, "tobin", "member_of") == []
    tobin = snapshot.entity("tobin")
    assert tobin is not None
    assert tobin.description == "Mara's younger brother."
    assert dict(tobin.fixed) == {"species": "human", "height": "short"}
    setups = {s.key: s for s in snapshot.setups}
    assert setups["the-letter"].paid_off_chapter == 2
    assert setups["the-debt"].due_chapter == 6
    assert [s.key for s in snapshot.open_setups()] == ["the-debt"]


# --- set-ups --------------------------------------------------------------------------


async def test_setups_planted_replanned_and_paid_off(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    letter = SetupSpec("the-letter", "Wren hides a letter", 2, 4, ("mara",))
    await apply_ok(world, novel_id, 2, WorldChanges(setups=(letter,)))
    replanned = SetupSpec("the-debt", "Mara owes the guild her ship", 1, 7, ("mara", "guild"))
    await apply_ok(world, novel_id, 3, WorldChanges(setups=(replanned,)))
    await apply_ok(world, novel_id, 4, WorldChanges(paid_off=("the-letter",)))
    # Paying off again later keeps the chapter that did it.
    await apply_ok(world, novel_id, 6, WorldChanges(paid_off=("the-letter",)))

    def open_keys(snapshot: WorldSnapshot) -> list[str]:
        return sorted(s.key for s in snapshot.open_setups())

    at = {chapter: await world.world_as_of(novel_id, chapter) for chapter in range(8)}
    assert open_keys(at[1]) == ["the-debt"]
    assert open_keys(at[2]) == ["the-debt", "the-letter"]
    assert open_keys(at[3]) == ["the-debt", "the-letter"]
    assert open_keys(at[4]) == ["the-debt"]
    assert open_keys(at[7]) == ["the-debt"]
    letter_at = {c: next(s for s in at[c].setups if s.key == "the-letter") for c in (3, 4, 7)}
    assert [letter_at[c].paid_off_chapter for c in (3, 4, 7)] == [None, 4, 4]
    debt_at = {c: next(s for s in at[c].setups if s.key == "the-debt") for c in (2, 3)}
    assert (debt_at[2].due_chapter, debt_at[2].description) == (5, SEED.setups[0].description)
    assert (debt_at[3].due_chapter, debt_at[3].description) == (7, replanned.description)
    assert [s.key for s in at[1].setups] == ["the-debt"]


async def test_setup_created_and_paid_off_in_one_batch(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    twist = SetupSpec("the-twist", "A twist set up and resolved at once", 3, 3, ("tobin",))
    await apply_ok(world, novel_id, 3, WorldChanges(setups=(twist,), paid_off=("the-twist",)))
    [stored] = [s for s in (await world.world_as_of(novel_id, 3)).setups if s.key == "the-twist"]
    assert (stored.paid_off_chapter, stored.entities) == (3, ("tobin",))


async def test_unknown_setup_pay_off_is_rejected(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    result = await world.apply(novel_id, 2, WorldChanges(paid_off=("the-debt", "nothing")))
    assert len(result.rejected) == 1
    assert "nothing" in result.rejected[0].change
    debt = (await world.world_as_of(novel_id, 2)).setups[0]
    assert debt.paid_off_chapter == 2


# --- retraction -----------------------------------------------------------------------


async def test_retract_restores_the_prior_world_exactly(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 1, WorldChanges(facts=(FactSpec("tobin", "mood", "glum"),)))
    before = await history(world, novel_id, 5)
    lookups_before = [await world.lookup(novel_id, q) for q in ("mara", "tobin", "wren")]

    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    assert await history(world, novel_id, 5) != before
    await world.retract_chapter(novel_id, 2)

    assert await history(world, novel_id, 5) == before
    assert [await world.lookup(novel_id, q) for q in ("mara", "tobin", "wren")] == lookups_before
    assert await world.lookup(novel_id, "the archivist") is None
    assert await world.lookup(novel_id, "captain voss") is None

    # Retracting again, or a chapter that recorded nothing, changes nothing.
    await world.retract_chapter(novel_id, 2)
    await world.retract_chapter(novel_id, 9)
    assert await history(world, novel_id, 5) == before


async def test_reapplying_a_retracted_chapter_restores_it(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    first = await history(world, novel_id, 5)

    await world.retract_chapter(novel_id, 2)
    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    assert await history(world, novel_id, 5) == first
    found = await world.lookup(novel_id, "the archivist")
    assert found is not None
    assert found.key == "wren"


async def test_rewritten_chapter_replaces_the_retracted_one(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    await world.retract_chapter(novel_id, 2)
    rewrite = WorldChanges(
        entities=(EntitySpec(key="wren", kind="item", name="The Wren Lantern"),),
        facts=(
            FactSpec("mara", "status", value="captured"),
            FactSpec("mara", "located_in", object="guild"),
        ),
    )
    await apply_ok(world, novel_id, 2, rewrite)

    snapshot = await world.world_as_of(novel_id, 2)
    wren = snapshot.entity("wren")
    assert wren is not None
    assert (wren.kind, wren.name, wren.aliases, dict(wren.fixed)) == (
        "item",
        "The Wren Lantern",
        (),
        {},
    )
    assert snapshot.attributes("wren") == {}
    assert [f.value for f in facts_about(snapshot, "mara", "status")] == ["captured"]
    assert objects(snapshot, "mara", "located_in") == {"guild"}
    assert objects(snapshot, "tobin", "member_of") == {"guild"}
    # History before the rewritten chapter is intact.
    at_one = await world.world_as_of(novel_id, 1)
    [alive] = facts_about(at_one, "mara", "status")
    assert (alive.value, alive.valid_to_chapter) == ("alive", 2)
    assert objects(at_one, "mara", "located_in") == {"harbour"}


async def test_retracting_an_earlier_chapter_keeps_later_ones(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 1, WorldChanges(facts=(FactSpec("mara", "status", "wounded"),)))
    await apply_ok(
        world, novel_id, 2, WorldChanges(facts=(FactSpec("mara", "located_in", object="citadel"),))
    )
    await apply_ok(world, novel_id, 3, WorldChanges(facts=(FactSpec("mara", "status", "dead"),)))
    await world.retract_chapter(novel_id, 1)

    snapshot = await world.world_as_of(novel_id, 2)
    [status] = facts_about(snapshot, "mara", "status")
    # Without chapter 1, Mara stays alive until chapter 3 kills her.
    assert (status.value, status.valid_from_chapter, status.valid_to_chapter) == ("alive", 0, 3)
    assert objects(snapshot, "mara", "located_in") == {"citadel"}
    statuses = [
        (await world.world_as_of(novel_id, c)).attributes("mara")["status"] for c in range(5)
    ]
    assert statuses == ["alive", "alive", "alive", "dead", "dead"]


async def test_retract_undoes_several_batches_of_one_chapter(
    world: WorldMemory, novel_id: str
) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 4, WorldChanges(facts=(FactSpec("mara", "status", "dead"),)))
    before = await history(world, novel_id, 6)
    await apply_ok(world, novel_id, 2, WorldChanges(facts=(FactSpec("mara", "status", "hurt"),)))
    await apply_ok(world, novel_id, 2, WorldChanges(facts=(FactSpec("mara", "status", "lost"),)))
    await apply_ok(world, novel_id, 2, WorldChanges(facts=(FactSpec("mara", "status", "weak"),)))
    statuses = [
        (await world.world_as_of(novel_id, c)).attributes("mara")["status"] for c in range(6)
    ]
    assert statuses == ["alive", "alive", "weak", "weak", "dead", "dead"]

    await world.retract_chapter(novel_id, 2)
    assert await history(world, novel_id, 6) == before


# --- neighbourhood --------------------------------------------------------------------


async def test_neighbourhood(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    extra = WorldChanges(
        entities=(
            EntitySpec(key="wren", kind="character", name="Wren", mutable={"mood": "wary"}),
            EntitySpec(key="oskar", kind="character", name="Oskar", mutable={"mood": "sly"}),
        ),
        facts=(
            FactSpec("wren", "ally_of", object="tobin"),
            FactSpec("oskar", "located_in", object="citadel"),
            FactSpec("mara", "rival_of", object="oskar"),
        ),
        setups=(SetupSpec("the-map", "Tobin keeps a map", 2, 5, ("tobin", "wren")),),
    )
    await apply_ok(world, novel_id, 2, extra)

    around = await world.neighbourhood(novel_id, "tobin", 2)
    assert around.chapter == 2
    assert sorted(e.key for e in around.entities) == ["guild", "harbour", "mara", "tobin", "wren"]
    assert {(f.subject, f.predicate, f.object) for f in around.facts if f.is_relationship} == {
        ("tobin", "located_in", "harbour"),
        ("tobin", "member_of", "guild"),
        ("mara", "sibling_of", "tobin"),
        ("wren", "ally_of", "tobin"),
    }
    assert around.attributes("wren") == {"mood": "wary"}
    assert around.attributes("mara")["status"] == "alive"
    assert around.attributes("tobin") == {"species": "human", "status": "alive"}
    assert [s.key for s in around.setups] == ["the-map"]

    # Earlier, the relationship with Wren and Wren herself were not there yet.
    earlier = await world.neighbourhood(novel_id, "tobin", 1)
    assert sorted(e.key for e in earlier.entities) == ["guild", "harbour", "mara", "tobin"]
    assert earlier.setups == ()
    assert await world.neighbourhood(novel_id, "ghost", 2) == WorldSnapshot(
        chapter=2, entities=(), facts=(), setups=()
    )


# --- novels ---------------------------------------------------------------------------


async def test_novels_never_see_each_other(world: WorldMemory, novel_id: str) -> None:
    other = str(uuid.uuid4())
    await apply_ok(world, novel_id, 0, SEED)
    twin = EntitySpec(key="mara", kind="character", name="Mara Quill", aliases=("Quill",))
    await apply_ok(
        world,
        other,
        0,
        WorldChanges(entities=(twin, HARBOUR), facts=(FactSpec("mara", "status", "exiled"),)),
    )

    mine = await world.world_as_of(novel_id, 0)
    theirs = await world.world_as_of(other, 0)
    assert sorted(e.key for e in theirs.entities) == ["harbour", "mara"]
    assert theirs.attributes("mara") == {"status": "exiled"}
    assert mine.attributes("mara")["status"] == "alive"
    assert await world.lookup(other, "the smuggler") is None
    assert await world.lookup(novel_id, "quill") is None
    # Facts naming an entity of another novel are rejected.
    result = await world.apply(
        other, 1, WorldChanges(facts=(FactSpec("mara", "ally_of", object="tobin"),))
    )
    assert len(result.rejected) == 1

    await world.retract_chapter(other, 0)
    assert await world.world_as_of(novel_id, 0) == mine
    await apply_ok(world, other, 0, WorldChanges(entities=(twin,)))
    await world.drop_novel(other)
    assert await world.world_as_of(novel_id, 0) == mine
    assert await world.world_as_of(other, 0) == WorldSnapshot(0, (), (), ())


async def test_drop_novel_removes_its_world(world: WorldMemory, novel_id: str) -> None:
    await apply_ok(world, novel_id, 0, SEED)
    await apply_ok(world, novel_id, 2, RICH_CHAPTER)
    await world.drop_novel(novel_id)

    for chapter in (0, 2, 5):
        assert await world.world_as_of(novel_id, chapter) == WorldSnapshot(chapter, (), (), ())
    assert await world.lookup(novel_id, "mara") is None
    # The novel can be seeded afresh, with nothing left over from before.
    await apply_ok(world, novel_id, 0, SEED)
    snapshot = await world.world_as_of(novel_id, 5)
    assert snapshot.entity("wren") is None
    assert snapshot.attributes("mara")["status"] == "alive"
    await world.drop_novel(novel_id)
    await world.drop_novel(novel_id)


# --- scale ----------------------------------------------------------------------------


async def test_a_large_world_reads_back_completely(world: WorldMemory, novel_id: str) -> None:
    people = 500
    entities = tuple(
        EntitySpec(key=f"p{i}", kind="character", name=f"Person {i}", mutable={"status": "s0"})
        for i in range(people)
    )
    await apply_ok(world, novel_id, 0, WorldChanges(entities=entities))
    for chapter in range(1, 10):
        facts = tuple(FactSpec(f"p{i}", "status", value=f"s{chapter}") for i in range(people))
        await apply_ok(world, novel_id, chapter, WorldChanges(facts=facts))

    snapshot = await world.world_as_of(novel_id, 6)
    assert len(snapshot.entities) == people
    assert len(snapshot.facts) == people
    assert {f.value for f in snapshot.facts} == {"s6"}
    assert all(f.valid_to_chapter == 7 for f in snapshot.facts)
    assert len((await world.world_as_of(novel_id, 9)).facts) == people
