"""Unit tests of the world-memory planner and the shared record rules (pure, no database).

The conformance suite checks every backend end to end; these tests pin the decisions
themselves: what a batch creates, changes, closes and rejects given a stored state, and
what a retraction reopens.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from itertools import count
from typing import Any, TypeVar

from memory.world.planner import (
    BatchState,
    WritePlan,
    batch_keys,
    plan_batch,
    plan_reopen,
)
from memory.world.port import (
    EntitySpec,
    Fact,
    FactEnd,
    FactSpec,
    Rename,
    SetupSpec,
    WorldChanges,
)
from memory.world.rules import (
    RENAME_PREDICATE,
    AliasRecord,
    EntityRecord,
    FactRecord,
    FixedRecord,
    SetupRecord,
    build_snapshot,
    entity_as_of,
    setups_as_of,
)
from memory.world.tables import KEY_LENGTH

R = TypeVar("R", EntityRecord, AliasRecord, FixedRecord, SetupRecord)

MARA = EntitySpec(
    key="mara",
    kind="character",
    name="Mara Voss",
    aliases=("Mara", "the Smuggler", "  mara   VOSS "),
    description="A smuggler.",
    fixed={"species": "human"},
    mutable={"status": "alive"},
)
HARBOUR = EntitySpec(key="harbour", kind="location", name="Saltmarsh Harbour")
CITADEL = EntitySpec(key="citadel", kind="location", name="The Glass Citadel")
GUILD = EntitySpec(key="guild", kind="faction", name="Lantern Guild")
SEED = WorldChanges(
    entities=(MARA, HARBOUR, CITADEL, GUILD),
    facts=(
        FactSpec("mara", "located_in", object="harbour"),
        FactSpec("mara", "member_of", object="guild"),
    ),
    setups=(SetupSpec("debt", "Mara owes the guild", 1, 5, ("mara", "guild", "mara")),),
)
_ids = count(1)


def _upsert(
    records: Iterable[R], new: Iterable[R], changed: Iterable[R], key: Callable[[R], Hashable]
) -> tuple[R, ...]:
    by_key = {key(r): r for r in records}
    by_key.update({key(r): r for r in changed})
    by_key.update({key(r): replace(r, id=next(_ids)) for r in new})
    return tuple(by_key.values())


def store(state: BatchState, plan: WritePlan, load_chapter: int) -> BatchState:
    """What a backend loads at ``load_chapter`` after executing ``plan`` over ``state``:
    the plan's writes in place, new records with fresh ids, facts ended by then left out."""
    closed = {f.id: f for f in plan.closed_facts}
    facts = [closed.get(f.id, f) for f in state.facts]
    facts += [replace(f, id=next(_ids)) for f in plan.new_facts]
    return BatchState(
        entities=_upsert(state.entities, plan.new_entities, plan.changed_entities, _entity_key),
        aliases=_upsert(state.aliases, plan.new_aliases, plan.changed_aliases, _alias_key),
        fixed=_upsert(state.fixed, plan.new_fixed, plan.changed_fixed, _fixed_key),
        facts=tuple(f for f in facts if f.valid_to is None or f.valid_to > load_chapter),
        setups=_upsert(state.setups, plan.new_setups, plan.changed_setups, _setup_key),
    )


def _entity_key(e: EntityRecord) -> Hashable:
    return e.key


def _alias_key(a: AliasRecord) -> Hashable:
    return (a.entity, a.norm)


def _fixed_key(f: FixedRecord) -> Hashable:
    return (f.entity, f.name)


def _setup_key(v: SetupRecord) -> Hashable:
    return (v.key, v.recorded_chapter)


def seeded() -> BatchState:
    """The stored state after the seed was applied at chapter 0."""
    plan = plan_batch(BatchState(), SEED, 0)
    assert plan.rejected == ()
    return store(BatchState(), plan, 1)


def fact(subject: str, predicate: str, **fields: Any) -> FactRecord:
    """A stored fact (open from chapter 0 unless told otherwise)."""
    defaults: dict[str, Any] = {
        "value": None,
        "object": None,
        "valid_from": 0,
        "valid_to": None,
        "source_chapter": fields.get("valid_from", 0),
        "closed_by": None,
        "id": next(_ids),
    }
    return FactRecord(subject, predicate, **{**defaults, **fields})


def contents(facts: Iterable[FactRecord]) -> set[tuple[Any, ...]]:
    """What facts say and when, without their ids."""
    return {
        (f.subject, f.predicate, f.value, f.object, f.valid_from, f.valid_to, f.closed_by)
        for f in facts
    }


# --- keys -----------------------------------------------------------------------------


def test_batch_keys_are_trimmed_and_cover_every_part() -> None:
    changes = WorldChanges(
        entities=(replace(HARBOUR, key=" harbour "),),
        facts=(FactSpec(" mara", "located_in", object="citadel "),),
        ended=(FactEnd("tobin", "ally_of", object="  "),),
        setups=(SetupSpec(" debt ", "", 1, 2),),
        paid_off=("oath", "  "),
        renames=(Rename(" wren ", "Wren the Grey"), Rename(" ", "Nobody")),
    )
    keys = batch_keys(changes)
    assert keys.entities == {"harbour", "mara", "citadel", "tobin", "wren"}
    assert keys.setups == {"debt", "oath"}


# --- creating -------------------------------------------------------------------------


def test_a_seed_on_an_empty_world_creates_everything_it_names() -> None:
    plan = plan_batch(BatchState(), SEED, 0)
    assert plan.rejected == ()
    assert [e.key for e in plan.new_entities] == ["mara", "harbour", "citadel", "guild"]
    assert all(e.id is None and e.introduced_chapter == 0 for e in plan.new_entities)
    assert plan.new_entities[0].description_chapter == 0
    assert plan.new_entities[1].description_chapter is None
    # An alias equal to the name (once normalised) is no alias.
    assert [(a.entity, a.text, a.norm) for a in plan.new_aliases] == [
        ("mara", "Mara", "mara"),
        ("mara", "the Smuggler", "the smuggler"),
    ]
    assert [(f.entity, f.name, f.value) for f in plan.new_fixed] == [("mara", "species", "human")]
    assert contents(plan.new_facts) == {
        ("mara", "status", "alive", None, 0, None, None),
        ("mara", "located_in", None, "harbour", 0, None, None),
        ("mara", "member_of", None, "guild", 0, None, None),
    }
    assert all(f.source_chapter == 0 for f in plan.new_facts)
    [setup] = plan.new_setups
    assert (setup.key, setup.entities, setup.recorded_chapter) == ("debt", ("mara", "guild"), 0)
    assert (plan.changed_entities, plan.closed_facts, plan.changed_setups) == ((), (), ())
    assert plan.entities == plan.new_entities
    assert plan.aliases == plan.new_aliases


def test_applying_the_same_batch_again_writes_nothing() -> None:
    state = seeded()
    again = plan_batch(state, SEED, 0)
    assert again.writes_nothing
    assert again.rejected == ()
    assert [e.key for e in again.entities] == ["mara", "harbour", "citadel", "guild"]


def test_facts_naming_unknown_entities_and_malformed_changes_are_rejected_in_order() -> None:
    changes = WorldChanges(
        entities=(
            EntitySpec(key="x" * (KEY_LENGTH + 1), kind="character", name="Long"),
            EntitySpec(key="ghost", kind="spirit", name="Ghost"),  # type: ignore[arg-type]
            EntitySpec(key="blank", kind="item", name="   "),
        ),
        facts=(
            FactSpec("mara", "located_in", object="atlantis"),
            FactSpec("mara", "status", value="x", object="harbour"),
            FactSpec("mara", " "),
        ),
        ended=(FactEnd("nobody", "located_in"), FactEnd("mara", " ")),
        setups=(SetupSpec("late", "", 5, 2),),
        paid_off=("never-planted",),
    )
    plan = plan_batch(seeded(), changes, 1)
    assert [(r.change, r.reason) for r in plan.rejected] == [
        ("entity " + repr("x" * (KEY_LENGTH + 1)), f"key must be 1-{KEY_LENGTH} characters"),
        ("entity 'ghost'", "unknown kind 'spirit'"),
        ("entity 'blank'", "name is empty"),
        ("fact mara -located_in-> atlantis", "unknown entity 'atlantis'"),
        ("fact mara.status='x'", "exactly one of value or object must be set"),
        ("fact mara.=None", "exactly one of value or object must be set"),
        ("end nobody.located_in", "unknown entity 'nobody'"),
        ("end mara.", "predicate is empty"),
        ("setup 'late'", "chapters must be 0 or more and due must not precede planted"),
        ("paid_off 'never-planted'", "unknown set-up 'never-planted'"),
    ]
    assert plan.writes_nothing


# --- entities -------------------------------------------------------------------------


def test_an_upsert_keeps_kind_and_name_and_fills_only_an_empty_description() -> None:
    changes = WorldChanges(
        entities=(
            replace(MARA, kind="item", name="Captain Mara", description="Another text."),
            replace(HARBOUR, description="A busy port."),
        )
    )
    plan = plan_batch(seeded(), changes, 3)
    assert [(r.change, r.reason) for r in plan.rejected] == [
        ("entity 'mara' kind 'item'", "'mara' is a character; kinds never change"),
    ]
    [harbour] = plan.changed_entities
    assert (harbour.key, harbour.description, harbour.description_chapter) == (
        "harbour",
        "A busy port.",
        3,
    )
    assert harbour.introduced_chapter == 0 and harbour.id is not None
    # The other name becomes an alias recorded at this chapter.
    assert [(a.entity, a.text, a.recorded_chapter) for a in plan.new_aliases] == [
        ("mara", "Captain Mara", 3)
    ]


def test_a_retracted_entity_and_its_retracted_children_are_revived_in_place() -> None:
    state = seeded()
    state = replace(
        state,
        entities=tuple(replace(e, retracted=e.key == "mara") for e in state.entities),
        aliases=tuple(replace(a, retracted=True) for a in state.aliases),
        fixed=tuple(replace(f, retracted=True) for f in state.fixed),
    )
    old = {e.key: e for e in state.entities}["mara"]
    plan = plan_batch(state, WorldChanges(entities=(replace(MARA, fixed={"species": "elf"}),)), 4)
    assert plan.rejected == ()
    assert (plan.new_entities, plan.new_aliases, plan.new_fixed) == ((), (), ())
    [mara] = plan.changed_entities
    assert (mara.id, mara.retracted, mara.introduced_chapter) == (old.id, False, 4)
    assert {(a.text, a.recorded_chapter, a.retracted) for a in plan.changed_aliases} == {
        ("Mara", 4, False),
        ("the Smuggler", 4, False),
    }
    [species] = plan.changed_fixed
    assert (species.value, species.recorded_chapter, species.retracted) == ("elf", 4, False)


def test_a_fixed_attribute_cannot_change_and_restating_it_adds_nothing() -> None:
    changes = WorldChanges(
        entities=(replace(MARA, fixed={"species": " Human "}),),
        facts=(
            FactSpec("mara", "species", value="HUMAN"),
            FactSpec("mara", "species", value="elf"),
        ),
    )
    plan = plan_batch(seeded(), changes, 2)
    assert [(r.change, r.reason) for r in plan.rejected] == [
        ("fact mara.species='elf'", "mara.species is fixed as 'human'; changing it needs a cause"),
    ]
    assert plan.writes_nothing
    contradiction = WorldChanges(entities=(replace(MARA, fixed={"species": "elf"}),))
    assert [(r.change, r.reason) for r in plan_batch(seeded(), contradiction, 2).rejected] == [
        ("fixed mara.species='elf'", "mara.species is fixed as 'human'"),
    ]


def test_a_fixed_attribute_changes_only_for_a_cause_and_then_like_any_attribute() -> None:
    state = seeded()
    cursed = FactSpec("mara", "species", value="wraith", cause="a curse")
    plan = plan_batch(state, WorldChanges(facts=(cursed,)), 4)
    assert plan.rejected == ()
    assert contents(plan.new_facts) == {("mara", "species", "wraith", None, 4, None, None)}
    assert plan_batch(store(state, plan, 4), WorldChanges(facts=(cursed,)), 4).writes_nothing
    state = store(state, plan, 6)

    # What holds at a chapter is restated for free, and changed only for a cause.
    assert plan_batch(state, WorldChanges(facts=(FactSpec("mara", "species", "Wraith"),)), 6) == (
        plan_batch(state, WorldChanges(), 6)
    )
    uncaused = WorldChanges(
        facts=(FactSpec("mara", "species", "human"), FactSpec("mara", "species", "elf", cause=" "))
    )
    assert [(r.change, r.reason) for r in plan_batch(state, uncaused, 6).rejected] == [
        (
            "fact mara.species='human'",
            "mara.species is fixed as 'human' (now 'wraith'); changing it needs a cause",
        ),
        (
            "fact mara.species='elf'",
            "mara.species is fixed as 'human' (now 'wraith'); changing it needs a cause",
        ),
    ]
    lifted = plan_batch(
        state, WorldChanges(facts=(FactSpec("mara", "species", "human", cause="lifted"),)), 6
    )
    assert [(f.value, f.valid_to, f.closed_by) for f in lifted.closed_facts] == [("wraith", 6, 6)]
    assert contents(lifted.new_facts) == {("mara", "species", "human", None, 6, None, None)}

    # Before the change the fixed value holds; an earlier caused change ends where it starts.
    assert plan_batch(state, WorldChanges(facts=(FactSpec("mara", "species", "human"),)), 2) == (
        plan_batch(state, WorldChanges(), 2)
    )
    earlier = plan_batch(
        state, WorldChanges(facts=(FactSpec("mara", "species", "ghoul", cause="a bite"),)), 2
    )
    assert contents(earlier.new_facts) == {("mara", "species", "ghoul", None, 2, 4, 4)}


def test_within_a_batch_a_caused_change_is_what_holds_for_later_facts() -> None:
    changes = WorldChanges(
        facts=(
            FactSpec("mara", "species", "wraith", cause="a curse"),
            FactSpec("mara", "species", "wraith"),
            FactSpec("mara", "species", "human"),
        )
    )
    plan = plan_batch(seeded(), changes, 3)
    assert [r.change for r in plan.rejected] == ["fact mara.species='human'"]
    assert contents(plan.new_facts) == {("mara", "species", "wraith", None, 3, None, None)}


# --- renames --------------------------------------------------------------------------


def test_a_rename_records_its_name_as_an_alias_and_a_name_fact() -> None:
    state = seeded()
    rename = WorldChanges(renames=(Rename(" mara ", "  Captain   Mara "),))
    plan = plan_batch(state, rename, 3)
    assert plan.rejected == ()
    assert [(a.entity, a.text, a.norm, a.recorded_chapter) for a in plan.new_aliases] == [
        ("mara", "Captain Mara", "captain mara", 3)
    ]
    assert contents(plan.new_facts) == {
        ("mara", RENAME_PREDICATE, "Captain Mara", None, 3, None, None)
    }
    assert (plan.new_entities, plan.changed_entities) == ((), ())
    state = store(state, plan, 3)
    assert plan_batch(state, rename, 3).writes_nothing

    # Renaming to the name that holds at the chapter changes nothing; it is compared the
    # way names are looked up.
    same = WorldChanges(renames=(Rename("mara", "captain mara"),))
    assert plan_batch(state, same, 4).writes_nothing
    assert plan_batch(state, WorldChanges(renames=(Rename("mara", "MARA VOSS"),)), 2).writes_nothing
    # A later rename replaces the earlier one, as a later value of any attribute does.
    again = plan_batch(state, WorldChanges(renames=(Rename("mara", "The Widow"),)), 5)
    assert [(f.value, f.valid_to) for f in again.closed_facts] == [("Captain Mara", 5)]
    assert contents(again.new_facts) == {
        ("mara", RENAME_PREDICATE, "The Widow", None, 5, None, None)
    }
    # Back to the first name: a name fact, but no alias (the stored name is found as it is).
    back = plan_batch(state, WorldChanges(renames=(Rename("mara", "Mara Voss"),)), 5)
    assert back.new_aliases == ()
    assert contents(back.new_facts) == {
        ("mara", RENAME_PREDICATE, "Mara Voss", None, 5, None, None)
    }


def test_renames_are_checked_and_the_last_of_a_batch_wins() -> None:
    changes = WorldChanges(
        entities=(EntitySpec(key="wren", kind="character", name="Wren"),),
        renames=(
            Rename("ghost", "Spectre"),
            Rename("mara", "   "),
            Rename("wren", "Wren the Grey"),
            Rename("wren", "Wren the White"),
        ),
        facts=(
            FactSpec("mara", RENAME_PREDICATE, value="Sneaky"),
            FactSpec("wren", "mood", value="calm"),
        ),
        ended=(FactEnd("mara", RENAME_PREDICATE),),
    )
    plan = plan_batch(seeded(), changes, 2)
    reserved = f"predicate {RENAME_PREDICATE!r} is reserved for renames"
    assert [(r.change, r.reason) for r in plan.rejected] == [
        ("rename 'ghost'", "unknown entity 'ghost'"),
        ("rename 'mara'", "name is empty"),
        (f"fact mara.{RENAME_PREDICATE}='Sneaky'", reserved),
        (f"end mara.{RENAME_PREDICATE}", reserved),
    ]
    # Both names are aliases (the text called Wren both), the last one is her name.
    assert [a.text for a in plan.new_aliases] == ["Wren the Grey", "Wren the White"]
    assert contents(plan.new_facts) == {
        ("wren", RENAME_PREDICATE, "Wren the White", None, 2, None, None),
        ("wren", "mood", "calm", None, 2, None, None),
    }


# --- facts ----------------------------------------------------------------------------


def test_a_new_value_closes_the_current_one_and_takes_over_the_rest_of_its_interval() -> None:
    alive = fact("mara", "status", value="alive", valid_to=5, closed_by=5)
    dead = fact("mara", "status", value="dead", valid_from=5)
    state = replace(seeded(), facts=(alive, dead))
    plan = plan_batch(state, WorldChanges(facts=(FactSpec("mara", "status", value="wounded"),)), 3)
    assert plan.closed_facts == (replace(alive, valid_to=3, closed_by=3),)
    assert contents(plan.new_facts) == {("mara", "status", "wounded", None, 3, 5, 5)}


def test_a_value_applied_before_a_later_one_ends_where_the_later_one_begins() -> None:
    dead = fact("mara", "status", value="dead", valid_from=5)
    state = replace(seeded(), facts=(dead,))
    plan = plan_batch(state, WorldChanges(facts=(FactSpec("mara", "status", value="alive"),)), 2)
    assert plan.closed_facts == ()
    assert contents(plan.new_facts) == {("mara", "status", "alive", None, 2, 5, 5)}


def test_exclusive_relations_replace_each_other_and_other_relations_accumulate() -> None:
    state = seeded()
    changes = WorldChanges(
        entities=(EntitySpec(key="order", kind="faction", name="Order"),),
        facts=(
            FactSpec("mara", "located_in", object="citadel"),
            FactSpec("mara", "member_of", object="order"),
            FactSpec("mara", "member_of", object="guild"),
        ),
    )
    plan = plan_batch(state, changes, 2)
    assert [(f.predicate, f.object, f.valid_to) for f in plan.closed_facts] == [
        ("located_in", "harbour", 2)
    ]
    assert contents(plan.new_facts) == {
        ("mara", "located_in", None, "citadel", 2, None, None),
        ("mara", "member_of", None, "order", 2, None, None),
    }


def test_the_last_assertion_of_a_single_valued_fact_in_a_batch_wins() -> None:
    changes = WorldChanges(
        facts=(
            FactSpec("mara", "status", value="hidden"),
            FactSpec("mara", "located_in", object="citadel"),
            FactSpec(" mara ", "status ", value=" captured "),
            FactSpec("mara", "located_in", object="harbour"),
        )
    )
    plan = plan_batch(seeded(), changes, 2)
    # Still in the harbour: nothing to change there; the status changes once.
    assert contents(plan.new_facts) == {("mara", "status", "captured", None, 2, None, None)}
    assert [(f.predicate, f.value) for f in plan.closed_facts] == [("status", "alive")]


def test_an_end_closes_open_facts_but_never_one_its_own_batch_asserts() -> None:
    changes = WorldChanges(
        facts=(FactSpec("mara", "located_in", object="citadel"),),
        ended=(FactEnd("mara", "located_in"), FactEnd("mara", "member_of", object="citadel")),
    )
    state = seeded()
    plan = plan_batch(state, changes, 2)
    assert [(f.object, f.valid_to, f.closed_by) for f in plan.closed_facts] == [("harbour", 2, 2)]
    assert contents(plan.new_facts) == {("mara", "located_in", None, "citadel", 2, None, None)}
    assert plan_batch(store(state, plan, 2), changes, 2).writes_nothing


# --- set-ups --------------------------------------------------------------------------


def test_set_ups_keep_a_version_per_chapter_and_share_their_pay_off() -> None:
    state = seeded()
    replan = WorldChanges(setups=(SetupSpec("debt", "Mara owes the guild twice", 1, 8),))
    plan = plan_batch(state, replan, 3)
    [version] = plan.new_setups
    assert (version.recorded_chapter, version.due_chapter, version.paid_off_chapter) == (3, 8, None)
    state = store(state, plan, 6)
    paid = plan_batch(state, WorldChanges(paid_off=("debt",)), 6)
    assert plan_batch(state, replan, 4).writes_nothing  # the same plan again
    assert sorted((v.recorded_chapter, v.paid_off_chapter) for v in paid.changed_setups) == [
        (0, 6),
        (3, 6),
    ]
    state = store(state, paid, 7)
    assert plan_batch(state, WorldChanges(paid_off=("debt",)), 7).writes_nothing
    later = plan_batch(state, WorldChanges(setups=(SetupSpec("debt", "New", 7, 9),)), 7)
    assert [(v.recorded_chapter, v.paid_off_chapter) for v in later.new_setups] == [(7, 6)]


def test_a_retracted_set_up_version_is_revived_in_place() -> None:
    state = seeded()
    state = replace(state, setups=tuple(replace(v, retracted=True) for v in state.setups))
    plan = plan_batch(state, SEED, 0)
    [revived] = plan.changed_setups
    assert (revived.id, revived.retracted) == (state.setups[0].id, False)
    assert plan.new_setups == ()


# --- retraction -----------------------------------------------------------------------


def test_retracting_a_chapter_hands_back_the_end_its_successor_took_over() -> None:
    replaced = fact("mara", "status", value="alive", valid_to=3, closed_by=3)
    successor = fact("mara", "status", value="captured", valid_from=3, valid_to=5, closed_by=5)
    # Chapter 3 applied twice: its first value was replaced by its second, at chapter 3.
    overwritten = fact("mara", "status", value="wounded", valid_from=3, valid_to=3, closed_by=3)
    ended = fact("mara", "ally_of", object="tobin", valid_to=3, closed_by=3)
    reopened = plan_reopen(3, [replaced, successor, ended, overwritten])
    assert reopened == (
        replace(replaced, valid_to=5, closed_by=5),
        replace(ended, valid_to=None, closed_by=None),
    )


def test_retracting_a_chapter_that_closed_nothing_reopens_nothing() -> None:
    recorded = fact("mara", "status", value="wounded", valid_from=3, source_chapter=3)
    assert plan_reopen(3, [recorded]) == ()


# --- reading records ------------------------------------------------------------------


def test_an_entity_shows_only_what_was_recorded_by_the_chapter() -> None:
    entity = EntityRecord("mara", "character", "Mara Voss", "A smuggler.", 4, 0)
    aliases = [
        AliasRecord("mara", "Mara", "mara", 0),
        AliasRecord("mara", "Captain", "captain", 5),
        AliasRecord("mara", "the Smuggler", "the smuggler", 1, retracted=True),
        AliasRecord("mara", "MARA VOSS", "mara voss", 0),
    ]
    fixed = [FixedRecord("mara", "species", "human", 0), FixedRecord("mara", "eyes", "grey", 6)]
    early = entity_as_of(entity, aliases, fixed, 3)
    assert (early.aliases, early.description, dict(early.fixed)) == (
        ("Mara",),
        "",
        {"species": "human"},
    )
    now = entity_as_of(entity, aliases, fixed, None)
    assert (now.aliases, now.description, list(now.fixed)) == (
        ("Mara", "Captain"),
        "A smuggler.",
        ["eyes", "species"],
    )


def test_a_snapshot_shows_an_entity_under_the_name_its_rename_gives_it() -> None:
    entity = EntityRecord("mara", "character", "Mara Voss", "", None, 0)
    aliases = [
        AliasRecord("mara", "Mara", "mara", 0),
        AliasRecord("mara", "Captain Mara", "captain mara", 3),
        AliasRecord("mara", "The Widow", "the widow", 6),
    ]

    def name_fact(name: str, start: int, end: int | None) -> Fact:
        return Fact("mara", RENAME_PREDICATE, name, None, start, end, start)

    status = Fact("mara", "status", "alive", None, 0, None, 0)
    names = [name_fact("Captain Mara", 3, 6), name_fact("The Widow", 6, None)]

    def at(chapter: int) -> tuple[str, tuple[str, ...], tuple[Fact, ...]]:
        valid = [
            f
            for f in (*names, status)
            if f.valid_from_chapter <= chapter
            and (f.valid_to_chapter is None or chapter < f.valid_to_chapter)
        ]
        known = {"mara": entity_as_of(entity, aliases, [], chapter)}
        snapshot = build_snapshot(chapter, known, valid, [])
        [shown] = snapshot.entities
        return shown.name, shown.aliases, snapshot.facts

    assert at(2) == ("Mara Voss", ("Mara",), (status,))
    assert at(3) == ("Captain Mara", ("Mara Voss", "Mara"), (status,))
    assert at(7) == ("The Widow", ("Mara Voss", "Mara", "Captain Mara"), (status,))


def test_set_ups_read_as_their_latest_visible_version() -> None:
    versions = [
        SetupRecord("debt", "v2", 1, 8, ("mara",), 6, 3),
        SetupRecord("debt", "v1", 1, 5, ("mara",), 6, 0),
        SetupRecord("debt", "v3", 1, 9, (), 6, 4, retracted=True),
        SetupRecord("aaa", "later", 9, 9, (), None, 9),
    ]
    [at_5] = setups_as_of(versions, 5)
    assert (at_5.description, at_5.paid_off_chapter) == ("v2", None)
    [at_2] = setups_as_of(versions, 2)
    assert at_2.description == "v1"
    assert [(s.key, s.paid_off_chapter) for s in setups_as_of(versions, 9)] == [
        ("aaa", None),
        ("debt", 6),
    ]
