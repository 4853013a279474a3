"""Rules every world-memory backend shares, so SQL and Neo4j cannot drift apart.

Names are normalised one way, facts occupy the same slots (what replaces what over time),
rejections are labelled alike and snapshots come out in one canonical order.
"""

from __future__ import annotations

from collections.abc import Iterable

from memory.errors import InvalidInput
from memory.world.port import EXCLUSIVE_RELATIONS, Entity, Fact, Setup, WorldChanges, WorldSnapshot
from memory.world.tables import NOVEL_ID_LENGTH

ATTRIBUTE_SLOT = "attribute"
RELATION_SLOT = "relation"


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
    """Every entity key a batch names."""
    keys = {spec.key.strip() for spec in changes.entities}
    for item in changes.facts:
        keys.update(k.strip() for k in (item.subject, item.object) if k is not None)
    for end in changes.ended:
        keys.update(k.strip() for k in (end.subject, end.object) if k is not None)
    keys.discard("")
    return keys


def build_snapshot(
    chapter: int, entities: dict[str, Entity], facts: Iterable[Fact], setups: Iterable[Setup]
) -> WorldSnapshot:
    """A snapshot in canonical order, without facts that name a hidden entity."""
    shown = [
        f for f in facts if f.subject in entities and (f.object is None or f.object in entities)
    ]
    return WorldSnapshot(
        chapter=chapter,
        entities=tuple(entities[key] for key in sorted(entities)),
        facts=tuple(sorted(shown, key=fact_sort_key)),
        setups=tuple(setups),
    )
