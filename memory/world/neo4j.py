"""Neo4j backend of world memory, with the SQL backend's semantics exactly.

The graph is laid out so that an author opening Neo4j Browser recognises the world:

* ``(:Entity:Character {novel_id, key, name, kind, description, aliases, ...})``: every
  entity has the ``Entity`` label plus one readable kind label (``Character``,
  ``Location``, ``Faction``, ``Item``, ``Rule``, ``Event``, ``Secret``). ``aliases``
  lists every alias ever recorded, in recording order; the parallel lists ``alias_norms``,
  ``alias_chapters`` and ``alias_retracted`` hold each one's lookup form, the chapter that
  recorded it and whether that chapter was retracted. ``seq`` orders entities by creation
  (lookup ties go to the older one).
* ``(:Entity)-[:LOCATED_IN {predicate, valid_from_chapter, valid_to_chapter,
  source_chapter, closed_by_chapter, retracted, ...}]->(:Entity)``: a relationship fact is
  a real relationship whose type is the upper-cased predicate (see
  :func:`relationship_type`); ``predicate`` keeps the exact text, which is what matches.
* ``(:Entity)-[:HAS_ATTRIBUTE]->(:Attribute {name, value, valid_from_chapter, ...})``: a
  mutable attribute fact; ``(:Entity)-[:HAS_FIXED_ATTRIBUTE]->(:FixedAttribute {name,
  value, recorded_chapter, retracted})``: a fixed attribute. A rename is an ``Attribute``
  named ``@name`` (see :data:`memory.world.rules.RENAME_PREDICATE`); ``name`` on the entity
  node stays the name it was created with.
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
touches (one query) into the records of :mod:`memory.world.rules`, lets
:func:`memory.world.planner.plan_batch` decide (the same code decides for SQL, so the
backends cannot drift apart) and executes the plan with ``UNWIND`` batches (one
statement, plus one per new relationship type); ``retract_chapter`` reopens facts with
:func:`memory.world.planner.plan_reopen`. ``world_as_of`` is a single query. Results
come back as one row of collected lists: the Python driver's cost is per record, so a
thousand facts in one row read several times faster than a thousand rows.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from itertools import chain
from typing import Any, LiteralString

from neo4j import AsyncDriver, AsyncGraphDatabase, AsyncManagedTransaction, AsyncSession
from neo4j.exceptions import (
    ConstraintError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)

from errors import InvalidInput, StorageError, StoreUnavailable
from memory.world.planner import (
    BatchKeys,
    BatchState,
    WritePlan,
    batch_keys,
    plan_batch,
    plan_reopen,
)
from memory.world.port import (
    ApplyResult,
    Entity,
    Fact,
    WorldChanges,
    WorldMemory,
    WorldSnapshot,
)
from memory.world.rules import (
    RENAME_PREDICATE,
    AliasRecord,
    EntityRecord,
    FixedRecord,
    build_snapshot,
    check_novel,
    entity_as_of,
    entity_fields,
    fact_record,
    lookup_rank,
    neighbour_keys,
    normalise,
    setup_fields,
    setup_record,
    setups_as_of,
    with_names,
)

log = logging.getLogger("scribe.storage")

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
# own index; both yield the lists :func:`_fact` and :func:`fact_record` read. ``f`` is
# the fact.

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
    "[e.key, e.kind, e.name, e.description, e.description_chapter,"
    " e.introduced_chapter, e.aliases, e.alias_norms, e.alias_chapters, e.alias_retracted,"
    " [(e)-[:HAS_FIXED_ATTRIBUTE]->(x:FixedAttribute)"
    "  WHERE NOT x.retracted AND ($chapter IS NULL OR x.recorded_chapter <= $chapter)"
    "  | [x.name, x.value, x.recorded_chapter]]]"
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
    " RETURN collect([e.key, e.kind, e.name, e.description, e.description_chapter,"
    "  e.introduced_chapter, e.retracted, elementId(e), e.aliases,"
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
    " REMOVE e:Character:Location:Faction:Item:Rule:Event:Secret"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'character' THEN [1] ELSE [] END"
    "  | SET e:Character)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'location' THEN [1] ELSE [] END"
    "  | SET e:Location)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'faction' THEN [1] ELSE [] END"
    "  | SET e:Faction)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'item' THEN [1] ELSE [] END | SET e:Item)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'rule' THEN [1] ELSE [] END | SET e:Rule)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'event' THEN [1] ELSE [] END | SET e:Event)"
    " FOREACH (_ IN CASE WHEN row.props.kind = 'secret' THEN [1] ELSE [] END | SET e:Secret)"
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
    """Turn driver and server failures into :class:`StorageError`: the action and the
    failure's class only, as :func:`memory.db.sql_errors` does; the log has the rest."""
    try:
        yield
    except (Neo4jError, DriverError) as exc:
        log.warning("world memory: cannot %s: %s", action, exc)
        down = isinstance(exc, ServiceUnavailable | SessionExpired)
        raise (StoreUnavailable if down else StorageError)(
            f"world memory could not {action}: Neo4j is unavailable or refused it "
            f"({type(exc).__name__})",
            action=action,
        ) from None


def _fact(item: Sequence[Any]) -> Fact:
    """A fact from a fragment's list (laid out as :func:`fact_record` reads it)."""
    _, subject, predicate, value, obj, valid_from, valid_to, source, _ = item
    return Fact(subject, predicate, value, obj, valid_from, valid_to, source)


def _aliases(
    key: str,
    texts: Sequence[str],
    norms: Sequence[str],
    chapters: Sequence[int],
    gone: Sequence[bool],
) -> list[AliasRecord]:
    """An entity's aliases from its parallel alias lists."""
    return [
        AliasRecord(key, text, norm, recorded, retracted)
        for text, norm, recorded, retracted in zip(texts, norms, chapters, gone, strict=True)
    ]


# --- apply: load what a batch touches, plan in memory, execute the plan ----------------


async def _load_batch(
    tx: AsyncManagedTransaction, novel_id: str, chapter: int, keys: BatchKeys
) -> tuple[int, BatchState]:
    """Lock the novel and load what the batch touches (see :class:`BatchState`), with the
    novel's entity counter."""
    row = await _single(
        tx,
        _LOAD_BATCH,
        novel=novel_id,
        chapter=chapter,
        keys=sorted(keys.entities),
        setup_keys=sorted(keys.setups),
    )
    entities: list[EntityRecord] = []
    aliases: list[AliasRecord] = []
    fixed: list[FixedRecord] = []
    for item in row["entities"]:
        # [the fields of EntityRecord in order, 4 alias lists, fixed]
        entity = EntityRecord(*item[:8])
        key = entity.key
        entities.append(entity)
        aliases.extend(_aliases(key, *item[8:12]))
        fixed_items = item[12]
        fixed.extend(
            FixedRecord(key, attribute, value, recorded, gone, fixed_id)
            for fixed_id, attribute, value, recorded, gone in fixed_items
        )
    state = BatchState(
        entities=tuple(entities),
        aliases=tuple(aliases),
        fixed=tuple(fixed),
        facts=tuple(fact_record(i) for i in chain(row["relations"], row["attributes"])),
        setups=tuple(setup_record(i) for i in row["setups"]),
    )
    return int(row["entity_seq"]), state


async def _execute_plan(
    tx: AsyncManagedTransaction, novel_id: str, plan: WritePlan, entity_seq: int
) -> None:
    """Write a :class:`WritePlan`: one statement, plus one per new relationship type.

    New entities are numbered on from ``entity_seq``. Aliases live on their entity's node,
    so an entity whose aliases changed is rewritten whole.
    """
    lists: dict[str, list[Any]] = {name: [] for name in _WRITE_LISTS}
    aliases: dict[str, list[AliasRecord]] = defaultdict(list)
    for alias in plan.aliases:
        aliases[alias.entity].append(alias)
    new = {e.key for e in plan.new_entities}
    changed = {e.key for e in plan.changed_entities}
    changed.update(a.entity for a in (*plan.new_aliases, *plan.changed_aliases))
    for e in plan.entities:
        if e.key in new:
            entity_seq += 1
            lists["new_entities"].append(
                {"key": e.key, "seq": entity_seq, "props": _entity_props(e, aliases[e.key])}
            )
        elif e.key in changed:
            lists["changed_entities"].append(
                {"id": e.id, "props": _entity_props(e, aliases[e.key])}
            )
    for f in plan.new_fixed:
        lists["new_fixed"].append(
            {"subject": f.entity, "name": f.name, "value": f.value, "recorded": f.recorded_chapter}
        )
    for f in plan.changed_fixed:
        lists["changed_fixed"].append(
            {"id": f.id, "value": f.value, "recorded": f.recorded_chapter, "retracted": f.retracted}
        )
    for fact in plan.closed_facts:
        lists["closed_relations" if fact.is_relationship else "closed_attributes"].append(fact.id)
    relations: dict[str, list[dict[str, Any]]] = defaultdict(list)
    now = datetime.now(UTC)
    for fact in plan.new_facts:
        props: dict[str, Any] = {
            "novel_id": novel_id,
            "valid_from_chapter": fact.valid_from,
            "valid_to_chapter": fact.valid_to,
            "source_chapter": fact.source_chapter,
            "closed_by_chapter": fact.closed_by,
            "retracted": False,
            "created_at": now,
        }
        if fact.object is not None:
            props["predicate"] = fact.predicate
            relations[relationship_type(fact.predicate)].append(
                {"subject": fact.subject, "object": fact.object, "props": props}
            )
        else:
            props.update(subject=fact.subject, name=fact.predicate, value=fact.value)
            lists["new_attributes"].append({"props": props})
    for v in (*plan.new_setups, *plan.changed_setups):
        row = {"key": v.key, "recorded": v.recorded_chapter, "props": setup_fields(v)}
        if v.id is None:
            lists["new_setups"].append(row)
        else:
            lists["changed_setups"].append({**row, "id": v.id})
        lists["linked_setups"].append(
            {"key": v.key, "recorded": v.recorded_chapter, "entities": list(v.entities)}
        )
    if any(lists.values()):
        await _execute(
            tx,
            _WRITE_BATCH,
            novel=novel_id,
            chapter=plan.chapter,
            entity_seq=entity_seq,
            **lists,
        )
    for rel_type, rows in sorted(relations.items()):
        await _execute(tx, _create_relations_query(rel_type), novel=novel_id, rows=rows)


def _entity_props(e: EntityRecord, aliases: Sequence[AliasRecord]) -> dict[str, Any]:
    """Node properties of an entity, with its aliases as parallel lists."""
    return {
        **entity_fields(e),
        "aliases": [a.text for a in aliases],
        "alias_norms": [a.norm for a in aliases],
        "alias_chapters": [a.recorded_chapter for a in aliases],
        "alias_retracted": [a.retracted for a in aliases],
    }


async def _apply(
    tx: AsyncManagedTransaction, novel_id: str, chapter: int, changes: WorldChanges
) -> ApplyResult:
    entity_seq, state = await _load_batch(tx, novel_id, chapter, batch_keys(changes))
    plan = plan_batch(state, changes, chapter)
    await _execute_plan(tx, novel_id, plan, entity_seq)
    return ApplyResult(rejected=plan.rejected)


# --- reads ----------------------------------------------------------------------------


def _entities_from(items: Iterable[Sequence[Any]], chapter: int | None) -> dict[str, Entity]:
    """Entities from ``_ENTITY_ITEM`` lists, as known at ``chapter`` (``None``: now; see
    :func:`entity_as_of`)."""
    found: dict[str, Entity] = {}
    for item in items:
        # [the fields of EntityRecord up to introduced_chapter, 4 alias lists, fixed]
        entity = EntityRecord(*item[:6])
        found[entity.key] = entity_as_of(
            entity,
            _aliases(entity.key, *item[6:10]),
            [FixedRecord(entity.key, *fixed) for fixed in item[10]],
            chapter,
        )
    return found


async def _world_as_of(tx: AsyncManagedTransaction, novel_id: str, chapter: int) -> WorldSnapshot:
    row = await _single(tx, _WORLD_AS_OF, novel=novel_id, chapter=chapter)
    return build_snapshot(
        chapter,
        _entities_from(row["entities"], chapter),
        [_fact(i) for i in chain(row["relations"], row["attributes"])],
        setups_as_of((setup_record(i) for i in row["setups"]), chapter),
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
    relations = [_fact(i) for i in touching["relations"]]
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
        keys=sorted(neighbour_keys(key, relations)),
        chapter=chapter,
    )
    entities = _entities_from(row["entities"], chapter)
    if key not in entities:
        return WorldSnapshot(chapter=chapter, entities=(), facts=(), setups=())
    # Attributes of a hidden end are dropped by build_snapshot, as the SQL backend never reads them.
    attributes = [_fact(i) for i in row["attributes"]]
    setups = setups_as_of((setup_record(i) for i in row["setups"]), chapter)
    return build_snapshot(
        chapter, entities, [*relations, *attributes], [s for s in setups if key in s.entities]
    )


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
        key=lambda n: (lookup_rank(wanted, norm, n[0], n[1]), n[2]),
    )
    aliased = sorted(row["aliased"], key=lambda a: a[1])
    key: str | None = named[0][0] if named else aliased[0][0] if aliased else None
    if key is None:
        return None
    found = await _single(
        tx,
        _ENTITIES_BY_KEY + " CALL { MATCH (f:Attribute {novel_id: $novel, subject: $key})"
        " WHERE f.name = $rename AND NOT f.retracted"
        " RETURN collect(" + _ATTRIBUTE_ITEM + ") AS names }"
        " RETURN entities, names",
        novel=novel_id,
        keys=[key],
        key=key,
        rename=RENAME_PREDICATE,
        chapter=None,
    )
    entities = _entities_from(found["entities"], None)
    return with_names(entities, [_fact(i) for i in found["names"]], None).get(key)


async def _reopen_facts_closed_by(tx: AsyncManagedTransaction, novel_id: str, c: int) -> None:
    """Give every fact closed by chapter ``c`` the end it would have had without it (see
    :func:`plan_reopen`)."""
    touched_by_c: LiteralString = (
        "NOT f.retracted AND (f.closed_by_chapter = $chapter OR f.source_chapter = $chapter)"
    )
    row = await _single(
        tx,
        _facts_fragment(touched_by_c, touched_by_c) + " RETURN relations, attributes",
        novel=novel_id,
        chapter=c,
    )
    reopened = plan_reopen(c, [fact_record(i) for i in chain(row["relations"], row["attributes"])])
    if not reopened:
        return
    relations: list[dict[str, Any]] = []
    attributes: list[dict[str, Any]] = []
    for fact in reopened:
        update = {"id": fact.id, "to": fact.valid_to, "by": fact.closed_by}
        (relations if fact.is_relationship else attributes).append(update)
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

        async with self._session() as session:
            async with _storage_errors("apply changes"):
                try:
                    return await session.execute_write(_apply, novel_id, chapter, changes)
                except ConstraintError:
                    # A concurrent first apply created the novel's node first; a second
                    # pass waits for its lock and then sees what it wrote.
                    pass
            async with _storage_errors("apply changes"):
                return await session.execute_write(_apply, novel_id, chapter, changes)

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
