"""The world-memory port: a chapter-scoped graph of entities, facts and set-ups.

A *fact* is either an attribute (``value`` set) or a relationship (``object`` set) of a
subject entity, valid from one chapter and, once contradicted, closed at a later one.
Facts are never deleted: a contradicted fact gets ``valid_to_chapter``; a fact recorded
by a chapter that is later rewritten is *retracted* (kept for audit, hidden from reads).

Validity rule used by every backend: a fact is valid at chapter ``n`` when
``valid_from_chapter <= n`` and (``valid_to_chapter`` is ``None`` or ``n < valid_to_chapter``).
The world seed is recorded at chapter 0.

Knowledge is an ordinary relationship: a character ``knows`` a ``secret`` entity from the
chapter that reveals it to them. An entity keeps its key for ever; a :class:`Rename` gives
it another name from one chapter on (see :meth:`WorldMemory.world_as_of`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

EntityKind = Literal["character", "location", "faction", "item", "rule", "event", "secret"]
"""What an entity is; a ``secret`` is a piece of knowledge a character may or may not have."""
ENTITY_KINDS: tuple[str, ...] = get_args(EntityKind)

# Relationship types whose subject can hold only one at a time: recording a new one
# closes the previous one. Attributes are always single-valued per (subject, name).
# ``held_by`` is custody (an item held by a character): a hand-over ends the last holder's.
EXCLUSIVE_RELATIONS: frozenset[str] = frozenset({"located_in", "leads", "owned_by", "held_by"})


@dataclass(frozen=True)
class EntitySpec:
    """An entity to create or update. ``key`` is its stable slug within the novel."""

    key: str
    kind: EntityKind
    name: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    fixed: Mapping[str, str] = field(default_factory=dict)
    """Attributes that never change (species, eye colour); contradicting one is rejected."""
    mutable: Mapping[str, str] = field(default_factory=dict)
    """Initial values of attributes that may change later (status, mood, title)."""


@dataclass(frozen=True)
class FactSpec:
    """An assertion valid from the chapter it is applied at.

    Exactly one of ``value`` (attribute) or ``object`` (relationship, an entity key) is set.
    """

    subject: str
    predicate: str
    value: str | None = None
    object: str | None = None
    cause: str | None = None
    """Why a *fixed* attribute changes here (dyed hair, a lost eye). An attribute fact that
    contradicts a fixed attribute is accepted only with a non-empty cause; every other fact
    ignores it. The cause is not stored: the chapter's text tells it."""


@dataclass(frozen=True)
class FactEnd:
    """Close the open fact(s) matching subject, predicate and (if given) object."""

    subject: str
    predicate: str
    object: str | None = None


@dataclass(frozen=True)
class SetupSpec:
    """A foreshadowing set-up: planted in one chapter, due to pay off in another."""

    key: str
    description: str
    planted_chapter: int
    due_chapter: int
    entities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rename:
    """An explicit rename: from the batch's chapter on, the entity ``key`` is called
    ``name``; its earlier names stay aliases."""

    key: str
    name: str


@dataclass(frozen=True)
class WorldChanges:
    """One batch of changes, applied atomically at one chapter."""

    entities: tuple[EntitySpec, ...] = ()
    facts: tuple[FactSpec, ...] = ()
    ended: tuple[FactEnd, ...] = ()
    setups: tuple[SetupSpec, ...] = ()
    paid_off: tuple[str, ...] = ()
    renames: tuple[Rename, ...] = ()


@dataclass(frozen=True)
class Entity:
    """An entity as known at one chapter: ``name`` is the name its latest rename by then
    gave it (the name it was created with before any), ``aliases`` every other name known
    by then."""

    key: str
    kind: EntityKind
    name: str
    aliases: tuple[str, ...]
    description: str
    fixed: Mapping[str, str]
    introduced_chapter: int


@dataclass(frozen=True)
class Fact:
    """A stored attribute or relationship with its validity interval."""

    subject: str
    predicate: str
    value: str | None
    object: str | None
    valid_from_chapter: int
    valid_to_chapter: int | None
    source_chapter: int

    @property
    def is_relationship(self) -> bool:
        """True when the fact links two entities."""
        return self.object is not None


@dataclass(frozen=True)
class Setup:
    """A stored set-up with its plan and, once paid off, the chapter that did it."""

    key: str
    description: str
    planted_chapter: int
    due_chapter: int
    paid_off_chapter: int | None
    entities: tuple[str, ...]


@dataclass(frozen=True)
class Rejection:
    """A change that was not applied, and why."""

    change: str
    reason: str


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` did not do; empty when every change was applied."""

    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True)
class WorldSnapshot:
    """The world as it stands at one chapter."""

    chapter: int
    entities: tuple[Entity, ...]
    facts: tuple[Fact, ...]
    setups: tuple[Setup, ...]

    def entity(self, key: str) -> Entity | None:
        """The entity with this key, if present."""
        return next((e for e in self.entities if e.key == key), None)

    def attributes(self, key: str) -> dict[str, str]:
        """Fixed and currently valid mutable attributes of one entity."""
        found = self.entity(key)
        out: dict[str, str] = dict(found.fixed) if found else {}
        for fact in self.facts:
            if fact.subject == key and fact.value is not None:
                out[fact.predicate] = fact.value
        return out

    def relations(self, key: str) -> list[Fact]:
        """Relationships whose subject or object is this entity."""
        return [f for f in self.facts if f.is_relationship and key in (f.subject, f.object)]

    def open_setups(self) -> list[Setup]:
        """Set-ups not yet paid off at this chapter."""
        return [s for s in self.setups if s.paid_off_chapter is None]


class WorldMemory(ABC):
    """Port for world memory. Backends: SQL (SQLite/Postgres) and Neo4j.

    Every method is scoped to one ``novel_id``; no call ever sees another novel's world.
    """

    @abstractmethod
    async def setup(self) -> None:
        """Create schema, constraints and indexes. Idempotent."""

    @abstractmethod
    async def apply(self, novel_id: str, chapter: int, changes: WorldChanges) -> ApplyResult:
        """Apply a batch atomically at ``chapter``.

        Entities are upserted by key (aliases merged, new fixed attributes added, a
        changed fixed attribute rejected); mutable attributes become facts valid from
        ``chapter``. An attribute fact closes the open fact of the same subject and
        predicate; a relationship in :data:`EXCLUSIVE_RELATIONS` closes the subject's open
        one of that type; identical open facts are not duplicated. Facts naming unknown
        entities are rejected, not raised. Set-ups are upserted by key; ``paid_off``
        marks set-ups paid off at ``chapter``. Re-applying the same batch is a no-op.
        """

    @abstractmethod
    async def world_as_of(self, novel_id: str, chapter: int) -> WorldSnapshot:
        """Entities introduced by ``chapter``, facts valid at it, set-ups recorded by it
        (``paid_off_chapter`` shown only when ``<= chapter``).

        Each entity is shown under the name of its latest rename at or before ``chapter``
        (its stored name before any) with every other name known by then among its
        aliases. Renames are not facts of the snapshot."""

    @abstractmethod
    async def lookup(self, novel_id: str, name: str) -> Entity | None:
        """Find an entity by key, name or alias (case-insensitive, trimmed); a renamed
        entity is found by each of its names and shown under its latest one."""

    @abstractmethod
    async def neighbourhood(self, novel_id: str, key: str, chapter: int) -> WorldSnapshot:
        """The entity, the relationships touching it valid at ``chapter``, their other
        ends, the attribute facts of all of those, and set-ups naming the entity."""

    @abstractmethod
    async def retract_chapter(self, novel_id: str, chapter: int) -> None:
        """Undo everything recorded at ``chapter``: its facts and entities are retracted
        (kept, hidden), facts it closed are reopened, its pay-offs are cleared."""

    @abstractmethod
    async def drop_novel(self, novel_id: str) -> None:
        """Remove a novel's world entirely (used when a session is deleted)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
