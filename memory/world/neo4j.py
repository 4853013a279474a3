"""Neo4j backend of world memory, with the SQL backend's semantics exactly.

The graph is laid out so that an author opening Neo4j Browser recognises the world:

* ``(:Entity:Character {novel_id, key, name, kind, description, aliases, ...})``: every
  entity has the ``Entity`` label plus one readable kind label (``Character``,
  ``Location``, ``Faction``, ``Item``, ``Rule``, ``Event``). ``aliases`` lists every alias
  ever recorded in recording order; the parallel lists ``alias_norms``,
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

``apply`` works like the SQL backend's: one write transaction loads what the batch
touches, decides in Python with the same rules (imported from :mod:`memory.world.sql` so
the backends cannot drift apart) and writes with ``UNWIND`` batches. Reads take a few
queries whatever the size of the world.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, LiteralString, cast

from neo4j import AsyncDriver, AsyncGraphDatabase, AsyncManagedTransaction, Record
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
from memory.world.sql import (
    Slot,
    _check_novel,
    _clean,
    _fact_label,
    _referenced_keys,
    _slot,
    _snapshot,
    normalise,
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


def _create_relation_query(rel_type: str) -> LiteralString:
    """The ``UNWIND`` query creating relationship facts of one whitelisted type."""
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
    "FOR (f:FixedAttribute) REQUIRE (f.novel_id, f.subject, f.name) IS UNIQUE",
    "CREATE CONSTRAINT scribe_setup_version IF NOT EXISTS "
    "FOR (v:Setup) REQUIRE (v.novel_id, v.key, v.recorded_chapter) IS UNIQUE",
    "CREATE INDEX scribe_entity_novel IF NOT EXISTS FOR (e:Entity) ON (e.novel_id)",
    "CREATE INDEX scribe_attribute_novel IF NOT EXISTS FOR (a:Attribute) ON (a.novel_id)",
    "CREATE INDEX scribe_attribute_subject IF NOT EXISTS "
    "FOR (a:Attribute) ON (a.novel_id, a.subject)",
    "CREATE INDEX scribe_fixed_attribute_novel IF NOT EXISTS "
    "FOR (f:FixedAttribute) ON (f.novel_id)",
    "CREATE INDEX scribe_setup_novel IF NOT EXISTS FOR (v:Setup) ON (v.novel_id)",
)

# --- fact queries ---------------------------------------------------------------------
# Relationship facts are reached from their subject entity, attribute facts through their
# own index; both return the same columns so callers treat them alike. ``f`` is the fact.

_RELATION_FACTS: LiteralString = "MATCH (s:Entity {novel_id: $novel})-[f]->(o:Entity) WHERE "
_RELATION_COLUMNS: LiteralString = (
    " RETURN elementId(f) AS id, s.key AS subject, f.predicate AS predicate,"
    " null AS value, o.key AS object, f.valid_from_chapter AS valid_from,"
    " f.valid_to_chapter AS valid_to, f.source_chapter AS source,"
    " f.closed_by_chapter AS closed_by"
)
_ATTRIBUTE_FACTS: LiteralString = "MATCH (f:Attribute {novel_id: $novel}) WHERE "
_ATTRIBUTE_COLUMNS: LiteralString = (
    " RETURN elementId(f) AS id, f.subject AS subject, f.name AS predicate,"
    " f.value AS value, null AS object, f.valid_from_chapter AS valid_from,"
    " f.valid_to_chapter AS valid_to, f.source_chapter AS source,"
    " f.closed_by_chapter AS closed_by"
)
_VALID_AT: LiteralString = (
    "NOT f.retracted AND f.valid_from_chapter <= $chapter"
    " AND (f.valid_to_chapter IS NULL OR f.valid_to_chapter > $chapter)"
)

_ENTITY_COLUMNS: LiteralString = (
    " RETURN e.key AS key, e.kind AS kind, e.name AS name, e.name_norm AS name_norm,"
    " e.description AS description, e.description_chapter AS description_chapter,"
    " e.introduced_chapter AS introduced_chapter, e.aliases AS aliases,"
    " e.alias_norms AS alias_norms, e.alias_chapters AS alias_chapters,"
    " e.alias_retracted AS alias_retracted,"
    " [(e)-[:HAS_FIXED_ATTRIBUTE]->(x:FixedAttribute)"
    "  WHERE NOT x.retracted AND ($chapter IS NULL OR x.recorded_chapter <= $chapter)"
    "  | [x.name, x.value]] AS fixed"
)

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


async def _rows(tx: AsyncManagedTransaction, query: LiteralString, **params: Any) -> list[Record]:
    result = await tx.run(query, params)
    return [record async for record in result]


async def _execute(tx: AsyncManagedTransaction, query: LiteralString, **params: Any) -> None:
    result = await tx.run(query, params)
    await result.consume()


async def _select_facts(
    tx: AsyncManagedTransaction,
    relation_where: LiteralString,
    attribute_where: LiteralString,
    **params: Any,
) -> list[Record]:
    """Relationship and attribute facts matching the two conditions (on ``f``)."""
    relations = await _rows(tx, _RELATION_FACTS + relation_where + _RELATION_COLUMNS, **params)
    attributes = await _rows(tx, _ATTRIBUTE_FACTS + attribute_where + _ATTRIBUTE_COLUMNS, **params)
    return relations + attributes


async def _lock_novel(tx: AsyncManagedTransaction, novel_id: str, *, create: bool) -> int | None:
    """Lock the novel's bookkeeping node; returns its entity counter (``None``: no node).

    Writing a property takes the node's write lock until the transaction ends, so writes
    to one novel run one after another.
    """
    query: LiteralString = (
        "MERGE (n:Novel {novel_id: $novel}) ON CREATE SET n.entity_seq = 0"
        " SET n.entity_seq = n.entity_seq RETURN n.entity_seq AS seq"
        if create
        else "MATCH (n:Novel {novel_id: $novel})"
        " SET n.entity_seq = n.entity_seq RETURN n.entity_seq AS seq"
    )
    found = await _rows(tx, query, novel=novel_id)
    return int(found[0]["seq"]) if found else None


@asynccontextmanager
async def _storage_errors(action: str) -> AsyncIterator[None]:
    """Turn driver and server failures into :class:`StorageError`."""
    try:
        yield
    except (Neo4jError, DriverError) as exc:
        raise StorageError(f"world memory could not {action}: {exc}", action=action) from exc


# --- per-batch working state ----------------------------------------------------------


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
class _ChildState:
    """An alias (``text`` is the alias) or a fixed attribute (``text`` is its value)."""

    text: str
    recorded_chapter: int
    retracted: bool
    id: str | None = None


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
        return _slot(self.subject, self.predicate, self.value, self.object)

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


class _Batch:
    """One ``apply`` call inside one write transaction: load, decide, then write."""

    def __init__(self, tx: AsyncManagedTransaction, novel_id: str, chapter: int) -> None:
        self.tx = tx
        self.novel_id = novel_id
        self.chapter = chapter
        self.rejected: list[Rejection] = []
        self.entity_seq = 0
        self.entities: dict[str, _EntityState] = {}
        self.aliases: dict[tuple[str, str], _ChildState] = {}
        self.fixed: dict[tuple[str, str], _ChildState] = {}
        self.loaded_entities: dict[str, _EntityState] = {}
        self.loaded_aliases: dict[tuple[str, str], _ChildState] = {}
        self.loaded_fixed: dict[tuple[str, str], _ChildState] = {}

    def reject(self, change: str, reason: str) -> None:
        self.rejected.append(Rejection(change=change, reason=reason))

    async def run(self, changes: WorldChanges) -> ApplyResult:
        self.entity_seq = await _lock_novel(self.tx, self.novel_id, create=True) or 0
        await self._load_entities(_referenced_keys(changes))
        pending: list[FactSpec] = []
        for spec in changes.entities:
            pending.extend(self._merge_entity(spec))
        await self._flush_entities()
        pending.extend(changes.facts)
        await self._apply_facts(pending, changes.ended)
        await self._apply_setups(changes.setups, changes.paid_off)
        return ApplyResult(rejected=tuple(self.rejected))

    # --- entities -------------------------------------------------------------------

    async def _load_entities(self, keys: Collection[str]) -> None:
        if not keys:
            return
        rows = await _rows(
            self.tx,
            "UNWIND $keys AS key MATCH (e:Entity {novel_id: $novel, key: key})"
            " RETURN elementId(e) AS id, e.key AS key, e.kind AS kind, e.name AS name,"
            " e.description AS description, e.description_chapter AS description_chapter,"
            " e.introduced_chapter AS introduced_chapter, e.retracted AS retracted,"
            " e.seq AS seq, e.aliases AS aliases, e.alias_norms AS alias_norms,"
            " e.alias_chapters AS alias_chapters, e.alias_retracted AS alias_retracted,"
            " [(e)-[:HAS_FIXED_ATTRIBUTE]->(x:FixedAttribute) | {id: elementId(x),"
            "  name: x.name, value: x.value, recorded: x.recorded_chapter,"
            "  retracted: x.retracted}] AS fixed",
            novel=self.novel_id,
            keys=sorted(keys),
        )
        for row in rows:
            key = row["key"]
            self.entities[key] = _EntityState(
                key=key,
                kind=row["kind"],
                name=row["name"],
                description=row["description"],
                description_chapter=row["description_chapter"],
                introduced_chapter=row["introduced_chapter"],
                retracted=row["retracted"],
                seq=row["seq"],
                id=row["id"],
            )
            for text, norm, recorded, retracted in zip(
                row["aliases"],
                row["alias_norms"],
                row["alias_chapters"],
                row["alias_retracted"],
                strict=True,
            ):
                self.aliases[(key, norm)] = _ChildState(text, recorded, retracted)
            for f in row["fixed"]:
                self.fixed[(key, f["name"])] = _ChildState(
                    f["value"], f["recorded"], f["retracted"], f["id"]
                )
        self.loaded_entities = dict(self.entities)
        self.loaded_aliases = dict(self.aliases)
        self.loaded_fixed = dict(self.fixed)

    def _merge_entity(self, spec: EntitySpec) -> list[FactSpec]:
        """Upsert one entity in memory; returns its mutable attributes as facts."""
        key = spec.key.strip()
        name = _clean(spec.name)
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
        text = _clean(alias)
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

    def _aliases_of(self, key: str) -> list[tuple[str, _ChildState]]:
        # Dict order is stored order then merge order, so revived aliases keep their place.
        return [(norm, state) for (k, norm), state in self.aliases.items() if k == key]

    async def _flush_entities(self) -> None:
        new: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        touched_aliases = {k for k, s in self.aliases.items() if s != self.loaded_aliases.get(k)}
        alias_keys = {key for key, _ in touched_aliases}
        for key, state in self.entities.items():
            props = state.props(self._aliases_of(key))
            if state.id is None:
                self.entity_seq += 1
                new.append({"key": key, "seq": self.entity_seq, "props": props})
            elif state != self.loaded_entities.get(key) or key in alias_keys:
                changed.append({"id": state.id, "props": props})
        if new:
            await _execute(
                self.tx,
                "UNWIND $rows AS row"
                " CREATE (e:Entity {novel_id: $novel, key: row.key})"
                " SET e += row.props, e.seq = row.seq WITH e, row" + _SET_KIND_LABEL,
                novel=self.novel_id,
                rows=new,
            )
            await _execute(
                self.tx,
                "MATCH (n:Novel {novel_id: $novel}) SET n.entity_seq = $seq",
                novel=self.novel_id,
                seq=self.entity_seq,
            )
        if changed:
            await _execute(
                self.tx,
                "UNWIND $rows AS row MATCH (e:Entity) WHERE elementId(e) = row.id"
                " SET e += row.props WITH e, row" + _SET_KIND_LABEL,
                rows=changed,
            )
        await self._flush_fixed()

    async def _flush_fixed(self) -> None:
        new = [
            {"subject": key, "name": name, "value": s.text, "recorded": s.recorded_chapter}
            for (key, name), s in self.fixed.items()
            if s.id is None
        ]
        if new:
            await _execute(
                self.tx,
                "UNWIND $rows AS row"
                " MATCH (e:Entity {novel_id: $novel, key: row.subject})"
                " CREATE (e)-[:HAS_FIXED_ATTRIBUTE]->(x:FixedAttribute"
                "  {novel_id: $novel, subject: row.subject, name: row.name})"
                " SET x.value = row.value, x.recorded_chapter = row.recorded,"
                "  x.retracted = false",
                novel=self.novel_id,
                rows=new,
            )
        changed = [
            {
                "id": s.id,
                "value": s.text,
                "recorded": s.recorded_chapter,
                "retracted": s.retracted,
            }
            for k, s in self.fixed.items()
            if s.id is not None and s != self.loaded_fixed[k]
        ]
        if changed:
            await _execute(
                self.tx,
                "UNWIND $rows AS row MATCH (x:FixedAttribute) WHERE elementId(x) = row.id"
                " SET x.value = row.value, x.recorded_chapter = row.recorded,"
                "  x.retracted = row.retracted",
                rows=changed,
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
            label = _fact_label(subject, predicate, value, obj)
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

    async def _load_facts(
        self, subjects: Collection[str]
    ) -> dict[tuple[str, str], list[_FactState]]:
        """Visible facts of these subjects that are valid at or after the batch chapter."""
        found: dict[tuple[str, str], list[_FactState]] = defaultdict(list)
        if not subjects:
            return found
        still_open: LiteralString = (
            " AND NOT f.retracted AND (f.valid_to_chapter IS NULL OR f.valid_to_chapter > $chapter)"
        )
        rows = await _select_facts(
            self.tx,
            "s.key IN $subjects" + still_open,
            "f.subject IN $subjects" + still_open,
            novel=self.novel_id,
            chapter=self.chapter,
            subjects=sorted(subjects),
        )
        for r in rows:
            found[(r["subject"], r["predicate"])].append(
                _FactState(
                    r["subject"],
                    r["predicate"],
                    r["value"],
                    r["object"],
                    r["valid_from"],
                    r["valid_to"],
                    r["closed_by"],
                    r["id"],
                )
            )
        return found

    async def _apply_facts(self, pending: Sequence[FactSpec], ended: Sequence[FactEnd]) -> None:
        asserted = self._validate_facts(pending)
        ends = self._validate_ends(ended)
        subjects = {f.subject for f in asserted} | {e.subject for e in ends}
        stored = await self._load_facts(subjects)
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

        await self._flush_facts(closing, new)

    async def _flush_facts(self, closing: dict[str, bool], new: Sequence[_FactState]) -> None:
        c = self.chapter
        relation_ids = [fact_id for fact_id, is_relation in closing.items() if is_relation]
        attribute_ids = [fact_id for fact_id, is_relation in closing.items() if not is_relation]
        if relation_ids:
            await _execute(
                self.tx,
                "UNWIND $ids AS id MATCH ()-[f]->() WHERE elementId(f) = id"
                " SET f.valid_to_chapter = $chapter, f.closed_by_chapter = $chapter",
                ids=relation_ids,
                chapter=c,
            )
        if attribute_ids:
            await _execute(
                self.tx,
                "UNWIND $ids AS id MATCH (f:Attribute) WHERE elementId(f) = id"
                " SET f.valid_to_chapter = $chapter, f.closed_by_chapter = $chapter",
                ids=attribute_ids,
                chapter=c,
            )
        now = datetime.now(UTC)
        relations: dict[str, list[dict[str, Any]]] = defaultdict(list)
        attributes: list[dict[str, Any]] = []
        for f in new:
            props = {
                "novel_id": self.novel_id,
                "valid_from_chapter": f.valid_from,
                "valid_to_chapter": f.valid_to,
                "source_chapter": c,
                "closed_by_chapter": f.closed_by,
                "retracted": False,
                "created_at": now,
            }
            if f.object is not None:
                props["predicate"] = f.predicate
                relations[relationship_type(f.predicate)].append(
                    {"subject": f.subject, "object": f.object, "props": props}
                )
            else:
                props.update(subject=f.subject, name=f.predicate, value=f.value)
                attributes.append({"subject": f.subject, "props": props})
        for rel_type, rows in sorted(relations.items()):
            await _execute(
                self.tx, _create_relation_query(rel_type), novel=self.novel_id, rows=rows
            )
        if attributes:
            await _execute(
                self.tx,
                "UNWIND $rows AS row MATCH (s:Entity {novel_id: $novel, key: row.subject})"
                " CREATE (s)-[:HAS_ATTRIBUTE]->(f:Attribute) SET f += row.props",
                novel=self.novel_id,
                rows=attributes,
            )

    # --- set-ups --------------------------------------------------------------------

    async def _apply_setups(self, specs: Sequence[SetupSpec], paid_off: Sequence[str]) -> None:
        keys = {s.key.strip() for s in specs} | {k.strip() for k in paid_off}
        keys.discard("")
        versions: dict[tuple[str, int], _SetupState] = {}
        if keys:
            await self._load_setups(keys, versions)
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

        await self._flush_setups(versions, loaded)

    async def _load_setups(
        self, keys: Collection[str], versions: dict[tuple[str, int], _SetupState]
    ) -> None:
        rows = await _rows(
            self.tx,
            "MATCH (v:Setup {novel_id: $novel}) WHERE v.key IN $keys"
            " RETURN elementId(v) AS id, v.key AS key, v.description AS description,"
            " v.planted_chapter AS planted_chapter, v.due_chapter AS due_chapter,"
            " v.entities AS entities, v.paid_off_chapter AS paid_off_chapter,"
            " v.recorded_chapter AS recorded_chapter, v.retracted AS retracted",
            novel=self.novel_id,
            keys=sorted(keys),
        )
        for r in rows:
            versions[(r["key"], r["recorded_chapter"])] = _SetupState(
                key=r["key"],
                description=r["description"],
                planted_chapter=r["planted_chapter"],
                due_chapter=r["due_chapter"],
                entities=tuple(r["entities"]),
                paid_off_chapter=r["paid_off_chapter"],
                recorded_chapter=r["recorded_chapter"],
                retracted=r["retracted"],
                id=r["id"],
            )

    async def _flush_setups(
        self,
        versions: dict[tuple[str, int], _SetupState],
        loaded: dict[tuple[str, int], _SetupState],
    ) -> None:
        new: list[dict[str, Any]] = [
            {"key": v.key, "recorded": v.recorded_chapter, "props": v.props()}
            for v in versions.values()
            if v.id is None
        ]
        if new:
            await _execute(
                self.tx,
                "UNWIND $rows AS row"
                " CREATE (v:Setup {novel_id: $novel, key: row.key,"
                "  recorded_chapter: row.recorded})"
                " SET v += row.props",
                novel=self.novel_id,
                rows=new,
            )
        changed: list[dict[str, Any]] = [
            {"key": v.key, "recorded": v.recorded_chapter, "id": v.id, "props": v.props()}
            for k, v in versions.items()
            if v.id is not None and v != loaded[k]
        ]
        if changed:
            await _execute(
                self.tx,
                "UNWIND $rows AS row MATCH (v:Setup) WHERE elementId(v) = row.id"
                " SET v += row.props",
                rows=changed,
            )
        relinked = [
            {"key": row["key"], "recorded": row["recorded"], "entities": row["props"]["entities"]}
            for row in (*new, *changed)
        ]
        if relinked:
            # Links are for people browsing the graph; ``entities`` stays the record.
            await _execute(
                self.tx,
                "UNWIND $rows AS row"
                " MATCH (v:Setup {novel_id: $novel, key: row.key,"
                "  recorded_chapter: row.recorded})"
                " OPTIONAL MATCH (v)-[old:CONCERNS]->() DELETE old"
                " WITH DISTINCT v, row UNWIND row.entities AS entity_key"
                " MATCH (e:Entity {novel_id: $novel, key: entity_key})"
                " MERGE (v)-[:CONCERNS]->(e)",
                novel=self.novel_id,
                rows=relinked,
            )


# --- reads ----------------------------------------------------------------------------


async def _read_entities(
    tx: AsyncManagedTransaction,
    novel_id: str,
    chapter: int | None,
    keys: Iterable[str] | None = None,
) -> dict[str, Entity]:
    """Visible entities (introduced by ``chapter`` unless it is ``None``), keyed by key.

    Aliases, fixed attributes and a later-filled description recorded after ``chapter``
    are left out, so a snapshot shows what was known at that chapter.
    """
    visible: LiteralString = (
        " WHERE NOT e.retracted AND ($chapter IS NULL OR e.introduced_chapter <= $chapter)"
    )
    if keys is None:
        rows = await _rows(
            tx,
            "MATCH (e:Entity {novel_id: $novel})" + visible + _ENTITY_COLUMNS,
            novel=novel_id,
            chapter=chapter,
        )
    else:
        key_list = sorted(set(keys))
        if not key_list:
            return {}
        rows = await _rows(
            tx,
            "UNWIND $keys AS key MATCH (e:Entity {novel_id: $novel, key: key})"
            + visible
            + _ENTITY_COLUMNS,
            novel=novel_id,
            chapter=chapter,
            keys=key_list,
        )
    found: dict[str, Entity] = {}
    for r in rows:
        shown = r["description_chapter"] is not None and (
            chapter is None or r["description_chapter"] <= chapter
        )
        aliases = tuple(
            text
            for text, norm, recorded, retracted in zip(
                r["aliases"],
                r["alias_norms"],
                r["alias_chapters"],
                r["alias_retracted"],
                strict=True,
            )
            if not retracted and (chapter is None or recorded <= chapter) and norm != r["name_norm"]
        )
        found[r["key"]] = Entity(
            key=r["key"],
            kind=cast(EntityKind, r["kind"]),
            name=r["name"],
            aliases=aliases,
            description=r["description"] if shown else "",
            fixed=dict(sorted((name, value) for name, value in r["fixed"])),
            introduced_chapter=r["introduced_chapter"],
        )
    return found


def _fact_from_row(row: Record) -> Fact:
    return Fact(
        subject=row["subject"],
        predicate=row["predicate"],
        value=row["value"],
        object=row["object"],
        valid_from_chapter=row["valid_from"],
        valid_to_chapter=row["valid_to"],
        source_chapter=row["source"],
    )


async def _read_setups(tx: AsyncManagedTransaction, novel_id: str, chapter: int) -> list[Setup]:
    """The latest visible version of every set-up recorded by ``chapter``, by key."""
    rows = await _rows(
        tx,
        "MATCH (v:Setup {novel_id: $novel})"
        " WHERE NOT v.retracted AND v.recorded_chapter <= $chapter"
        " RETURN v.key AS key, v.description AS description,"
        " v.planted_chapter AS planted_chapter, v.due_chapter AS due_chapter,"
        " v.paid_off_chapter AS paid_off_chapter, v.recorded_chapter AS recorded_chapter,"
        " v.entities AS entities",
        novel=novel_id,
        chapter=chapter,
    )
    latest: dict[str, Setup] = {}
    for r in sorted(rows, key=lambda r: (r["key"], r["recorded_chapter"])):
        paid = r["paid_off_chapter"]
        latest[r["key"]] = Setup(
            key=r["key"],
            description=r["description"],
            planted_chapter=r["planted_chapter"],
            due_chapter=r["due_chapter"],
            paid_off_chapter=paid if paid is not None and paid <= chapter else None,
            entities=tuple(r["entities"]),
        )
    return [latest[key] for key in sorted(latest)]


async def _world_as_of(tx: AsyncManagedTransaction, novel_id: str, chapter: int) -> WorldSnapshot:
    entities = await _read_entities(tx, novel_id, chapter)
    facts = [
        _fact_from_row(r)
        for r in await _select_facts(tx, _VALID_AT, _VALID_AT, novel=novel_id, chapter=chapter)
    ]
    setups = await _read_setups(tx, novel_id, chapter)
    return _snapshot(chapter, entities, facts, setups)


async def _neighbourhood(
    tx: AsyncManagedTransaction, novel_id: str, key: str, chapter: int
) -> WorldSnapshot:
    relations = [
        _fact_from_row(r)
        for r in await _rows(
            tx,
            "MATCH (:Entity {novel_id: $novel, key: $key})-[f]-(:Entity) WHERE "
            + _VALID_AT
            + " WITH DISTINCT f"
            " RETURN elementId(f) AS id, startNode(f).key AS subject,"
            " f.predicate AS predicate, null AS value, endNode(f).key AS object,"
            " f.valid_from_chapter AS valid_from, f.valid_to_chapter AS valid_to,"
            " f.source_chapter AS source, f.closed_by_chapter AS closed_by",
            novel=novel_id,
            key=key,
            chapter=chapter,
        )
    ]
    keys = {key} | {f.subject for f in relations} | {f.object or key for f in relations}
    entities = await _read_entities(tx, novel_id, chapter, keys)
    if key not in entities:
        return WorldSnapshot(chapter=chapter, entities=(), facts=(), setups=())
    attributes = [
        _fact_from_row(r)
        for r in await _rows(
            tx,
            "UNWIND $subjects AS subject"
            " MATCH (f:Attribute {novel_id: $novel, subject: subject}) WHERE "
            + _VALID_AT
            + _ATTRIBUTE_COLUMNS,
            novel=novel_id,
            chapter=chapter,
            subjects=sorted(entities),
        )
    ]
    setups = [s for s in await _read_setups(tx, novel_id, chapter) if key in s.entities]
    return _snapshot(chapter, entities, [*relations, *attributes], setups)


async def _lookup(tx: AsyncManagedTransaction, novel_id: str, name: str) -> Entity | None:
    wanted = name.strip()
    norm = normalise(name)
    candidates = await _rows(
        tx,
        "MATCH (e:Entity {novel_id: $novel})"
        " WHERE NOT e.retracted"
        " AND (e.key = $wanted OR e.key_norm = $norm OR e.name_norm = $norm)"
        " RETURN e.key AS key, e.key_norm AS key_norm, e.seq AS seq",
        novel=novel_id,
        wanted=wanted,
        norm=norm,
    )
    ranked = sorted(
        candidates,
        key=lambda r: (0 if r["key"] == wanted else 1 if r["key_norm"] == norm else 2, r["seq"]),
    )
    key: str | None = ranked[0]["key"] if ranked else None
    if key is None:
        by_alias = await _rows(
            tx,
            "MATCH (e:Entity {novel_id: $novel})"
            " WHERE NOT e.retracted AND any(i IN range(0, size(e.alias_norms) - 1)"
            "  WHERE e.alias_norms[i] = $norm AND NOT e.alias_retracted[i])"
            " RETURN e.key AS key ORDER BY e.seq LIMIT 1",
            novel=novel_id,
            norm=norm,
        )
        key = by_alias[0]["key"] if by_alias else None
    if key is None:
        return None
    found = await _read_entities(tx, novel_id, None, [key])
    return found.get(key)


async def _reopen_facts_closed_by(tx: AsyncManagedTransaction, novel_id: str, c: int) -> None:
    """Give every fact closed by chapter ``c`` the end it would have had without it.

    A fact replaced at ``c`` handed the rest of its interval to its successor, so it takes
    that end back from the successor (the one recorded at ``c`` in the same slot that ``c``
    itself did not close); a fact merely ended there reopens.
    """
    closed_by_c: LiteralString = (
        "f.closed_by_chapter = $chapter AND f.source_chapter <> $chapter AND NOT f.retracted"
    )
    closed = await _select_facts(tx, closed_by_c, closed_by_c, novel=novel_id, chapter=c)
    if not closed:
        return
    recorded_at_c: LiteralString = (
        "f.source_chapter = $chapter AND NOT f.retracted"
        " AND (f.closed_by_chapter IS NULL OR f.closed_by_chapter <> $chapter)"
    )
    successors: dict[Slot, tuple[int | None, int | None]] = {}
    for r in await _select_facts(tx, recorded_at_c, recorded_at_c, novel=novel_id, chapter=c):
        slot = _slot(r["subject"], r["predicate"], r["value"], r["object"])
        successors[slot] = (r["valid_to"], r["closed_by"])
    relations: list[dict[str, Any]] = []
    attributes: list[dict[str, Any]] = []
    for fact in closed:
        slot = _slot(fact["subject"], fact["predicate"], fact["value"], fact["object"])
        valid_to, closed_by = successors.get(slot, (None, None))
        row = {"id": fact["id"], "to": valid_to, "by": closed_by}
        (relations if fact["object"] is not None else attributes).append(row)
    if relations:
        await _execute(
            tx,
            "UNWIND $rows AS row MATCH ()-[f]->() WHERE elementId(f) = row.id"
            " SET f.valid_to_chapter = row.to, f.closed_by_chapter = row.by",
            rows=relations,
        )
    if attributes:
        await _execute(
            tx,
            "UNWIND $rows AS row MATCH (f:Attribute) WHERE elementId(f) = row.id"
            " SET f.valid_to_chapter = row.to, f.closed_by_chapter = row.by",
            rows=attributes,
        )


async def _retract(tx: AsyncManagedTransaction, novel_id: str, c: int) -> None:
    if await _lock_novel(tx, novel_id, create=False) is None:
        return  # nothing was ever recorded for this novel
    await _reopen_facts_closed_by(tx, novel_id, c)
    params = {"novel": novel_id, "chapter": c}
    await _execute(
        tx,
        "MATCH (:Entity {novel_id: $novel})-[f]->(:Entity)"
        " WHERE f.source_chapter = $chapter AND NOT f.retracted SET f.retracted = true",
        **params,
    )
    await _execute(
        tx,
        "MATCH (f:Attribute {novel_id: $novel})"
        " WHERE f.source_chapter = $chapter AND NOT f.retracted SET f.retracted = true",
        **params,
    )
    await _execute(
        tx,
        "MATCH (e:Entity {novel_id: $novel})"
        " WHERE e.introduced_chapter = $chapter AND NOT e.retracted SET e.retracted = true",
        **params,
    )
    # Descriptions only ever fill an empty one, so undoing means emptying it again.
    await _execute(
        tx,
        "MATCH (e:Entity {novel_id: $novel})"
        " WHERE e.description_chapter = $chapter AND e.introduced_chapter <> $chapter"
        " SET e.description = '', e.description_chapter = null",
        **params,
    )
    await _execute(
        tx,
        "MATCH (e:Entity {novel_id: $novel}) WHERE $chapter IN e.alias_chapters"
        " SET e.alias_retracted = [i IN range(0, size(e.alias_chapters) - 1)"
        "  | e.alias_retracted[i] OR e.alias_chapters[i] = $chapter]",
        **params,
    )
    await _execute(
        tx,
        "MATCH (x:FixedAttribute {novel_id: $novel})"
        " WHERE x.recorded_chapter = $chapter AND NOT x.retracted SET x.retracted = true",
        **params,
    )
    await _execute(
        tx,
        "MATCH (v:Setup {novel_id: $novel})"
        " WHERE v.recorded_chapter = $chapter AND NOT v.retracted SET v.retracted = true",
        **params,
    )
    await _execute(
        tx,
        "MATCH (v:Setup {novel_id: $novel}) WHERE v.paid_off_chapter = $chapter"
        " SET v.paid_off_chapter = null",
        **params,
    )


async def _drop(tx: AsyncManagedTransaction, novel_id: str) -> None:
    await _lock_novel(tx, novel_id, create=False)
    # Entities first: DETACH takes their facts, attributes' links and set-up links along.
    queries: tuple[LiteralString, ...] = (
        "MATCH (e:Entity {novel_id: $novel}) DETACH DELETE e",
        "MATCH (a:Attribute {novel_id: $novel}) DETACH DELETE a",
        "MATCH (x:FixedAttribute {novel_id: $novel}) DETACH DELETE x",
        "MATCH (v:Setup {novel_id: $novel}) DETACH DELETE v",
        "MATCH (n:Novel {novel_id: $novel}) DETACH DELETE n",
    )
    for query in queries:
        await _execute(tx, query, novel=novel_id)


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
        """A memory with its own driver for ``url`` (no auth when ``password`` is None)."""
        auth = (user, password) if password is not None else None
        try:
            driver = AsyncGraphDatabase.driver(url, auth=auth)
        except (DriverError, ValueError) as exc:
            raise StorageError(f"invalid Neo4j URL {url!r}: {exc}", url=url) from exc
        return cls(driver, database=database, owns_driver=True)

    async def setup(self) -> None:
        """Create the constraints and indexes (idempotent) and wait until they are online."""
        async with _storage_errors("create its schema"):
            for statement in _SCHEMA:
                await self._driver.execute_query(statement, database_=self._database)
            await self._driver.execute_query("CALL db.awaitIndexes(120)", database_=self._database)

    async def apply(self, novel_id: str, chapter: int, changes: WorldChanges) -> ApplyResult:
        """Apply a batch atomically at ``chapter`` (see :meth:`WorldMemory.apply`)."""
        _check_novel(novel_id)
        if chapter < 0:
            raise InvalidInput("chapter must be 0 or more", chapter=chapter)

        async def work(tx: AsyncManagedTransaction) -> ApplyResult:
            return await _Batch(tx, novel_id, chapter).run(changes)

        async with self._driver.session(database=self._database) as session:
            try:
                return await session.execute_write(work)
            except ConstraintError:
                # A concurrent first apply created the novel's node or an entity first; a
                # second pass sees them and merges into them.
                pass
            except (Neo4jError, DriverError) as exc:
                raise StorageError(f"world memory could not apply changes: {exc}") from exc
            async with _storage_errors("apply changes"):
                return await session.execute_write(work)

    async def world_as_of(self, novel_id: str, chapter: int) -> WorldSnapshot:
        """Entities, valid facts and set-ups as they stand at ``chapter``."""
        _check_novel(novel_id)
        async with (
            _storage_errors("read the world"),
            self._driver.session(database=self._database) as session,
        ):
            return await session.execute_read(_world_as_of, novel_id, chapter)

    async def lookup(self, novel_id: str, name: str) -> Entity | None:
        """Find an entity by key, name or alias: exact key first, then the normalised
        key, name and alias; ties go to the entity recorded first."""
        _check_novel(novel_id)
        if not normalise(name):
            return None
        async with (
            _storage_errors("look up an entity"),
            self._driver.session(database=self._database) as session,
        ):
            return await session.execute_read(_lookup, novel_id, name)

    async def neighbourhood(self, novel_id: str, key: str, chapter: int) -> WorldSnapshot:
        """The entity, its relationships valid at ``chapter``, their other ends, the
        attributes of all of those, and set-ups naming the entity."""
        _check_novel(novel_id)
        async with (
            _storage_errors("read a neighbourhood"),
            self._driver.session(database=self._database) as session,
        ):
            return await session.execute_read(_neighbourhood, novel_id, key.strip(), chapter)

    async def retract_chapter(self, novel_id: str, chapter: int) -> None:
        """Hide what ``chapter`` recorded, reopen what it closed, clear its pay-offs."""
        _check_novel(novel_id)
        async with (
            _storage_errors("retract a chapter"),
            self._driver.session(database=self._database) as session,
        ):
            await session.execute_write(_retract, novel_id, chapter)

    async def drop_novel(self, novel_id: str) -> None:
        """Delete every node and relationship of the novel's world."""
        _check_novel(novel_id)
        async with (
            _storage_errors("drop a novel"),
            self._driver.session(database=self._database) as session,
        ):
            await session.execute_write(_drop, novel_id)

    async def close(self) -> None:
        """Close the driver if this memory opened it."""
        if self._owns_driver:
            await self._driver.close()
