"""Rules every world-memory backend shares, so SQL and Neo4j cannot drift apart.

Names are normalised one way, facts occupy the same slots (what replaces what over time),
rejections are labelled alike, stored state is loaded into the same records (which
:mod:`memory.world.planner` decides on) and snapshots are assembled from them one way, in
one canonical order.

Renames need no storage of their own: a rename is an attribute fact with the reserved
predicate :data:`RENAME_PREDICATE` (its value the new name, valid from the rename's chapter,
replaced by the next rename like any attribute) plus an alias recorded at that chapter, so
lookups, retraction and out-of-order chapters work for them as for every other fact. Only
the snapshot assembly here reads name facts: it shows each entity under the name its name
fact gives it and leaves name facts out of the snapshot's facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from errors import InvalidInput
from memory.world.port import (
    EXCLUSIVE_RELATIONS,
    Entity,
    EntityKind,
    Fact,
    Setup,
    WorldChanges,
    WorldSnapshot,
)
from memory.world.tables import NOVEL_ID_LENGTH

ATTRIBUTE_SLOT = "attribute"
RELATION_SLOT = "relation"
RENAME_PREDICATE = "@name"
"""The predicate of the attribute fact a rename records (its value is the new name). It is
not snake case, so no attribute a model extracts is mistaken for a rename; ordinary facts
and ends using it are rejected."""


def normalise(text: str) -> str:
    """The lookup form of a name: whitespace collapsed, trimmed, case-folded."""
    return " ".join(text.split()).casefold()


def clean(text: str) -> str:
    """Whitespace collapsed and trimmed."""
    return " ".join(text.split())


def check_novel(novel_id: str) -> None:
    """Reject an empty or over-long novel id."""
    if not novel_id or len(novel_id) > NOVEL_ID_LENGTH:
        raise InvalidInput(
            f"novel id must be 1-{NOVEL_ID_LENGTH} characters", novel_id=novel_id[:80]
        )


def fact_label(subject: str, predicate: str, value: str | None, obj: str | None) -> str:
    """How a fact is named in a rejection."""
    if obj is not None and value is None:
        return f"fact {subject} -{predicate}-> {obj}"
    return f"fact {subject}.{predicate}={value!r}"


Slot = tuple[str, str, str, str | None]


def fact_slot(subject: str, predicate: str, value: str | None, obj: str | None) -> Slot:
    """Facts sharing a slot replace one another over time: one slot per attribute and per
    exclusive relation type, and one per (type, object) for other relationships."""
    if value is not None:
        return (subject, predicate, ATTRIBUTE_SLOT, None)
    if predicate in EXCLUSIVE_RELATIONS:
        return (subject, predicate, RELATION_SLOT, None)
    return (subject, predicate, RELATION_SLOT, obj)


def fact_sort_key(fact: Fact) -> tuple[str, str, str, str, int, int]:
    """Canonical order of facts in a snapshot."""
    return (
        fact.subject,
        fact.predicate,
        fact.object or "",
        fact.value or "",
        fact.valid_from_chapter,
        fact.source_chapter,
    )


def referenced_keys(changes: WorldChanges) -> set[str]:
    """Every entity key a batch names (entities, facts, ends and renames)."""
    keys = {spec.key.strip() for spec in changes.entities}
    for item in changes.facts:
        keys.update(k.strip() for k in (item.subject, item.object) if k is not None)
    for end in changes.ended:
        keys.update(k.strip() for k in (end.subject, end.object) if k is not None)
    keys.update(rename.key.strip() for rename in changes.renames)
    keys.discard("")
    return keys


# --- stored records -------------------------------------------------------------------
# What every backend stores, whatever its layout: each record carries the chapter that
# wrote it (so a retraction can find it) and, where it has one, the backend's handle.

RecordId = int | str
"""How a backend addresses a stored record: a SQL primary key or a Neo4j element id."""


@dataclass(frozen=True)
class EntityRecord:
    """An entity as stored; ``description_chapter`` is the chapter that set a non-empty
    description (``None`` while it is empty)."""

    key: str
    kind: str
    name: str
    description: str
    description_chapter: int | None
    introduced_chapter: int
    retracted: bool = False
    id: RecordId | None = None


@dataclass(frozen=True)
class AliasRecord:
    """An alias of the entity ``entity`` (a key); ``norm`` is its lookup form."""

    entity: str
    text: str
    norm: str
    recorded_chapter: int
    retracted: bool = False
    id: RecordId | None = None


@dataclass(frozen=True)
class FixedRecord:
    """A fixed attribute ``name`` of the entity ``entity`` (a key)."""

    entity: str
    name: str
    value: str
    recorded_chapter: int
    retracted: bool = False
    id: RecordId | None = None


@dataclass(frozen=True)
class FactRecord:
    """A fact as stored, with the chapter that recorded it and the one that closed it."""

    subject: str
    predicate: str
    value: str | None
    object: str | None
    valid_from: int
    valid_to: int | None
    source_chapter: int
    closed_by: int | None = None
    id: RecordId | None = None

    @property
    def slot(self) -> Slot:
        """The slot the fact occupies (see :func:`fact_slot`)."""
        return fact_slot(self.subject, self.predicate, self.value, self.object)

    @property
    def is_relationship(self) -> bool:
        """True when the fact links two entities."""
        return self.object is not None

    def same_content(self, other: FactRecord) -> bool:
        """True when both say the same (value or object), whatever their intervals."""
        return (self.value, self.object) == (other.value, other.object)

    def valid_at(self, chapter: int) -> bool:
        """The port's validity rule."""
        return self.valid_from <= chapter and (self.valid_to is None or chapter < self.valid_to)


@dataclass(frozen=True)
class SetupRecord:
    """One recorded version of a set-up (one per key and recording chapter)."""

    key: str
    description: str
    planted_chapter: int
    due_chapter: int
    entities: tuple[str, ...]
    paid_off_chapter: int | None
    recorded_chapter: int
    retracted: bool = False
    id: RecordId | None = None

    def same_plan(self, other: SetupRecord) -> bool:
        """True when both versions plan the same (pay-off and bookkeeping aside)."""
        return (self.description, self.planted_chapter, self.due_chapter, self.entities) == (
            other.description,
            other.planted_chapter,
            other.due_chapter,
            other.entities,
        )


# --- records to and from storage ------------------------------------------------------
# Both backends read facts and set-up versions as rows in the same order and store
# entities and set-ups under the same names (SQL columns, Neo4j properties).


def fact_record(row: Sequence[Any]) -> FactRecord:
    """A fact from ``(id, subject, predicate, value, object, valid_from, valid_to,
    source_chapter, closed_by)``."""
    fact_id, subject, predicate, value, obj, valid_from, valid_to, source, closed_by = row
    return FactRecord(
        subject, predicate, value, obj, valid_from, valid_to, source, closed_by, fact_id
    )


def setup_record(row: Sequence[Any]) -> SetupRecord:
    """A set-up version from ``(id, key, description, planted_chapter, due_chapter,
    entities, paid_off_chapter, recorded_chapter, retracted)``."""
    setup_id, key, description, planted, due, entities, paid_off, recorded, retracted = row
    return SetupRecord(
        key, description, planted, due, tuple(entities), paid_off, recorded, retracted, setup_id
    )


def entity_fields(entity: EntityRecord) -> dict[str, Any]:
    """What is stored of an entity but its key, with the lookup forms of key and name."""
    return {
        "key_norm": normalise(entity.key),
        "kind": entity.kind,
        "name": entity.name,
        "name_norm": normalise(entity.name),
        "description": entity.description,
        "description_chapter": entity.description_chapter,
        "introduced_chapter": entity.introduced_chapter,
        "retracted": entity.retracted,
    }


def setup_fields(version: SetupRecord) -> dict[str, Any]:
    """What is stored of a set-up version but its key and recording chapter."""
    return {
        "description": version.description,
        "planted_chapter": version.planted_chapter,
        "due_chapter": version.due_chapter,
        "paid_off_chapter": version.paid_off_chapter,
        "entities": list(version.entities),
        "retracted": version.retracted,
    }


# --- snapshot assembly ----------------------------------------------------------------


def entity_as_of(
    entity: EntityRecord,
    aliases: Iterable[AliasRecord],
    fixed: Iterable[FixedRecord],
    chapter: int | None,
) -> Entity:
    """An entity as known at ``chapter`` (``None``: now), from its records.

    Aliases (in the order given), fixed attributes and a later-filled description recorded
    after ``chapter`` are left out, as are retracted ones and an alias equal to the name.
    """

    def known(recorded: int, retracted: bool) -> bool:
        return not retracted and (chapter is None or recorded <= chapter)

    name_norm = normalise(entity.name)
    described = entity.description_chapter
    return Entity(
        key=entity.key,
        kind=cast(EntityKind, entity.kind),
        name=entity.name,
        aliases=tuple(
            a.text
            for a in aliases
            if known(a.recorded_chapter, a.retracted) and a.norm != name_norm
        ),
        description=(
            entity.description
            if described is not None and (chapter is None or described <= chapter)
            else ""
        ),
        # Sorted in Python: database collations order names differently.
        fixed=dict(
            sorted((f.name, f.value) for f in fixed if known(f.recorded_chapter, f.retracted))
        ),
        introduced_chapter=entity.introduced_chapter,
    )


def renamed(entity: Entity, name: str) -> Entity:
    """``entity`` called ``name``: the name it had leads its aliases, and ``name`` is no
    longer among them (a rename records it as an alias so that lookups find it)."""
    norm = normalise(name)
    if norm == normalise(entity.name):
        return entity
    others = tuple(a for a in entity.aliases if normalise(a) != norm)
    return replace(entity, name=name, aliases=(entity.name, *others))


def latest_names(facts: Iterable[Fact], chapter: int | None) -> dict[str, str]:
    """The name each entity's latest rename valid at ``chapter`` gives it, by key
    (``None``: the latest rename of all). ``facts`` are visible facts of any kind."""
    latest: dict[str, Fact] = {}
    for fact in facts:
        if fact.predicate != RENAME_PREDICATE or fact.value is None:
            continue
        if chapter is not None and not (
            fact.valid_from_chapter <= chapter
            and (fact.valid_to_chapter is None or chapter < fact.valid_to_chapter)
        ):
            continue
        best = latest.get(fact.subject)
        if best is None or fact.valid_from_chapter > best.valid_from_chapter:
            latest[fact.subject] = fact
    return {key: fact.value for key, fact in latest.items() if fact.value is not None}


def with_names(
    entities: dict[str, Entity], facts: Iterable[Fact], chapter: int | None
) -> dict[str, Entity]:
    """``entities`` under the names their renames give them at ``chapter`` (``None``:
    now), each with its other names as aliases (see :func:`renamed`)."""
    names = latest_names(facts, chapter)
    return {
        key: renamed(entity, names[key]) if key in names else entity
        for key, entity in entities.items()
    }


def setups_as_of(versions: Iterable[SetupRecord], chapter: int) -> list[Setup]:
    """The latest visible version recorded by ``chapter`` of every set-up, by key; a
    pay-off after ``chapter`` is not shown."""
    latest: dict[str, SetupRecord] = {}
    for v in sorted(versions, key=lambda v: (v.key, v.recorded_chapter)):
        if not v.retracted and v.recorded_chapter <= chapter:
            latest[v.key] = v
    return [
        Setup(
            key=v.key,
            description=v.description,
            planted_chapter=v.planted_chapter,
            due_chapter=v.due_chapter,
            paid_off_chapter=(
                v.paid_off_chapter
                if v.paid_off_chapter is not None and v.paid_off_chapter <= chapter
                else None
            ),
            entities=v.entities,
        )
        for v in (latest[key] for key in sorted(latest))
    ]


def neighbour_keys(key: str, relations: Iterable[Fact]) -> set[str]:
    """The entity and the other ends of the relationships touching it."""
    keys = {key}
    for fact in relations:
        keys.add(fact.subject)
        keys.add(fact.object or key)
    return keys


def lookup_rank(wanted: str, norm: str, key: str, key_norm: str) -> int:
    """How well an entity named by key or name matches a lookup: exact key first, then
    the normalised key, then the name (ties go to the entity recorded first)."""
    if key == wanted:
        return 0
    return 1 if key_norm == norm else 2


def build_snapshot(
    chapter: int, entities: dict[str, Entity], facts: Iterable[Fact], setups: Iterable[Setup]
) -> WorldSnapshot:
    """A snapshot in canonical order, without facts that name a hidden entity.

    ``entities`` are as stored (see :func:`entity_as_of`) and ``facts`` the facts valid at
    ``chapter``: name facts among them rename their entities and are not shown as facts.
    """
    valid = list(facts)
    named = with_names(entities, valid, chapter)
    shown = [
        f
        for f in valid
        if f.predicate != RENAME_PREDICATE
        and f.subject in named
        and (f.object is None or f.object in named)
    ]
    return WorldSnapshot(
        chapter=chapter,
        entities=tuple(named[key] for key in sorted(named)),
        facts=tuple(sorted(shown, key=fact_sort_key)),
        setups=tuple(setups),
    )
