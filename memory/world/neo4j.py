"""Neo4j backend of world memory, with the SQL backend's semantics exactly.

The graph is laid out so that an author opening Neo4j Browser recognises the world:

* ``(:Entity:Character {novel_id, key, name, kind, description, aliases, ...})``: every
  entity has the ``Entity`` label plus one readable kind label (``Character``,
  ``Location``, ``Faction``, ``Item``, ``Rule``, ``Event``). ``aliases`` lists every alias
  ever recorded, in recording order; the parallel lists ``alias_norms``,
  ``alias_chapters`` and ``alias_retracted`` hold each one's lookup form, the chapter that
  recorded it and whether that chapter was retracted. ``seq`` orders entities by creation
  (lookup ties go to the older one).
* ``(:Entity)-[:LOCATED_IN {predicate, valid_from_chapter, valid_to_chapter,
  source_chapter, closed_by_chapter, retracted, ...}]->(:Entity)``: a relationship fact is
  a real relationship whose type is the upper-cased predicate (see
  :func:`relationship_type`); ``predicate`` keeps the exact text, which is what matches.
* ``(:Entity)-[:HAS_ATTRIBUTE]->(:Attribute {name, value, valid_from_chapter, ...})``: a
  mutable attribute fact; ``(:Entity)-[:HAS_FIXED_ATTRIBUTE]->(:FixedAttribute {name,
  value, recorded_chapter, retracted})``: a fixed attribute.
* ``(:Setup {key, description, planted_chapter, due_chapter, paid_off_chapter,
  recorded_chapter, entities, retracted})-[:CONCERNS]->(:Entity)``: one node per recorded
  version of a set-up, linked to the entities it names that exist when it is recorded.
* ``(:Novel {novel_id, entity_seq})``: bookkeeping. Every write locks it first, so writes
  to one novel are serialised and cannot interleave.

Every value (names, keys, descriptions, predicates) travels as a query parameter. The only
text spliced into Cypher is a relationship type, which Cypher cannot take as a parameter:
it is built from a predicate only when that predicate is strict snake case and the result
matches ``^[A-Z][A-Z0-9_]{0,40}$``; any other predicate is stored as ``RELATED_TO`` (its
exact text still in ``predicate``).

``apply`` works like the SQL backend's: in one write transaction it loads what the batch
touches (one query), decides in Python with the same rules (imported from
:mod:`memory.world.sql`, so the backends cannot drift apart) and writes with ``UNWIND``
batches (one statement, plus one per new relationship type). ``world_as_of`` is a single
query. Results come back as one row of collected lists: the Python driver's cost is per
record, so a thousand facts in one row read several times faster than a thousand rows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, LiteralString, NamedTuple, cast

from neo4j import AsyncDriver, AsyncGraphDatabase, AsyncManagedTransaction, AsyncSession
from neo4j.exceptions import ConstraintError, DriverError, Neo4jError

from memory.errors import InvalidInput, StorageError
from memory.world.port import (
    ENTITY_KINDS,
    ApplyResult,
    Entity,
    EntityKind,
    EntitySpec,
    Fact,
    FactEnd,
    FactSpec,
    Rejection,
    Setup,
    SetupSpec,
    WorldChanges,
    WorldMemory,
    WorldSnapshot,
)
from memory.world.rules import (
    Slot,
    build_snapshot,
    check_novel,
    clean,
    fact_label,
    fact_slot,
    normalise,
    referenced_keys,
)
from memory.world.tables import KEY_LENGTH

GENERIC_RELATION = "RELATED_TO"
"""The relationship type of a predicate that cannot be a type of its own."""

_PREDICATE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_RELATION_TYPE = re.compile(r"[A-Z][A-Z0-9_]{0,40}")
# Types the model itself uses; a predicate spelling one of them stays generic.
_RESERVED_TYPES = frozenset({"HAS_ATTRIBUTE", "HAS_FIXED_ATTRIBUTE", "CONCERNS"})


def relationship_type(predicate: str) -> str:
    """The Neo4j relationship type of a predicate: ``located_in`` → ``LOCATED_IN``.

    Only a strict snake-case predicate whose upper-cased form matches
    ``^[A-Z][A-Z0-9_]{0,40}$`` gets its own type; anything else (spaces, dashes, capitals,
    non-ASCII, too long) is :data:`GENERIC_RELATION`. The result is the only text ever
    spliced into a Cypher query, so this whitelist is what keeps queries injection-free.
    """
    if _PREDICATE.fullmatch(predicate) is None:
        return GENERIC_RELATION
    candidate = predicate.upper()
    if _RELATION_TYPE.fullmatch(candidate) is None or candidate in _RESERVED_TYPES:
        return GENERIC_RELATION
    return candidate


def _create_relations_query(rel_type: str) -> LiteralString:
    """The ``UNWIND`` statement creating relationship facts of one whitelisted type."""
    if _RELATION_TYPE.fullmatch(rel_type) is None:  # pragma: no cover - defence in depth
        raise StorageError(f"refusing relationship type {rel_type!r}")
    # The type passed the whitelist above; everything else is a parameter.
    return (
        "UNWIND $rows AS row "
        "MATCH (s:Entity {novel_id: $novel, key: row.subject}) "
        "MATCH (o:Entity {novel_id: $novel, key: row.object}) "
        f"CREATE (s)-[f:{rel_type}]->(o) "
        "SET f += row.props"
    )


# --- schema ---------------------------------------------------------------------------

_SCHEMA: tuple[LiteralString, ...] = (
    "CREATE CONSTRAINT scribe_novel_id IF NOT EXISTS FOR (n:Novel) REQUIRE n.novel_id IS UNIQUE",
    "CREATE CONSTRAINT scribe_entity_key IF NOT EXISTS "
    "FOR (e:Entity) REQUIRE (e.novel_id, e.key) IS UNIQUE",
    "CREATE CONSTRAINT scribe_fixed_attribute IF NOT EXISTS "
    "FOR (x:FixedAttribute) REQUIRE (x.novel_id, x.subject, x.name) IS UNIQUE",
    "CREATE CONSTRAINT scribe_setup_version IF NOT EXISTS "
    "FOR (v:Setup) REQUIRE (v.novel_id, v.key, v.recorded_chapter) IS UNIQUE",
    "CREATE INDEX scribe_entity_novel IF NOT EXISTS FOR (e:Entity) ON (e.novel_id)",
    "CREATE INDEX scribe_attribute_novel IF NOT EXISTS FOR (a:Attribute) ON (a.novel_id)",
    "CREATE INDEX scribe_attribute_subject IF NOT EXISTS "
    "FOR (a:Attribute) ON (a.novel_id, a.subject)",
    "CREATE INDEX scribe_fixed_attribute_novel IF NOT EXISTS "
    "FOR (x:FixedAttribute) ON (x.novel_id)",
    "CREATE INDEX scribe_setup_novel IF NOT EXISTS FOR (v:Setup) ON (v.novel_id)",
)

# --- read fragments -------------------------------------------------------------------
# Each fragment is an uncorrelated CALL subquery yielding one row with one collected list,
# so a query chains the fragments it needs and ends with a RETURN of their variables.
# Relationship facts are reached from their subject entity, attribute facts through their
# own index; both yield the columns of :class:`_StoredFact`. ``f`` is the fact.

_VALID_AT: LiteralString = (
    "NOT f.retracted AND f.valid_from_chapter <= $chapter"
    " AND (f.valid_to_chapter IS NULL OR f.valid_to_chapter > $chapter)"
)
_FACT_TAIL: LiteralString = (
    " f.valid_from_chapter, f.valid_to_chapter, f.source_chapter, f.closed_by_chapter]"
)
_RELATION_ITEM: LiteralString = (
    "[elementId(f), startNode(f).key, f.predicate, null, endNode(f).key," + _FACT_TAIL
)
_ATTRIBUTE_ITEM: LiteralString = "[elementId(f), f.subject, f.name, f.value, null," + _FACT_TAIL


def _facts_fragment(relation_where: LiteralString, attribute_where: LiteralString) -> LiteralString:
    """Subqueries yielding ``relations`` and ``attributes`` matching the conditions."""
    return (
        " CALL { MATCH (s:Entity {novel_id: $novel})-[f]->(:Entity) WHERE "
        + relation_where
        + " RETURN collect("
        + _RELATION_ITEM
        + ") AS relations }"
        " CALL { MATCH (f:Attribute {novel_id: $novel}) WHERE "
        + attribute_where
        + " RETURN collect("
        + _ATTRIBUTE_ITEM
        + ") AS attributes }"
    )


_ENTITY_VISIBLE: LiteralString = (
    " WHERE NOT e.retracted AND ($chapter IS NULL OR e.introduced_chapter <= $chapter)"
)
_ENTITY_ITEM: LiteralString = (
    "[e.key, e.kind, e.name, e.name_norm, e.description, e.description_chapter,"
    " e.introduced_chapter, e.aliases, e.alias_norms, e.alias_chapters, e.alias_retracted,"
    " [(e)-[:HAS_FIXED_ATTRIBUTE]->(x:FixedAttribute)"
    "  WHERE NOT x.retracted AND ($chapter IS NULL OR x.recorded_chapter <= $chapter)"
    "  | [x.name, x.value]]]"
)
_ALL_ENTITIES: LiteralString = (
    " CALL { MATCH (e:Entity {novel_id: $novel})"
    + _ENTITY_VISIBLE
    + " RETURN collect("
    + _ENTITY_ITEM
    + ") AS entities }"
)
_ENTITIES_BY_KEY: LiteralString = (
    " CALL { UNWIND $keys AS key MATCH (e:Entity {novel_id: $novel, key: key})"
    + _ENTITY_VISIBLE
    + " RETURN collect("
    + _ENTITY_ITEM
    + ") AS entities }"
)
_SETUP_COLUMNS: LiteralString = (
    "v.key, v.description, v.planted_chapter, v.due_chapter, v.entities,"
    " v.paid_off_chapter, v.recorded_chapter, v.retracted"
)
_SETUPS_BY_CHAPTER: LiteralString = (
    " CALL { MATCH (v:Setup {novel_id: $novel})"
    " WHERE NOT v.retracted AND v.recorded_chapter <= $chapter"
    " RETURN collect([elementId(v), " + _SETUP_COLUMNS + "]) AS setups }"
)

_WORLD_AS_OF: LiteralString = (
    _ALL_ENTITIES
    + _facts_fragment(_VALID_AT, _VALID_AT)
    + _SETUPS_BY_CHAPTER
    + " RETURN entities, relations, attributes, setups"
)

# Everything ``apply`` needs, after locking the novel: the entities the batch names, their
# facts still open at or after its chapter, and the versions of the set-ups it names.
_STILL_OPEN: LiteralString = (
    " AND NOT f.retracted AND (f.valid_to_chapter IS NULL OR f.valid_to_chapter > $chapter)"
)
_LOAD_BATCH: LiteralString = (
    "MERGE (n:Novel {novel_id: $novel}) ON CREATE SET n.entity_seq = 0"
    " SET n.entity_seq = n.entity_seq"
    " WITH n.entity_seq AS entity_seq"
    " CALL { UNWIND $keys AS key MATCH (e:Entity {novel_id: $novel, key: key})"
    " RETURN collect([elementId(e), e.key, e.kind, e.name, e.description,"
    "  e.description_chapter, e.introduced_chapter, e.retracted, e.seq, e.aliases,"
    "  e.alias_norms, e.alias_chapters, e.alias_retracted,"
    "  [(e)-[:HAS_FIXED_ATTRIBUTE]->(x:FixedAttribute)"
    "   | [elementId(x), x.name, x.value, x.recorded_chapter, x.retracted]]]) AS entities }"
    + _facts_fragment("s.key IN $keys" + _STILL_OPEN, "f.subject IN $keys" + _STILL_OPEN)
    + " CALL { MATCH (v:Setup {novel_id: $novel}) WHERE v.key IN $setup_keys"
    " RETURN collect([elementId(v), " + _SETUP_COLUMNS + "]) AS setups }"
    " RETURN entity_seq, entities, relations, attributes, setups"
)

# --- write statements -----------------------------------------------------------------

# Kind labels are set from a fixed list in the query text itself, never from input.
_SET_KIND_LABEL: LiteralString = (
    " REMOVE e:Character:Location:Faction:Item:Rule:Event"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'character' THEN [1] ELSE [] END"
    "  | SET e:Character)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'location' THEN [1] ELSE [] END"
    "  | SET e:Location)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'faction' THEN [1] ELSE [] END"
    "  | SET e:Faction)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'item' THEN [1] ELSE [] END | SET e:Item)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'rule' THEN [1] ELSE [] END | SET e:Rule)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'event' THEN [1] ELSE [] END | SET e:Event)"
)

# Every write of a batch but its new relationships, as unit subqueries in dependency
# order (entities before what hangs off them). Its text never changes, so the server
# plans it once; empty lists make a subquery do nothing.
_WRITE_BATCH: LiteralString = (
    "CALL { UNWIND $new_entities AS row"
    " CREATE (e:Entity {novel_id: $novel, key: row.key})"
    " SET e += row.props, e.seq = row.seq WITH e, row" + _SET_KIND_LABEL + " }"
    " CALL { UNWIND $changed_entities AS row MATCH (e:Entity) WHERE elementId(e) = row.id"
    " SET e += row.props WITH e, row" + _SET_KIND_LABEL + " }"
    " CALL { UNWIND $new_fixed AS row MATCH (e:Entity {novel_id: $novel, key: row.subject})"
    " CREATE (e)-[:HAS_FIXED_ATTRIBUTE]->(x:FixedAttribute"
    "  {novel_id: $novel, subject: row.subject, name: row.name})"
    " SET x.value = row.value, x.recorded_chapter = row.recorded, x.retracted = false }"
    " CALL { UNWIND $changed_fixed AS row"
    " MATCH (x:FixedAttribute) WHERE elementId(x) = row.id"
    " SET x.value = row.value, x.recorded_chapter = row.recorded,"
    "  x.retracted = row.retracted }"
    " CALL { UNWIND $closed_relations AS id MATCH ()-[f]->() WHERE elementId(f) = id"
    " SET f.valid_to_chapter = $chapter, f.closed_by_chapter = $chapter }"
    " CALL { UNWIND $closed_attributes AS id MATCH (f:Attribute) WHERE elementId(f) = id"
    " SET f.valid_to_chapter = $chapter, f.closed_by_chapter = $chapter }"
    " CALL { UNWIND $new_attributes AS row"
    " MATCH (s:Entity {novel_id: $novel, key: row.props.subject})"
    " CREATE (s)-[:HAS_ATTRIBUTE]->(f:Attribute) SET f += row.props }"
    " CALL { UNWIND $new_setups AS row"
    " CREATE (v:Setup {novel_id: $novel, key: row.key, recorded_chapter: row.recorded})"
    " SET v += row.props }"
    " CALL { UNWIND $changed_setups AS row MATCH (v:Setup) WHERE elementId(v) = row.id"
    " SET v += row.props }"
    # Links are for people browsing the graph; a set-up's ``entities`` stays the record.
    " CALL { UNWIND $linked_setups AS row"
    " MATCH (v:Setup {novel_id: $novel, key: row.key, recorded_chapter: row.recorded})"
    " OPTIONAL MATCH (v)-[old:CONCERNS]->() DELETE old"
    " WITH DISTINCT v, row UNWIND row.entities AS entity_key"
    " MATCH (e:Entity {novel_id: $novel, key: entity_key}) MERGE (v)-[:CONCERNS]->(e) }"
    " MATCH (n:Novel {novel_id: $novel}) SET n.entity_seq = $entity_seq"
)

_WRITE_LISTS = (
    "new_entities",
    "changed_entities",
    "new_fixed",
    "changed_fixed",
    "closed_relations",
    "closed_attributes",
    "new_attributes",
    "new_setups",
    "changed_setups",
    "linked_setups",
)


async def _single(tx: AsyncManagedTransaction, query: LiteralString, **params: Any) -> Any:
    """The one row a query of collected lists returns, as a record (``None``: no row)."""
    result = await tx.run(query, params)
    return await result.single()


async def _execute(tx: AsyncManagedTransaction, query: LiteralString, **params: Any) -> None:
    result = await tx.run(query, params)
    await result.consume()


@asynccontextmanager
async def _storage_errors(action: str) -> AsyncIterator[None]:
    """Turn driver and server failures into :class:`StorageError`."""
    try:
        yield
    except (Neo4jError, DriverError) as exc:
        raise StorageError(f"world memory could not {action}: {exc}", action=action) from exc


class _StoredFact(NamedTuple):
    """A fact as the read fragments yield it."""

    id: str
    subject: str
    predicate: str
    value: str | None
    object: str | None
    valid_from: int
    valid_to: int | None
    source: int
    closed_by: int | None

    def fact(self) -> Fact:
        return Fact(
            subject=self.subject,
            predicate=self.predicate,
            value=self.value,
            object=self.object,
            valid_from_chapter=self.valid_from,
            valid_to_chapter=self.valid_to,
            source_chapter=self.source,
        )


def _stored_facts(*collected: Iterable[Sequence[Any]]) -> list[_StoredFact]:
    return [_StoredFact(*item) for items in collected for item in items]


# --- per-batch working state ----------------------------------------------------------


@dataclass(frozen=True)
class _ChildState:
    """An alias (``text`` is the alias) or a fixed attribute (``text`` is its value)."""

    text: str
    recorded_chapter: int
    retracted: bool
    id: str | None = None


@dataclass(frozen=True)
class _EntityState:
    key: str
    kind: str
    name: str
    description: str
    description_chapter: int | None
    introduced_chapter: int
    retracted: bool
    seq: int | None = None
    id: str | None = None

    def props(self, aliases: Sequence[tuple[str, _ChildState]]) -> dict[str, Any]:
        """Node properties, with the entity's aliases as parallel lists."""
        return {
            "key_norm": normalise(self.key),
            "kind": self.kind,
            "name": self.name,
            "name_norm": normalise(self.name),
            "description": self.description,
            "description_chapter": self.description_chapter,
            "introduced_chapter": self.introduced_chapter,
            "retracted": self.retracted,
            "aliases": [a.text for _, a in aliases],
            "alias_norms": [norm for norm, _ in aliases],
            "alias_chapters": [a.recorded_chapter for _, a in aliases],
            "alias_retracted": [a.retracted for _, a in aliases],
        }


@dataclass(frozen=True)
class _FactState:
    subject: str
    predicate: str
    value: str | None
    object: str | None
    valid_from: int
    valid_to: int | None
    closed_by: int | None = None
    id: str | None = None

    @property
    def slot(self) -> Slot:
        return fact_slot(self.subject, self.predicate, self.value, self.object)

    def same_content(self, other: _FactState) -> bool:
        return (self.value, self.object) == (other.value, other.object)

    def valid_at(self, chapter: int) -> bool:
        return self.valid_from <= chapter and (self.valid_to is None or chapter < self.valid_to)


@dataclass(frozen=True)
class _SetupState:
    key: str
    description: str
    planted_chapter: int
    due_chapter: int
    entities: tuple[str, ...]
    paid_off_chapter: int | None
    recorded_chapter: int
    retracted: bool
    id: str | None = None

    def same_plan(self, other: _SetupState) -> bool:
        return (self.description, self.planted_chapter, self.due_chapter, self.entities) == (
            other.description,
            other.planted_chapter,
            other.due_chapter,
            other.entities,
        )

    def props(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "planted_chapter": self.planted_chapter,
            "due_chapter": self.due_chapter,
            "paid_off_chapter": self.paid_off_chapter,
            "entities": list(self.entities),
            "retracted": self.retracted,
        }


@dataclass
class _Writes:
    """Everything a batch writes, flushed at its end in one statement (plus new relations)."""

    lists: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in _WRITE_LISTS})
    relations: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


class _Batch:
    """One ``apply`` call inside one write transaction: load, decide, then write."""

    def __init__(self, tx: AsyncManagedTransaction, novel_id: str, chapter: int) -> None:
        self.tx = tx
        self.novel_id = novel_id
        self.chapter = chapter
        self.rejected: list[Rejection] = []
        self.writes = _Writes()
        self.entity_seq = 0
        self.loaded_seq = 0
        self.entities: dict[str, _EntityState] = {}
        self.aliases: dict[tuple[str, str], _ChildState] = {}
        self.fixed: dict[tuple[str, str], _ChildState] = {}
        self.loaded_entities: dict[str, _EntityState] = {}
        self.loaded_aliases: dict[tuple[str, str], _ChildState] = {}
        self.loaded_fixed: dict[tuple[str, str], _ChildState] = {}
        self.stored_facts: list[_StoredFact] = []
        self.setup_versions: dict[tuple[str, int], _SetupState] = {}

    def reject(self, change: str, reason: str) -> None:
        self.rejected.append(Rejection(change=change, reason=reason))

    async def run(self, changes: WorldChanges) -> ApplyResult:
        setup_keys = {s.key.strip() for s in changes.setups} | {k.strip() for k in changes.paid_off}
        setup_keys.discard("")
        await self._load(referenced_keys(changes), setup_keys)
        pending: list[FactSpec] = []
        for spec in changes.entities:
            pending.extend(self._merge_entity(spec))
        self._flush_entities()
        pending.extend(changes.facts)
        self._apply_facts(pending, changes.ended)
        self._apply_setups(changes.setups, changes.paid_off)
        await self._write()
        return ApplyResult(rejected=tuple(self.rejected))

    async def _load(self, keys: Collection[str], setup_keys: Collection[str]) -> None:
        """Lock the novel and load the entities, open facts and set-ups the batch names."""
        row = await _single(
            self.tx,
            _LOAD_BATCH,
            novel=self.novel_id,
            chapter=self.chapter,
            keys=sorted(keys),
            setup_keys=sorted(setup_keys),
        )
        self.entity_seq = self.loaded_seq = int(row["entity_seq"])
        for (
            entity_id,
            key,
            kind,
            name,
            description,
            description_chapter,
            introduced_chapter,
            retracted,
            seq,
            aliases,
            alias_norms,
            alias_chapters,
            alias_retracted,
            fixed,
        ) in row["entities"]:
            self.entities[key] = _EntityState(
                key=key,
                kind=kind,
                name=name,
                description=description,
                description_chapter=description_chapter,
                introduced_chapter=introduced_chapter,
                retracted=retracted,
                seq=seq,
                id=entity_id,
            )
            for text, norm, recorded, gone in zip(
                aliases, alias_norms, alias_chapters, alias_retracted, strict=True
            ):
                self.aliases[(key, norm)] = _ChildState(text, recorded, gone)
            for fixed_id, attribute, value, recorded, gone in fixed:
                self.fixed[(key, attribute)] = _ChildState(value, recorded, gone, fixed_id)
        self.loaded_entities = dict(self.entities)
        self.loaded_aliases = dict(self.aliases)
        self.loaded_fixed = dict(self.fixed)
        self.stored_facts = _stored_facts(row["relations"], row["attributes"])
        for item in row["setups"]:
            version = _setup_state(item)
            self.setup_versions[(version.key, version.recorded_chapter)] = version

    async def _write(self) -> None:
        if any(self.writes.lists.values()) or self.entity_seq != self.loaded_seq:
            await _execute(
                self.tx,
                _WRITE_BATCH,
                novel=self.novel_id,
                chapter=self.chapter,
                entity_seq=self.entity_seq,
                **self.writes.lists,
            )
        for rel_type, rows in sorted(self.writes.relations.items()):
            await _execute(
                self.tx, _create_relations_query(rel_type), novel=self.novel_id, rows=rows
            )

    # --- entities -------------------------------------------------------------------

    def _merge_entity(self, spec: EntitySpec) -> list[FactSpec]:
        """Upsert one entity in memory; returns its mutable attributes as facts."""
        key = spec.key.strip()
        name = clean(spec.name)
        description = spec.description.strip()
        label = f"entity {key!r}"
        if not key or len(key) > KEY_LENGTH:
            self.reject(label, f"key must be 1-{KEY_LENGTH} characters")
            return []
        if spec.kind not in ENTITY_KINDS:
            self.reject(label, f"unknown kind {spec.kind!r}")
            return []
        if not name:
            self.reject(label, "name is empty")
            return []
        current = self.entities.get(key)
        extra_names: list[str] = []
        if current is None or current.retracted:
            # A retracted node is revived in place: (novel_id, key) stays unique.
            self.entities[key] = _EntityState(
                key=key,
                kind=spec.kind,
                name=name,
                description=description,
                description_chapter=self.chapter if description else None,
                introduced_chapter=self.chapter,
                retracted=False,
                seq=current.seq if current else None,
                id=current.id if current else None,
            )
        else:
            if spec.kind != current.kind:
                self.reject(
                    f"{label} kind {spec.kind!r}",
                    f"{key!r} is a {current.kind}; kinds never change",
                )
            if normalise(name) != normalise(current.name):
                extra_names.append(name)
            if description and not current.description:
                self.entities[key] = replace(
                    current, description=description, description_chapter=self.chapter
                )
        for alias in (*extra_names, *spec.aliases):
            self._merge_alias(key, alias)
        for attribute, value in spec.fixed.items():
            self._merge_fixed(key, attribute, value)
        return [FactSpec(key, attribute, value=value) for attribute, value in spec.mutable.items()]

    def _merge_alias(self, key: str, alias: str) -> None:
        text = clean(alias)
        norm = normalise(text)
        if not norm or norm == normalise(self.entities[key].name):
            return
        current = self.aliases.get((key, norm))
        if current is None:
            self.aliases[(key, norm)] = _ChildState(text, self.chapter, retracted=False)
        elif current.retracted:
            self.aliases[(key, norm)] = replace(
                current, text=text, recorded_chapter=self.chapter, retracted=False
            )

    def _merge_fixed(self, key: str, attribute: str, value: str) -> None:
        attribute = attribute.strip()
        value = value.strip()
        label = f"fixed {key}.{attribute}={value!r}"
        if not attribute or len(attribute) > KEY_LENGTH:
            self.reject(label, f"attribute name must be 1-{KEY_LENGTH} characters")
            return
        if not value:
            self.reject(label, "value is empty")
            return
        current = self.fixed.get((key, attribute))
        if current is None:
            self.fixed[(key, attribute)] = _ChildState(value, self.chapter, retracted=False)
        elif current.retracted:
            self.fixed[(key, attribute)] = replace(
                current, text=value, recorded_chapter=self.chapter, retracted=False
            )
        elif normalise(current.text) != normalise(value):
            self.reject(label, f"{key}.{attribute} is fixed as {current.text!r}")

    def _flush_entities(self) -> None:
        lists = self.writes.lists
        # Dict order is stored order then merge order, so revived aliases keep their place.
        aliases: dict[str, list[tuple[str, _ChildState]]] = defaultdict(list)
        alias_changed: set[str] = set()
        for (key, norm), alias in self.aliases.items():
            aliases[key].append((norm, alias))
            if alias != self.loaded_aliases.get((key, norm)):
                alias_changed.add(key)
        for key, state in self.entities.items():
            props = state.props(aliases[key])
            if state.id is None:
                self.entity_seq += 1
                lists["new_entities"].append({"key": key, "seq": self.entity_seq, "props": props})
            elif state != self.loaded_entities.get(key) or key in alias_changed:
                lists["changed_entities"].append({"id": state.id, "props": props})
        for (key, attribute), s in self.fixed.items():
            if s.id is None:
                lists["new_fixed"].append(
                    {
                        "subject": key,
                        "name": attribute,
                        "value": s.text,
                        "recorded": s.recorded_chapter,
                    }
                )
            elif s != self.loaded_fixed[(key, attribute)]:
                lists["changed_fixed"].append(
                    {
                        "id": s.id,
                        "value": s.text,
                        "recorded": s.recorded_chapter,
                        "retracted": s.retracted,
                    }
                )

    # --- facts ----------------------------------------------------------------------

    def _visible(self, key: str) -> bool:
        state = self.entities.get(key)
        return state is not None and not state.retracted

    def _validate_facts(self, pending: Sequence[FactSpec]) -> list[_FactState]:
        """Checked facts, collapsed so each single-valued (subject, predicate) occurs once."""
        collapsed: dict[Slot, _FactState] = {}
        for spec in pending:
            subject = spec.subject.strip()
            predicate = spec.predicate.strip()
            value = spec.value.strip() if spec.value is not None else None
            obj = spec.object.strip() if spec.object is not None else None
            label = fact_label(subject, predicate, value, obj)
            if (value is None) == (obj is None):
                self.reject(label, "exactly one of value or object must be set")
                continue
            if not predicate or len(predicate) > KEY_LENGTH:
                self.reject(label, f"predicate must be 1-{KEY_LENGTH} characters")
                continue
            unknown = [k for k in (subject, obj) if k is not None and not self._visible(k)]
            if unknown:
                self.reject(label, f"unknown entity {unknown[0]!r}")
                continue
            if value is not None:
                fixed = self.fixed.get((subject, predicate))
                if fixed is not None and not fixed.retracted:
                    if normalise(fixed.text) != normalise(value):
                        self.reject(label, f"{subject}.{predicate} is fixed as {fixed.text!r}")
                    # A restated fixed attribute adds nothing: the fixed value already says it.
                    continue
            fact = _FactState(subject, predicate, value, obj, self.chapter, None)
            # Earlier assertions of the same single-valued slot would hold for no chapter.
            collapsed.pop(fact.slot, None)
            collapsed[fact.slot] = fact
        return list(collapsed.values())

    def _validate_ends(self, ended: Sequence[FactEnd]) -> list[FactEnd]:
        valid: list[FactEnd] = []
        for end in ended:
            subject = end.subject.strip()
            predicate = end.predicate.strip()
            obj = end.object.strip() if end.object is not None else None
            label = f"end {subject}.{predicate}" + (f" -> {obj}" if obj is not None else "")
            if not predicate:
                self.reject(label, "predicate is empty")
                continue
            unknown = [k for k in (subject, obj) if k is not None and not self._visible(k)]
            if unknown:
                self.reject(label, f"unknown entity {unknown[0]!r}")
                continue
            valid.append(FactEnd(subject, predicate, obj))
        return valid

    def _facts_of(self, subjects: Collection[str]) -> dict[tuple[str, str], list[_FactState]]:
        """Loaded facts of these subjects (visible, valid at or after the batch chapter)."""
        found: dict[tuple[str, str], list[_FactState]] = defaultdict(list)
        for f in self.stored_facts:
            if f.subject in subjects:
                found[(f.subject, f.predicate)].append(
                    _FactState(
                        f.subject,
                        f.predicate,
                        f.value,
                        f.object,
                        f.valid_from,
                        f.valid_to,
                        f.closed_by,
                        f.id,
                    )
                )
        return found

    def _apply_facts(self, pending: Sequence[FactSpec], ended: Sequence[FactEnd]) -> None:
        asserted = self._validate_facts(pending)
        ends = self._validate_ends(ended)
        subjects = {f.subject for f in asserted} | {e.subject for e in ends}
        stored = self._facts_of(subjects)
        c = self.chapter
        # Element id of each stored fact to close -> whether it is a relationship.
        closing: dict[str, bool] = {}

        def close(fact: _FactState, bucket: list[_FactState]) -> None:
            if fact.id is not None:
                closing[fact.id] = fact.object is not None
            bucket[bucket.index(fact)] = replace(fact, valid_to=c, closed_by=c)

        # Ends first, so that a batch ending a relation and asserting its successor keeps
        # the successor; facts this batch asserts are never ended by it (idempotence).
        protected = {(f.subject, f.predicate, f.value, f.object) for f in asserted}
        for end in ends:
            bucket = stored[(end.subject, end.predicate)]
            for fact in list(bucket):
                if fact.valid_to is not None or fact.valid_from > c:
                    continue
                if end.object is not None and fact.object != end.object:
                    continue
                content = (fact.subject, fact.predicate, fact.value, fact.object)
                if fact.valid_from == c and content in protected:
                    continue
                close(fact, bucket)

        new: list[_FactState] = []
        for fact in asserted:
            bucket = stored[(fact.subject, fact.predicate)]
            slot = [f for f in bucket if f.slot == fact.slot]
            if any(f.valid_at(c) and f.same_content(fact) for f in slot):
                continue
            current = [f for f in slot if f.valid_at(c)]
            later = [f.valid_from for f in slot if f.valid_from > c]
            if current:
                # The new value takes over the rest of the current one's interval, so that
                # whatever ends it (a later value, a FactEnd) ends the new one instead; this
                # also places values applied out of chapter order correctly.
                taken = max(current, key=lambda f: (f.valid_to is None, f.valid_to or 0))
                fact = replace(fact, valid_to=taken.valid_to, closed_by=taken.closed_by)
                for other in current:
                    close(other, bucket)
            elif later:
                fact = replace(fact, valid_to=min(later), closed_by=min(later))
            bucket.append(fact)
            new.append(fact)

        self._flush_facts(closing, new)

    def _flush_facts(self, closing: dict[str, bool], new: Sequence[_FactState]) -> None:
        lists = self.writes.lists
        for fact_id, is_relation in closing.items():
            lists["closed_relations" if is_relation else "closed_attributes"].append(fact_id)
        now = datetime.now(UTC)
        for f in new:
            props: dict[str, Any] = {
                "novel_id": self.novel_id,
                "valid_from_chapter": f.valid_from,
                "valid_to_chapter": f.valid_to,
                "source_chapter": self.chapter,
                "closed_by_chapter": f.closed_by,
                "retracted": False,
                "created_at": now,
            }
            if f.object is not None:
                props["predicate"] = f.predicate
                self.writes.relations[relationship_type(f.predicate)].append(
                    {"subject": f.subject, "object": f.object, "props": props}
                )
            else:
                props.update(subject=f.subject, name=f.predicate, value=f.value)
                lists["new_attributes"].append({"props": props})

    # --- set-ups --------------------------------------------------------------------

    def _apply_setups(self, specs: Sequence[SetupSpec], paid_off: Sequence[str]) -> None:
        versions = dict(self.setup_versions)
        loaded = dict(versions)
        c = self.chapter

        def latest(key: str) -> _SetupState | None:
            visible = [
                v
                for (k, recorded), v in versions.items()
                if k == key and not v.retracted and recorded <= c
            ]
            return max(visible, key=lambda v: v.recorded_chapter, default=None)

        for spec in specs:
            key = spec.key.strip()
            label = f"setup {key!r}"
            if not key or len(key) > KEY_LENGTH:
                self.reject(label, f"key must be 1-{KEY_LENGTH} characters")
                continue
            if spec.planted_chapter < 0 or spec.due_chapter < spec.planted_chapter:
                self.reject(label, "chapters must be 0 or more and due must not precede planted")
                continue
            plan = _SetupState(
                key=key,
                description=spec.description.strip(),
                planted_chapter=spec.planted_chapter,
                due_chapter=spec.due_chapter,
                entities=tuple(dict.fromkeys(e.strip() for e in spec.entities if e.strip())),
                paid_off_chapter=None,
                recorded_chapter=c,
                retracted=False,
            )
            previous = latest(key)
            if previous is not None and previous.same_plan(plan):
                continue
            existing = versions.get((key, c))
            versions[(key, c)] = replace(
                plan,
                paid_off_chapter=previous.paid_off_chapter if previous else None,
                id=existing.id if existing else None,
            )

        for raw in paid_off:
            key = raw.strip()
            current = latest(key)
            if current is None:
                self.reject(f"paid_off {key!r}", f"unknown set-up {key!r}")
                continue
            if current.paid_off_chapter is not None:
                continue
            # Every visible version carries the pay-off so any of them may become latest.
            for slot, version in list(versions.items()):
                if slot[0] == key and not version.retracted and version.paid_off_chapter is None:
                    versions[slot] = replace(version, paid_off_chapter=c)

        lists = self.writes.lists
        for slot, v in versions.items():
            row = {"key": v.key, "recorded": v.recorded_chapter, "props": v.props()}
            if v.id is None:
                lists["new_setups"].append(row)
            elif v != loaded[slot]:
                lists["changed_setups"].append({**row, "id": v.id})
            else:
                continue
            lists["linked_setups"].append(
                {"key": v.key, "recorded": v.recorded_chapter, "entities": list(v.entities)}
            )


def _setup_state(item: Sequence[Any]) -> _SetupState:
    """A set-up version from ``[elementId, _SETUP_COLUMNS...]``."""
    (
        setup_id,
        key,
        description,
        planted,
        due,
        entities,
        paid_off,
        recorded,
        retracted,
    ) = item
    return _SetupState(
        key=key,
        description=description,
        planted_chapter=planted,
        due_chapter=due,
        entities=tuple(entities),
        paid_off_chapter=paid_off,
        recorded_chapter=recorded,
        retracted=retracted,
        id=setup_id,
    )


# --- reads ----------------------------------------------------------------------------


def _entities_from(items: Iterable[Sequence[Any]], chapter: int | None) -> dict[str, Entity]:
    """Entities from ``_ENTITY_ITEM`` lists, as known at ``chapter`` (``None``: now).

    Aliases, fixed attributes and a later-filled description recorded after ``chapter``
    are left out (the fragment already dropped such fixed attributes).
    """
    found: dict[str, Entity] = {}
    for (
        key,
        kind,
        name,
        name_norm,
        description,
        description_chapter,
        introduced_chapter,
        aliases,
        alias_norms,
        alias_chapters,
        alias_retracted,
        fixed,
    ) in items:
        shown = description_chapter is not None and (
            chapter is None or description_chapter <= chapter
        )
        found[key] = Entity(
            key=key,
            kind=cast(EntityKind, kind),
            name=name,
            aliases=tuple(
                text
                for text, norm, recorded, gone in zip(
                    aliases, alias_norms, alias_chapters, alias_retracted, strict=True
                )
                if not gone and (chapter is None or recorded <= chapter) and norm != name_norm
            ),
            description=description if shown else "",
            fixed=dict(sorted((attribute, value) for attribute, value in fixed)),
            introduced_chapter=introduced_chapter,
        )
    return found


def _setups_from(items: Iterable[Sequence[Any]], chapter: int) -> list[Setup]:
    """The latest version of every set-up among ``items``, by key."""
    latest: dict[str, Setup] = {}
    for v in sorted((_setup_state(i) for i in items), key=lambda v: (v.key, v.recorded_chapter)):
        paid = v.paid_off_chapter
        latest[v.key] = Setup(
            key=v.key,
            description=v.description,
            planted_chapter=v.planted_chapter,
            due_chapter=v.due_chapter,
            paid_off_chapter=paid if paid is not None and paid <= chapter else None,
            entities=v.entities,
        )
    return [latest[key] for key in sorted(latest)]


async def _world_as_of(tx: AsyncManagedTransaction, novel_id: str, chapter: int) -> WorldSnapshot:
    row = await _single(tx, _WORLD_AS_OF, novel=novel_id, chapter=chapter)
    return build_snapshot(
        chapter,
        _entities_from(row["entities"], chapter),
        [f.fact() for f in _stored_facts(row["relations"], row["attributes"])],
        _setups_from(row["setups"], chapter),
    )


async def _neighbourhood(
    tx: AsyncManagedTransaction, novel_id: str, key: str, chapter: int
) -> WorldSnapshot:
    touching = await _single(
        tx,
        "MATCH (:Entity {novel_id: $novel, key: $key})-[f]-(:Entity) WHERE "
        + _VALID_AT
        + " WITH DISTINCT f RETURN collect("
        + _RELATION_ITEM
        + ") AS relations",
        novel=novel_id,
        key=key,
        chapter=chapter,
    )
    relations = [f.fact() for f in _stored_facts(touching["relations"])]
    keys = {key} | {f.subject for f in relations} | {f.object or key for f in relations}
    row = await _single(
        tx,
        _ENTITIES_BY_KEY + " CALL { UNWIND $keys AS subject"
        " MATCH (f:Attribute {novel_id: $novel, subject: subject}) WHERE "
        + _VALID_AT
        + " RETURN collect("
        + _ATTRIBUTE_ITEM
        + ") AS attributes }"
        + _SETUPS_BY_CHAPTER
        + " RETURN entities, attributes, setups",
        novel=novel_id,
        keys=sorted(keys),
        chapter=chapter,
    )
    entities = _entities_from(row["entities"], chapter)
    if key not in entities:
        return WorldSnapshot(chapter=chapter, entities=(), facts=(), setups=())
    # Attributes of a hidden end are dropped by build_snapshot, as the SQL backend never reads them.
    attributes = [f.fact() for f in _stored_facts(row["attributes"])]
    setups = [s for s in _setups_from(row["setups"], chapter) if key in s.entities]
    return build_snapshot(chapter, entities, [*relations, *attributes], setups)


async def _lookup(tx: AsyncManagedTransaction, novel_id: str, name: str) -> Entity | None:
    wanted = name.strip()
    norm = normalise(name)
    row = await _single(
        tx,
        "CALL { MATCH (e:Entity {novel_id: $novel})"
        " WHERE NOT e.retracted"
        " AND (e.key = $wanted OR e.key_norm = $norm OR e.name_norm = $norm)"
        " RETURN collect([e.key, e.key_norm, e.seq]) AS named }"
        " CALL { MATCH (e:Entity {novel_id: $novel})"
        " WHERE NOT e.retracted AND any(i IN range(0, size(e.alias_norms) - 1)"
        "  WHERE e.alias_norms[i] = $norm AND NOT e.alias_retracted[i])"
        " RETURN collect([e.key, e.seq]) AS aliased }"
        " RETURN named, aliased",
        novel=novel_id,
        wanted=wanted,
        norm=norm,
    )
    named = sorted(
        row["named"],
        key=lambda n: (0 if n[0] == wanted else 1 if n[1] == norm else 2, n[2]),
    )
    aliased = sorted(row["aliased"], key=lambda a: a[1])
    key: str | None = named[0][0] if named else aliased[0][0] if aliased else None
    if key is None:
        return None
    found = await _single(
        tx, _ENTITIES_BY_KEY + " RETURN entities", novel=novel_id, keys=[key], chapter=None
    )
    return _entities_from(found["entities"], None).get(key)


async def _reopen_facts_closed_by(tx: AsyncManagedTransaction, novel_id: str, c: int) -> None:
    """Give every fact closed by chapter ``c`` the end it would have had without it.

    A fact replaced at ``c`` handed the rest of its interval to its successor, so it takes
    that end back from the successor (the one recorded at ``c`` in the same slot that ``c``
    itself did not close); a fact merely ended there reopens.
    """
    closed_by_c: LiteralString = (
        "f.closed_by_chapter = $chapter AND f.source_chapter <> $chapter AND NOT f.retracted"
    )
    recorded_at_c: LiteralString = (
        "f.source_chapter = $chapter AND NOT f.retracted"
        " AND (f.closed_by_chapter IS NULL OR f.closed_by_chapter <> $chapter)"
    )
    row = await _single(
        tx,
        _facts_fragment(closed_by_c, closed_by_c)
        + " WITH relations + attributes AS closed"
        + _facts_fragment(recorded_at_c, recorded_at_c)
        + " RETURN closed, relations + attributes AS recorded",
        novel=novel_id,
        chapter=c,
    )
    closed = _stored_facts(row["closed"])
    if not closed:
        return
    successors: dict[Slot, tuple[int | None, int | None]] = {}
    for r in _stored_facts(row["recorded"]):
        successors[fact_slot(r.subject, r.predicate, r.value, r.object)] = (r.valid_to, r.closed_by)
    relations: list[dict[str, Any]] = []
    attributes: list[dict[str, Any]] = []
    for fact in closed:
        valid_to, closed_by = successors.get(
            fact_slot(fact.subject, fact.predicate, fact.value, fact.object), (None, None)
        )
        update = {"id": fact.id, "to": valid_to, "by": closed_by}
        (relations if fact.object is not None else attributes).append(update)
    await _execute(
        tx,
        "CALL { UNWIND $relations AS row MATCH ()-[f]->() WHERE elementId(f) = row.id"
        " SET f.valid_to_chapter = row.to, f.closed_by_chapter = row.by }"
        " CALL { UNWIND $attributes AS row MATCH (f:Attribute) WHERE elementId(f) = row.id"
        " SET f.valid_to_chapter = row.to, f.closed_by_chapter = row.by }",
        relations=relations,
        attributes=attributes,
    )


_LOCK_EXISTING_NOVEL: LiteralString = (
    "MATCH (n:Novel {novel_id: $novel}) SET n.entity_seq = n.entity_seq RETURN n.novel_id"
)

_RETRACT: LiteralString = (
    "CALL { MATCH (:Entity {novel_id: $novel})-[f]->(:Entity)"
    " WHERE f.source_chapter = $chapter AND NOT f.retracted SET f.retracted = true }"
    " CALL { MATCH (f:Attribute {novel_id: $novel})"
    " WHERE f.source_chapter = $chapter AND NOT f.retracted SET f.retracted = true }"
    " CALL { MATCH (e:Entity {novel_id: $novel})"
    " WHERE e.introduced_chapter = $chapter AND NOT e.retracted SET e.retracted = true }"
    # Descriptions only ever fill an empty one, so undoing means emptying it again.
    " CALL { MATCH (e:Entity {novel_id: $novel})"
    " WHERE e.description_chapter = $chapter AND e.introduced_chapter <> $chapter"
    " SET e.description = '', e.description_chapter = null }"
    " CALL { MATCH (e:Entity {novel_id: $novel}) WHERE $chapter IN e.alias_chapters"
    " SET e.alias_retracted = [i IN range(0, size(e.alias_chapters) - 1)"
    "  | e.alias_retracted[i] OR e.alias_chapters[i] = $chapter] }"
    " CALL { MATCH (x:FixedAttribute {novel_id: $novel})"
    " WHERE x.recorded_chapter = $chapter AND NOT x.retracted SET x.retracted = true }"
    " CALL { MATCH (v:Setup {novel_id: $novel})"
    " WHERE v.recorded_chapter = $chapter AND NOT v.retracted SET v.retracted = true }"
    " CALL { MATCH (v:Setup {novel_id: $novel}) WHERE v.paid_off_chapter = $chapter"
    " SET v.paid_off_chapter = null }"
)


async def _retract(tx: AsyncManagedTransaction, novel_id: str, c: int) -> None:
    if await _single(tx, _LOCK_EXISTING_NOVEL, novel=novel_id) is None:
        return  # nothing was ever recorded for this novel
    await _reopen_facts_closed_by(tx, novel_id, c)
    await _execute(tx, _RETRACT, novel=novel_id, chapter=c)


# Entities first: DETACH takes their facts, attribute links and set-up links along.
_DROP: LiteralString = (
    "CALL { MATCH (e:Entity {novel_id: $novel}) DETACH DELETE e }"
    " CALL { MATCH (a:Attribute {novel_id: $novel}) DETACH DELETE a }"
    " CALL { MATCH (x:FixedAttribute {novel_id: $novel}) DETACH DELETE x }"
    " CALL { MATCH (v:Setup {novel_id: $novel}) DETACH DELETE v }"
    " CALL { MATCH (n:Novel {novel_id: $novel}) DETACH DELETE n }"
)


async def _drop(tx: AsyncManagedTransaction, novel_id: str) -> None:
    await _single(tx, _LOCK_EXISTING_NOVEL, novel=novel_id)
    await _execute(tx, _DROP, novel=novel_id)


class Neo4jWorldMemory(WorldMemory):
    """World memory in Neo4j 5 (see the module docstring for the graph model).

    The driver may be shared: :meth:`close` closes it only when ``owns_driver`` is true
    (as it is for :meth:`connect`).
    """

    def __init__(
        self, driver: AsyncDriver, *, database: str = "neo4j", owns_driver: bool = False
    ) -> None:
        self._driver = driver
        self._database = database
        self._owns_driver = owns_driver

    @classmethod
    def connect(
        cls, url: str, user: str = "neo4j", password: str | None = None, database: str = "neo4j"
    ) -> Neo4jWorldMemory:
        """A memory with its own driver for ``url`` (no auth without a ``password``)."""
        auth = (user, password) if password else None
        try:
            driver = AsyncGraphDatabase.driver(url, auth=auth)
        except (DriverError, ValueError) as exc:
            raise StorageError(f"invalid Neo4j URL {url!r}: {exc}", url=url) from exc
        return cls(driver, database=database, owns_driver=True)

    def _session(self) -> AsyncSession:
        # Server notifications would only say that a property nobody has set yet (say,
        # paid_off_chapter) is unknown; logging one per query costs time and means nothing.
        return self._driver.session(database=self._database, notifications_min_severity="OFF")

    async def setup(self) -> None:
        """Create the constraints and indexes (idempotent) and wait until they are online."""
        async with _storage_errors("create its schema"), self._session() as session:
            for statement in (*_SCHEMA, "CALL db.awaitIndexes(120)"):
                result = await session.run(statement)
                await result.consume()

    async def apply(self, novel_id: str, chapter: int, changes: WorldChanges) -> ApplyResult:
        """Apply a batch atomically at ``chapter`` (see :meth:`WorldMemory.apply`)."""
        check_novel(novel_id)
        if chapter < 0:
            raise InvalidInput("chapter must be 0 or more", chapter=chapter)

        async def work(tx: AsyncManagedTransaction) -> ApplyResult:
            return await _Batch(tx, novel_id, chapter).run(changes)

        async with self._session() as session:
            try:
                return await session.execute_write(work)
            except ConstraintError:
                # A concurrent first apply created the novel's node first; a second pass
                # waits for its lock and then sees what it wrote.
                pass
            except (Neo4jError, DriverError) as exc:
                raise StorageError(f"world memory could not apply changes: {exc}") from exc
            async with _storage_errors("apply changes"):
                return await session.execute_write(work)

    async def world_as_of(self, novel_id: str, chapter: int) -> WorldSnapshot:
        """Entities, valid facts and set-ups as they stand at ``chapter`` (one query)."""
        check_novel(novel_id)
        async with _storage_errors("read the world"), self._session() as session:
            return await session.execute_read(_world_as_of, novel_id, chapter)

    async def lookup(self, novel_id: str, name: str) -> Entity | None:
        """Find an entity by key, name or alias: exact key first, then the normalised
        key, name and alias; ties go to the entity recorded first."""
        check_novel(novel_id)
        if not normalise(name):
            return None
        async with _storage_errors("look up an entity"), self._session() as session:
            return await session.execute_read(_lookup, novel_id, name)

    async def neighbourhood(self, novel_id: str, key: str, chapter: int) -> WorldSnapshot:
        """The entity, its relationships valid at ``chapter``, their other ends, the
        attributes of all of those, and set-ups naming the entity."""
        check_novel(novel_id)
        async with _storage_errors("read a neighbourhood"), self._session() as session:
            return await session.execute_read(_neighbourhood, novel_id, key.strip(), chapter)

    async def retract_chapter(self, novel_id: str, chapter: int) -> None:
        """Hide what ``chapter`` recorded, reopen what it closed, clear its pay-offs."""
        check_novel(novel_id)
        async with _storage_errors("retract a chapter"), self._session() as session:
            await session.execute_write(_retract, novel_id, chapter)

    async def drop_novel(self, novel_id: str) -> None:
        """Delete every node and relationship of the novel's world."""
        check_novel(novel_id)
        async with _storage_errors("drop a novel"), self._session() as session:
            await session.execute_write(_drop, novel_id)

    async def close(self) -> None:
        """Close the driver if this memory opened it."""
        if self._owns_driver:
            await self._driver.close()
