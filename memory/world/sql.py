"""SQL backend of world memory: SQLite (aiosqlite) and PostgreSQL (asyncpg) alike.

Only portable SQL is emitted (no JSON operators, no dialect functions); case-insensitive
matching uses lookup columns normalised in Python. Reads take a handful of statements
whatever the size of the world. ``apply`` loads what a batch touches into the records of
:mod:`memory.world.rules`, lets :func:`memory.world.planner.plan_batch` decide (the rules
every backend shares are documented there) and executes the plan with bulk statements,
all in one transaction; ``retract_chapter`` does likewise with
:func:`memory.world.planner.plan_reopen`.

Beyond the planner's rules: snapshots leave out aliases, fixed attributes and descriptions
recorded after their chapter, and facts naming an entity that is not visible;
``neighbourhood`` of an unknown entity is an empty snapshot. Renames are stored as facts
(see :mod:`memory.world.rules`): reads load them with the other facts and
:func:`memory.world.rules.build_snapshot` names the entities; ``lookup`` loads the found
entity's name facts to show its latest name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from errors import InvalidInput, StorageError
from memory.db import CompletesCalls, log, sql_errors
from memory.migrate import upgrade_to_head
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
    Setup,
    WorldChanges,
    WorldMemory,
    WorldSnapshot,
)
from memory.world.rules import (
    RENAME_PREDICATE,
    AliasRecord,
    EntityRecord,
    FactRecord,
    FixedRecord,
    SetupRecord,
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
from memory.world.tables import AliasRow, EntityRow, FactRow, FixedAttributeRow, SetupRow


def _valid_at(chapter: int) -> ColumnElement[bool]:
    """The port's validity rule, for visible (non-retracted) facts."""
    return and_(
        FactRow.retracted.is_(False),
        FactRow.valid_from_chapter <= chapter,
        or_(FactRow.valid_to_chapter.is_(None), FactRow.valid_to_chapter > chapter),
    )


@asynccontextmanager
async def _storage_errors(action: str) -> AsyncIterator[None]:
    """Turn driver failures into :class:`StorageError` (see :func:`memory.db.sql_errors`:
    no driver text in the message)."""
    try:
        with sql_errors("world memory", action):
            yield
    except IntegrityError as exc:
        log.warning("world memory: cannot %s: %s", action, exc)
        raise StorageError(
            f"world memory: cannot {action}: the database refused it (IntegrityError)",
            action=action,
        ) from None


# Entity and fact columns are listed in the field order of EntityRecord and Fact, so that
# a row is the record's arguments.
_ENTITY_COLUMNS = (
    EntityRow.key,
    EntityRow.kind,
    EntityRow.name,
    EntityRow.description,
    EntityRow.description_chapter,
    EntityRow.introduced_chapter,
    EntityRow.retracted,
    EntityRow.id,
)
_FACT_COLUMNS = (
    FactRow.subject_key,
    FactRow.predicate,
    FactRow.value,
    FactRow.object_key,
    FactRow.valid_from_chapter,
    FactRow.valid_to_chapter,
    FactRow.source_chapter,
)
# In the order :func:`fact_record` and :func:`setup_record` read.
_FACT_RECORD_COLUMNS = (FactRow.id, *_FACT_COLUMNS, FactRow.closed_by_chapter)
_SETUP_COLUMNS = (
    SetupRow.id,
    SetupRow.key,
    SetupRow.description,
    SetupRow.planted_chapter,
    SetupRow.due_chapter,
    SetupRow.entities,
    SetupRow.paid_off_chapter,
    SetupRow.recorded_chapter,
    SetupRow.retracted,
)


# --- apply: load what a batch touches, plan in memory, execute the plan ----------------


async def _load_batch(
    conn: AsyncConnection, novel_id: str, chapter: int, keys: BatchKeys
) -> BatchState:
    """The stored state a batch touches (see :class:`BatchState`)."""
    entities: list[EntityRecord] = []
    aliases: list[AliasRecord] = []
    fixed: list[FixedRecord] = []
    facts: list[FactRecord] = []
    setups: list[SetupRecord] = []
    keys_by_id: dict[int, str] = {}
    key_list = sorted(keys.entities)
    if key_list:
        rows = await conn.execute(
            select(*_ENTITY_COLUMNS).where(
                EntityRow.novel_id == novel_id, EntityRow.key.in_(key_list)
            )
        )
        for r in rows:
            keys_by_id[r.id] = r.key
            entities.append(EntityRecord(*r))
    if entities:
        # Without an entity there is nothing to hang aliases, fixed attributes or facts on.
        for a in await conn.execute(
            select(
                AliasRow.id,
                AliasRow.entity_id,
                AliasRow.alias,
                AliasRow.alias_norm,
                AliasRow.recorded_chapter,
                AliasRow.retracted,
            )
            .where(AliasRow.entity_id.in_(keys_by_id))
            .order_by(AliasRow.id)
        ):
            aliases.append(
                AliasRecord(
                    keys_by_id[a.entity_id],
                    a.alias,
                    a.alias_norm,
                    a.recorded_chapter,
                    a.retracted,
                    a.id,
                )
            )
        for f in await conn.execute(
            select(
                FixedAttributeRow.id,
                FixedAttributeRow.entity_id,
                FixedAttributeRow.name,
                FixedAttributeRow.value,
                FixedAttributeRow.recorded_chapter,
                FixedAttributeRow.retracted,
            ).where(FixedAttributeRow.entity_id.in_(keys_by_id))
        ):
            fixed.append(
                FixedRecord(
                    keys_by_id[f.entity_id], f.name, f.value, f.recorded_chapter, f.retracted, f.id
                )
            )
        facts = await _fact_records(
            conn,
            novel_id,
            FactRow.subject_key.in_(key_list),
            or_(FactRow.valid_to_chapter.is_(None), FactRow.valid_to_chapter > chapter),
        )
    if keys.setups:
        setups = [
            setup_record(r)
            for r in await conn.execute(
                select(*_SETUP_COLUMNS).where(
                    SetupRow.novel_id == novel_id, SetupRow.key.in_(sorted(keys.setups))
                )
            )
        ]
    return BatchState(
        entities=tuple(entities),
        aliases=tuple(aliases),
        fixed=tuple(fixed),
        facts=tuple(facts),
        setups=tuple(setups),
    )


async def _fact_records(
    conn: AsyncConnection, novel_id: str, *conditions: ColumnElement[bool]
) -> list[FactRecord]:
    """The novel's non-retracted facts meeting ``conditions``, as records."""
    rows = await conn.execute(
        select(*_FACT_RECORD_COLUMNS).where(
            FactRow.novel_id == novel_id, FactRow.retracted.is_(False), *conditions
        )
    )
    return [fact_record(r) for r in rows]


async def _execute_plan(conn: AsyncConnection, novel_id: str, plan: WritePlan) -> None:
    """Write a :class:`WritePlan` with one bulk statement per kind of change."""
    entity_ids = {e.key: e.id for e in plan.entities if e.id is not None}
    if plan.new_entities:
        inserted = await conn.execute(
            insert(EntityRow).returning(EntityRow.id, EntityRow.key),
            [{"novel_id": novel_id, "key": e.key, **entity_fields(e)} for e in plan.new_entities],
        )
        entity_ids.update({row.key: row.id for row in inserted})
    await _update_rows(
        conn, EntityRow, [{"id": e.id, **entity_fields(e)} for e in plan.changed_entities]
    )

    def owner(key: str) -> dict[str, Any]:
        found = entity_ids.get(key)
        if found is None:  # pragma: no cover - every planned entity has a row by now
            raise StorageError("entity id missing after insert", key=key)
        return {"entity_id": found, "novel_id": novel_id}

    if plan.new_aliases:
        await conn.execute(
            insert(AliasRow),
            [
                {**owner(a.entity), "alias_norm": a.norm, **_alias_values(a)}
                for a in plan.new_aliases
            ],
        )
    await _update_rows(
        conn, AliasRow, [{"id": a.id, **_alias_values(a)} for a in plan.changed_aliases]
    )
    if plan.new_fixed:
        await conn.execute(
            insert(FixedAttributeRow),
            [{**owner(f.entity), "name": f.name, **_fixed_values(f)} for f in plan.new_fixed],
        )
    await _update_rows(
        conn, FixedAttributeRow, [{"id": f.id, **_fixed_values(f)} for f in plan.changed_fixed]
    )
    if plan.closed_facts:
        await conn.execute(
            update(FactRow)
            .where(FactRow.id.in_([f.id for f in plan.closed_facts]))
            .values(valid_to_chapter=plan.chapter, closed_by_chapter=plan.chapter)
        )
    if plan.new_facts:
        now = datetime.now(UTC)
        await conn.execute(
            insert(FactRow),
            [
                {
                    "novel_id": novel_id,
                    "subject_key": f.subject,
                    "predicate": f.predicate,
                    "value": f.value,
                    "object_key": f.object,
                    "valid_from_chapter": f.valid_from,
                    "valid_to_chapter": f.valid_to,
                    "source_chapter": f.source_chapter,
                    "closed_by_chapter": f.closed_by,
                    "retracted": False,
                    "created_at": now,
                }
                for f in plan.new_facts
            ],
        )
    if plan.new_setups:
        await conn.execute(
            insert(SetupRow),
            [
                {
                    "novel_id": novel_id,
                    "key": v.key,
                    "recorded_chapter": v.recorded_chapter,
                    **setup_fields(v),
                }
                for v in plan.new_setups
            ],
        )
    await _update_rows(
        conn, SetupRow, [{"id": v.id, **setup_fields(v)} for v in plan.changed_setups]
    )


async def _update_rows(
    conn: AsyncConnection,
    table: type[EntityRow | AliasRow | FixedAttributeRow | FactRow | SetupRow],
    rows: Sequence[dict[str, Any]],
) -> None:
    """Overwrite rows by ``id`` in one statement; each row maps ``id`` and every column to
    set (the same columns in every row)."""
    if not rows:
        return
    columns = [name for name in rows[0] if name != "id"]
    # Bound names must differ from column names in an UPDATE's SET clause.
    await conn.execute(
        update(table)
        .where(table.id == bindparam("b_id"))
        .values({name: bindparam(f"b_{name}") for name in columns}),
        [{f"b_{name}": row[name] for name in ("id", *columns)} for row in rows],
    )


def _alias_values(a: AliasRecord) -> dict[str, Any]:
    return {"alias": a.text, "recorded_chapter": a.recorded_chapter, "retracted": a.retracted}


def _fixed_values(f: FixedRecord) -> dict[str, Any]:
    return {"value": f.value, "recorded_chapter": f.recorded_chapter, "retracted": f.retracted}


# --- reads ----------------------------------------------------------------------------


async def _read_entities(
    conn: AsyncConnection, novel_id: str, chapter: int | None, keys: Iterable[str] | None = None
) -> dict[str, Entity]:
    """Visible entities (introduced by ``chapter`` unless it is ``None``), keyed by key,
    as known at ``chapter`` (see :func:`entity_as_of`)."""
    query = select(*_ENTITY_COLUMNS).where(
        EntityRow.novel_id == novel_id, EntityRow.retracted.is_(False)
    )
    alias_query = select(
        AliasRow.entity_id, AliasRow.alias, AliasRow.alias_norm, AliasRow.recorded_chapter
    ).where(AliasRow.novel_id == novel_id, AliasRow.retracted.is_(False))
    fixed_query = select(
        FixedAttributeRow.entity_id,
        FixedAttributeRow.name,
        FixedAttributeRow.value,
        FixedAttributeRow.recorded_chapter,
    ).where(FixedAttributeRow.novel_id == novel_id, FixedAttributeRow.retracted.is_(False))
    if chapter is not None:
        query = query.where(EntityRow.introduced_chapter <= chapter)
        alias_query = alias_query.where(AliasRow.recorded_chapter <= chapter)
        fixed_query = fixed_query.where(FixedAttributeRow.recorded_chapter <= chapter)
    if keys is not None:
        key_list = sorted(set(keys))
        if not key_list:
            return {}
        query = query.where(EntityRow.key.in_(key_list))
    rows = list(await conn.execute(query))
    if not rows:
        return {}
    if keys is not None:
        ids = [r.id for r in rows]
        alias_query = alias_query.where(AliasRow.entity_id.in_(ids))
        fixed_query = fixed_query.where(FixedAttributeRow.entity_id.in_(ids))
    keys_by_id: dict[int, str] = {r.id: r.key for r in rows}
    aliases: dict[str, list[AliasRecord]] = defaultdict(list)
    for a in await conn.execute(alias_query.order_by(AliasRow.id)):
        # Aliases of entities not visible at ``chapter`` come along; they have no owner here.
        if (owner := keys_by_id.get(a.entity_id)) is not None:
            aliases[owner].append(AliasRecord(owner, a.alias, a.alias_norm, a.recorded_chapter))
    fixed: dict[str, list[FixedRecord]] = defaultdict(list)
    for f in await conn.execute(fixed_query):
        if (owner := keys_by_id.get(f.entity_id)) is not None:
            fixed[owner].append(FixedRecord(owner, f.name, f.value, f.recorded_chapter))
    return {
        r.key: entity_as_of(
            EntityRecord(*r),
            aliases[r.key],
            fixed[r.key],
            chapter,
        )
        for r in rows
    }


async def _read_setups(conn: AsyncConnection, novel_id: str, chapter: int) -> list[Setup]:
    """Every set-up recorded by ``chapter``, as it stands at it (see :func:`setups_as_of`)."""
    rows = await conn.execute(
        select(*_SETUP_COLUMNS).where(
            SetupRow.novel_id == novel_id,
            SetupRow.retracted.is_(False),
            SetupRow.recorded_chapter <= chapter,
        )
    )
    return setups_as_of((setup_record(r) for r in rows), chapter)


async def _reopen_facts_closed_by(conn: AsyncConnection, novel_id: str, chapter: int) -> None:
    """Give every fact closed by ``chapter`` the end it would have had without it (see
    :func:`plan_reopen`)."""
    facts = await _fact_records(
        conn,
        novel_id,
        or_(FactRow.closed_by_chapter == chapter, FactRow.source_chapter == chapter),
    )
    reopened = plan_reopen(chapter, facts)
    if reopened:
        await _update_rows(
            conn,
            FactRow,
            [
                {"id": f.id, "valid_to_chapter": f.valid_to, "closed_by_chapter": f.closed_by}
                for f in reopened
            ],
        )


class SqlWorldMemory(CompletesCalls, WorldMemory):
    """World memory in the shared SQL database (tables ``world_*``).

    The engine is shared with other adapters, so :meth:`close` leaves it alone; whoever
    created it disposes of it.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def setup(self) -> None:
        """Bring the schema to the latest migration (idempotent)."""
        async with _storage_errors("migrate"):
            await upgrade_to_head(self._engine)

    async def apply(self, novel_id: str, chapter: int, changes: WorldChanges) -> ApplyResult:
        """Apply a batch atomically at ``chapter`` (see :meth:`WorldMemory.apply`)."""
        check_novel(novel_id)
        if chapter < 0:
            raise InvalidInput("chapter must be 0 or more", chapter=chapter)
        try:
            with sql_errors("world memory", "apply changes"):
                return await self._apply_once(novel_id, chapter, changes)
        except IntegrityError:
            # A concurrent apply inserted the same entity or set-up first; a second pass
            # sees its rows and merges into them.
            pass
        async with _storage_errors("apply changes"):
            return await self._apply_once(novel_id, chapter, changes)

    async def _apply_once(self, novel_id: str, chapter: int, changes: WorldChanges) -> ApplyResult:
        async with self._engine.begin() as conn:
            state = await _load_batch(conn, novel_id, chapter, batch_keys(changes))
            plan = plan_batch(state, changes, chapter)
            await _execute_plan(conn, novel_id, plan)
        return ApplyResult(rejected=plan.rejected)

    async def world_as_of(self, novel_id: str, chapter: int) -> WorldSnapshot:
        """Entities, valid facts and set-ups as they stand at ``chapter``."""
        check_novel(novel_id)
        async with _storage_errors("read the world"), self._engine.connect() as conn:
            entities = await _read_entities(conn, novel_id, chapter)
            facts = [
                Fact(*r)
                for r in await conn.execute(
                    select(*_FACT_COLUMNS).where(FactRow.novel_id == novel_id, _valid_at(chapter))
                )
            ]
            setups = await _read_setups(conn, novel_id, chapter)
        return build_snapshot(chapter, entities, facts, setups)

    async def lookup(self, novel_id: str, name: str) -> Entity | None:
        """Find an entity by key, name or alias: exact key first, then the normalised
        key, name and alias; ties go to the entity recorded first."""
        check_novel(novel_id)
        wanted = name.strip()
        norm = normalise(name)
        if not norm:
            return None
        async with _storage_errors("look up an entity"), self._engine.connect() as conn:
            candidates = list(
                await conn.execute(
                    select(EntityRow.id, EntityRow.key, EntityRow.key_norm, EntityRow.name_norm)
                    .where(
                        EntityRow.novel_id == novel_id,
                        EntityRow.retracted.is_(False),
                        or_(
                            EntityRow.key == wanted,
                            EntityRow.key_norm == norm,
                            EntityRow.name_norm == norm,
                        ),
                    )
                    .order_by(EntityRow.id)
                )
            )
            ranked = sorted(
                candidates, key=lambda r: (lookup_rank(wanted, norm, r.key, r.key_norm), r.id)
            )
            key = ranked[0].key if ranked else None
            if key is None:
                key = (
                    await conn.execute(
                        select(EntityRow.key)
                        .join(AliasRow, AliasRow.entity_id == EntityRow.id)
                        .where(
                            AliasRow.novel_id == novel_id,
                            AliasRow.alias_norm == norm,
                            AliasRow.retracted.is_(False),
                            EntityRow.retracted.is_(False),
                        )
                        .order_by(EntityRow.id)
                        .limit(1)
                    )
                ).scalar_one_or_none()
            if key is None:
                return None
            found = await _read_entities(conn, novel_id, None, [key])
            names = [
                Fact(*r)
                for r in await conn.execute(
                    select(*_FACT_COLUMNS).where(
                        FactRow.novel_id == novel_id,
                        FactRow.retracted.is_(False),
                        FactRow.subject_key == key,
                        FactRow.predicate == RENAME_PREDICATE,
                    )
                )
            ]
        return with_names(found, names, None).get(key)

    async def neighbourhood(self, novel_id: str, key: str, chapter: int) -> WorldSnapshot:
        """The entity, its relationships valid at ``chapter``, their other ends, the
        attributes of all of those, and set-ups naming the entity."""
        check_novel(novel_id)
        key = key.strip()
        async with _storage_errors("read a neighbourhood"), self._engine.connect() as conn:
            relations = [
                Fact(*r)
                for r in await conn.execute(
                    select(*_FACT_COLUMNS).where(
                        FactRow.novel_id == novel_id,
                        _valid_at(chapter),
                        FactRow.object_key.is_not(None),
                        or_(FactRow.subject_key == key, FactRow.object_key == key),
                    )
                )
            ]
            entities = await _read_entities(conn, novel_id, chapter, neighbour_keys(key, relations))
            if key not in entities:
                return WorldSnapshot(chapter=chapter, entities=(), facts=(), setups=())
            attributes = [
                Fact(*r)
                for r in await conn.execute(
                    select(*_FACT_COLUMNS).where(
                        FactRow.novel_id == novel_id,
                        _valid_at(chapter),
                        FactRow.value.is_not(None),
                        FactRow.subject_key.in_(sorted(entities)),
                    )
                )
            ]
            setups = [s for s in await _read_setups(conn, novel_id, chapter) if key in s.entities]
        return build_snapshot(chapter, entities, [*relations, *attributes], setups)

    async def retract_chapter(self, novel_id: str, chapter: int) -> None:
        """Hide what ``chapter`` recorded, reopen what it closed, clear its pay-offs."""
        check_novel(novel_id)
        c = chapter
        async with _storage_errors("retract a chapter"), self._engine.begin() as conn:
            await _reopen_facts_closed_by(conn, novel_id, c)
            # Every row records the chapter that wrote it; retracting that chapter hides it.
            recorded_at = (
                (FactRow, FactRow.source_chapter),
                (EntityRow, EntityRow.introduced_chapter),
                (AliasRow, AliasRow.recorded_chapter),
                (FixedAttributeRow, FixedAttributeRow.recorded_chapter),
                (SetupRow, SetupRow.recorded_chapter),
            )
            for table, recorded in recorded_at:
                await conn.execute(
                    update(table)
                    .where(table.novel_id == novel_id, recorded == c, table.retracted.is_(False))
                    .values(retracted=True)
                )
            # Descriptions only ever fill an empty one, so undoing means emptying it again.
            await conn.execute(
                update(EntityRow)
                .where(
                    EntityRow.novel_id == novel_id,
                    EntityRow.description_chapter == c,
                    EntityRow.introduced_chapter != c,
                )
                .values(description="", description_chapter=None)
            )
            await conn.execute(
                update(SetupRow)
                .where(SetupRow.novel_id == novel_id, SetupRow.paid_off_chapter == c)
                .values(paid_off_chapter=None)
            )

    async def drop_novel(self, novel_id: str) -> None:
        """Delete every row of the novel's world."""
        check_novel(novel_id)
        async with _storage_errors("drop a novel"), self._engine.begin() as conn:
            for table in (AliasRow, FixedAttributeRow, FactRow, SetupRow, EntityRow):
                await conn.execute(delete(table).where(table.novel_id == novel_id))

    async def close(self) -> None:
        """Nothing to release: the engine is shared and disposed of by its owner."""
