"""SQL backend of world memory: SQLite (aiosqlite) and PostgreSQL (asyncpg) alike.

Only portable SQL is emitted (no JSON operators, no dialect functions); case-insensitive
matching uses lookup columns normalised in Python. Reads take a handful of statements
whatever the size of the world; ``apply`` loads what a batch touches, decides in memory
and writes with bulk statements, all in one transaction.

Semantics beyond the port's docstrings, shared with every backend through the
conformance suite (``tests/conformance/test_world_memory.py``):

* keys, predicates and values are trimmed; facts name entities by exact key;
* an upsert keeps an entity's kind and name: a different kind is rejected, a different
  name is merged as an alias; a description fills an empty one and never replaces one;
* attribute facts are single-valued among attributes, exclusive relations among
  relationships of that type; within one batch the last assertion of a single-valued
  fact wins and a batch never ends a fact it asserts itself (so re-applying is a no-op);
* a new value takes over the rest of the interval of the value valid at its chapter, so
  a chapter applied out of order (after later ones) ends where the later change begins;
  a ``FactEnd`` ends only facts still open;
* retracting a chapter gives each fact it closed the end it would have had without that
  chapter (the end its successor took over, or none);
* an attribute fact restating a fixed attribute is dropped, contradicting one is rejected;
* set-ups keep one version per recording chapter, so a retracted re-plan restores the
  previous plan; paying off an unknown set-up is rejected;
* snapshots leave out aliases, fixed attributes and descriptions recorded after their
  chapter, and facts naming an entity that is not visible;
* ``neighbourhood`` of an unknown entity is an empty snapshot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory.errors import InvalidInput, StorageError
from memory.migrate import upgrade_to_head
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
from memory.world.tables import (
    KEY_LENGTH,
    AliasRow,
    EntityRow,
    FactRow,
    FixedAttributeRow,
    SetupRow,
)


def _valid_at(chapter: int) -> ColumnElement[bool]:
    """The port's validity rule, for visible (non-retracted) facts."""
    return and_(
        FactRow.retracted.is_(False),
        FactRow.valid_from_chapter <= chapter,
        or_(FactRow.valid_to_chapter.is_(None), FactRow.valid_to_chapter > chapter),
    )


@asynccontextmanager
async def _storage_errors(action: str) -> AsyncIterator[None]:
    """Turn driver failures into :class:`StorageError`."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(f"world memory could not {action}: {exc}", action=action) from exc


# --- per-batch working state ----------------------------------------------------------
# The batch keeps frozen snapshots of the rows it touches and replaces them as it decides;
# comparing them with what was loaded yields the inserts and updates to flush.


@dataclass(frozen=True)
class _EntityState:
    key: str
    kind: str
    name: str
    description: str
    description_chapter: int | None
    introduced_chapter: int
    retracted: bool
    id: int | None = None


@dataclass(frozen=True)
class _ChildState:
    """An alias (``text`` is the alias) or a fixed attribute (``text`` is its value)."""

    text: str
    recorded_chapter: int
    retracted: bool
    id: int | None = None


@dataclass(frozen=True)
class _FactState:
    subject: str
    predicate: str
    value: str | None
    object: str | None
    valid_from: int
    valid_to: int | None
    closed_by: int | None = None
    id: int | None = None

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
    id: int | None = None

    def same_plan(self, other: _SetupState) -> bool:
        return (self.description, self.planted_chapter, self.due_chapter, self.entities) == (
            other.description,
            other.planted_chapter,
            other.due_chapter,
            other.entities,
        )


class _Batch:
    """One ``apply`` call: loads what the changes touch, decides, then flushes."""

    def __init__(self, conn: AsyncConnection, novel_id: str, chapter: int) -> None:
        self.conn = conn
        self.novel_id = novel_id
        self.chapter = chapter
        self.rejected: list[Rejection] = []
        self.entities: dict[str, _EntityState] = {}
        self.aliases: dict[tuple[str, str], _ChildState] = {}
        self.fixed: dict[tuple[str, str], _ChildState] = {}
        self.loaded_entities: dict[str, _EntityState] = {}
        self.loaded_aliases: dict[tuple[str, str], _ChildState] = {}
        self.loaded_fixed: dict[tuple[str, str], _ChildState] = {}

    def reject(self, change: str, reason: str) -> None:
        self.rejected.append(Rejection(change=change, reason=reason))

    async def run(self, changes: WorldChanges) -> ApplyResult:
        await self._load_entities(referenced_keys(changes))
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
        rows = await self.conn.execute(
            select(
                EntityRow.id,
                EntityRow.key,
                EntityRow.kind,
                EntityRow.name,
                EntityRow.description,
                EntityRow.description_chapter,
                EntityRow.introduced_chapter,
                EntityRow.retracted,
            ).where(EntityRow.novel_id == self.novel_id, EntityRow.key.in_(keys))
        )
        by_id: dict[int, str] = {}
        for row in rows:
            by_id[row.id] = row.key
            self.entities[row.key] = _EntityState(
                key=row.key,
                kind=row.kind,
                name=row.name,
                description=row.description,
                description_chapter=row.description_chapter,
                introduced_chapter=row.introduced_chapter,
                retracted=row.retracted,
                id=row.id,
            )
        if by_id:
            alias_rows = await self.conn.execute(
                select(
                    AliasRow.id,
                    AliasRow.entity_id,
                    AliasRow.alias,
                    AliasRow.alias_norm,
                    AliasRow.recorded_chapter,
                    AliasRow.retracted,
                ).where(AliasRow.entity_id.in_(by_id))
            )
            for a in alias_rows:
                self.aliases[(by_id[a.entity_id], a.alias_norm)] = _ChildState(
                    a.alias, a.recorded_chapter, a.retracted, a.id
                )
            fixed_rows = await self.conn.execute(
                select(
                    FixedAttributeRow.id,
                    FixedAttributeRow.entity_id,
                    FixedAttributeRow.name,
                    FixedAttributeRow.value,
                    FixedAttributeRow.recorded_chapter,
                    FixedAttributeRow.retracted,
                ).where(FixedAttributeRow.entity_id.in_(by_id))
            )
            for f in fixed_rows:
                self.fixed[(by_id[f.entity_id], f.name)] = _ChildState(
                    f.value, f.recorded_chapter, f.retracted, f.id
                )
        self.loaded_entities = dict(self.entities)
        self.loaded_aliases = dict(self.aliases)
        self.loaded_fixed = dict(self.fixed)

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
            # A retracted row is revived in place: (novel_id, key) stays unique.
            self.entities[key] = _EntityState(
                key=key,
                kind=spec.kind,
                name=name,
                description=description,
                description_chapter=self.chapter if description else None,
                introduced_chapter=self.chapter,
                retracted=False,
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

    async def _flush_entities(self) -> None:
        new = [state for state in self.entities.values() if state.id is None]
        if new:
            inserted = await self.conn.execute(
                insert(EntityRow).returning(EntityRow.id, EntityRow.key),
                [
                    {
                        "novel_id": self.novel_id,
                        "key": s.key,
                        "key_norm": normalise(s.key),
                        "kind": s.kind,
                        "name": s.name,
                        "name_norm": normalise(s.name),
                        "description": s.description,
                        "description_chapter": s.description_chapter,
                        "introduced_chapter": s.introduced_chapter,
                        "retracted": s.retracted,
                    }
                    for s in new
                ],
            )
            for row in inserted:
                self.entities[row.key] = replace(self.entities[row.key], id=row.id)
        changed = [
            s
            for key, s in self.entities.items()
            if s.id is not None and key in self.loaded_entities and s != self.loaded_entities[key]
        ]
        if changed:
            await self.conn.execute(
                update(EntityRow)
                .where(EntityRow.id == bindparam("b_id"))
                .values(
                    kind=bindparam("b_kind"),
                    name=bindparam("b_name"),
                    name_norm=bindparam("b_name_norm"),
                    description=bindparam("b_description"),
                    description_chapter=bindparam("b_description_chapter"),
                    introduced_chapter=bindparam("b_introduced_chapter"),
                    retracted=bindparam("b_retracted"),
                ),
                [
                    {
                        "b_id": s.id,
                        "b_kind": s.kind,
                        "b_name": s.name,
                        "b_name_norm": normalise(s.name),
                        "b_description": s.description,
                        "b_description_chapter": s.description_chapter,
                        "b_introduced_chapter": s.introduced_chapter,
                        "b_retracted": s.retracted,
                    }
                    for s in changed
                ],
            )
        await self._flush_aliases()
        await self._flush_fixed()

    def _entity_id(self, key: str) -> int:
        entity_id = self.entities[key].id
        if entity_id is None:  # pragma: no cover - _flush_entities assigns every id
            raise StorageError("entity id missing after insert", key=key)
        return entity_id

    async def _flush_aliases(self) -> None:
        new = [(k, s) for k, s in self.aliases.items() if s.id is None]
        if new:
            await self.conn.execute(
                insert(AliasRow),
                [
                    {
                        "entity_id": self._entity_id(key),
                        "novel_id": self.novel_id,
                        "alias": s.text,
                        "alias_norm": norm,
                        "recorded_chapter": s.recorded_chapter,
                        "retracted": s.retracted,
                    }
                    for (key, norm), s in new
                ],
            )
        changed = [
            s for k, s in self.aliases.items() if s.id is not None and s != self.loaded_aliases[k]
        ]
        if changed:
            await self.conn.execute(
                update(AliasRow)
                .where(AliasRow.id == bindparam("b_id"))
                .values(
                    alias=bindparam("b_text"),
                    recorded_chapter=bindparam("b_recorded"),
                    retracted=bindparam("b_retracted"),
                ),
                [_child_params(s) for s in changed],
            )

    async def _flush_fixed(self) -> None:
        new = [(k, s) for k, s in self.fixed.items() if s.id is None]
        if new:
            await self.conn.execute(
                insert(FixedAttributeRow),
                [
                    {
                        "entity_id": self._entity_id(key),
                        "novel_id": self.novel_id,
                        "name": attribute,
                        "value": s.text,
                        "recorded_chapter": s.recorded_chapter,
                        "retracted": s.retracted,
                    }
                    for (key, attribute), s in new
                ],
            )
        changed = [
            s for k, s in self.fixed.items() if s.id is not None and s != self.loaded_fixed[k]
        ]
        if changed:
            await self.conn.execute(
                update(FixedAttributeRow)
                .where(FixedAttributeRow.id == bindparam("b_id"))
                .values(
                    value=bindparam("b_text"),
                    recorded_chapter=bindparam("b_recorded"),
                    retracted=bindparam("b_retracted"),
                ),
                [_child_params(s) for s in changed],
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

    async def _load_facts(
        self, subjects: Collection[str]
    ) -> dict[tuple[str, str], list[_FactState]]:
        """Visible facts of these subjects that are valid at or after the batch chapter."""
        found: dict[tuple[str, str], list[_FactState]] = defaultdict(list)
        if not subjects:
            return found
        rows = await self.conn.execute(
            select(
                FactRow.id,
                FactRow.subject_key,
                FactRow.predicate,
                FactRow.value,
                FactRow.object_key,
                FactRow.valid_from_chapter,
                FactRow.valid_to_chapter,
                FactRow.closed_by_chapter,
            ).where(
                FactRow.novel_id == self.novel_id,
                FactRow.retracted.is_(False),
                FactRow.subject_key.in_(subjects),
                or_(
                    FactRow.valid_to_chapter.is_(None),
                    FactRow.valid_to_chapter > self.chapter,
                ),
            )
        )
        for r in rows:
            found[(r.subject_key, r.predicate)].append(
                _FactState(
                    r.subject_key,
                    r.predicate,
                    r.value,
                    r.object_key,
                    r.valid_from_chapter,
                    r.valid_to_chapter,
                    r.closed_by_chapter,
                    r.id,
                )
            )
        return found

    async def _apply_facts(self, pending: Sequence[FactSpec], ended: Sequence[FactEnd]) -> None:
        asserted = self._validate_facts(pending)
        ends = self._validate_ends(ended)
        subjects = {f.subject for f in asserted} | {e.subject for e in ends}
        stored = await self._load_facts(subjects)
        c = self.chapter
        closing: set[int] = set()

        def close(fact: _FactState, bucket: list[_FactState]) -> None:
            if fact.id is not None:
                closing.add(fact.id)
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

        if closing:
            await self.conn.execute(
                update(FactRow)
                .where(FactRow.id.in_(closing))
                .values(valid_to_chapter=c, closed_by_chapter=c)
            )
        if new:
            now = datetime.now(UTC)
            await self.conn.execute(
                insert(FactRow),
                [
                    {
                        "novel_id": self.novel_id,
                        "subject_key": f.subject,
                        "predicate": f.predicate,
                        "value": f.value,
                        "object_key": f.object,
                        "valid_from_chapter": f.valid_from,
                        "valid_to_chapter": f.valid_to,
                        "source_chapter": c,
                        "closed_by_chapter": f.closed_by,
                        "retracted": False,
                        "created_at": now,
                    }
                    for f in new
                ],
            )

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
        rows = await self.conn.execute(
            select(
                SetupRow.id,
                SetupRow.key,
                SetupRow.description,
                SetupRow.planted_chapter,
                SetupRow.due_chapter,
                SetupRow.entities,
                SetupRow.paid_off_chapter,
                SetupRow.recorded_chapter,
                SetupRow.retracted,
            ).where(SetupRow.novel_id == self.novel_id, SetupRow.key.in_(keys))
        )
        for r in rows:
            versions[(r.key, r.recorded_chapter)] = _SetupState(
                key=r.key,
                description=r.description,
                planted_chapter=r.planted_chapter,
                due_chapter=r.due_chapter,
                entities=tuple(r.entities),
                paid_off_chapter=r.paid_off_chapter,
                recorded_chapter=r.recorded_chapter,
                retracted=r.retracted,
                id=r.id,
            )

    async def _flush_setups(
        self,
        versions: dict[tuple[str, int], _SetupState],
        loaded: dict[tuple[str, int], _SetupState],
    ) -> None:
        new = [v for v in versions.values() if v.id is None]
        if new:
            await self.conn.execute(
                insert(SetupRow),
                [
                    {
                        "novel_id": self.novel_id,
                        "key": v.key,
                        "description": v.description,
                        "planted_chapter": v.planted_chapter,
                        "due_chapter": v.due_chapter,
                        "paid_off_chapter": v.paid_off_chapter,
                        "recorded_chapter": v.recorded_chapter,
                        "entities": list(v.entities),
                        "retracted": v.retracted,
                    }
                    for v in new
                ],
            )
        changed = [v for k, v in versions.items() if v.id is not None and v != loaded[k]]
        if changed:
            await self.conn.execute(
                update(SetupRow)
                .where(SetupRow.id == bindparam("b_id"))
                .values(
                    description=bindparam("b_description"),
                    planted_chapter=bindparam("b_planted"),
                    due_chapter=bindparam("b_due"),
                    entities=bindparam("b_entities"),
                    paid_off_chapter=bindparam("b_paid_off"),
                    retracted=bindparam("b_retracted"),
                ),
                [
                    {
                        "b_id": v.id,
                        "b_description": v.description,
                        "b_planted": v.planted_chapter,
                        "b_due": v.due_chapter,
                        "b_entities": list(v.entities),
                        "b_paid_off": v.paid_off_chapter,
                        "b_retracted": v.retracted,
                    }
                    for v in changed
                ],
            )


def _child_params(state: _ChildState) -> dict[str, Any]:
    return {
        "b_id": state.id,
        "b_text": state.text,
        "b_recorded": state.recorded_chapter,
        "b_retracted": state.retracted,
    }


# --- reads ----------------------------------------------------------------------------


async def _read_entities(
    conn: AsyncConnection, novel_id: str, chapter: int | None, keys: Iterable[str] | None = None
) -> dict[str, Entity]:
    """Visible entities (introduced by ``chapter`` unless it is ``None``), keyed by key.

    Aliases, fixed attributes and a later-filled description recorded after ``chapter``
    are left out, so a snapshot shows what was known at that chapter.
    """
    query = select(
        EntityRow.id,
        EntityRow.key,
        EntityRow.kind,
        EntityRow.name,
        EntityRow.name_norm,
        EntityRow.description,
        EntityRow.description_chapter,
        EntityRow.introduced_chapter,
    ).where(EntityRow.novel_id == novel_id, EntityRow.retracted.is_(False))
    alias_query = select(AliasRow.entity_id, AliasRow.alias, AliasRow.alias_norm).where(
        AliasRow.novel_id == novel_id, AliasRow.retracted.is_(False)
    )
    fixed_query = select(
        FixedAttributeRow.entity_id, FixedAttributeRow.name, FixedAttributeRow.value
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
    aliases: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for a in await conn.execute(alias_query.order_by(AliasRow.id)):
        aliases[a.entity_id].append((a.alias, a.alias_norm))
    fixed: dict[int, dict[str, str]] = defaultdict(dict)
    # Sorted in Python: database collations order names differently.
    for f in sorted(await conn.execute(fixed_query), key=lambda f: f.name):
        fixed[f.entity_id][f.name] = f.value
    found: dict[str, Entity] = {}
    for r in rows:
        shown = r.description_chapter is not None and (
            chapter is None or r.description_chapter <= chapter
        )
        found[r.key] = Entity(
            key=r.key,
            kind=cast(EntityKind, r.kind),
            name=r.name,
            aliases=tuple(text for text, norm in aliases[r.id] if norm != r.name_norm),
            description=r.description if shown else "",
            fixed=fixed[r.id],
            introduced_chapter=r.introduced_chapter,
        )
    return found


def _fact_from_row(row: Any) -> Fact:
    return Fact(
        subject=row.subject_key,
        predicate=row.predicate,
        value=row.value,
        object=row.object_key,
        valid_from_chapter=row.valid_from_chapter,
        valid_to_chapter=row.valid_to_chapter,
        source_chapter=row.source_chapter,
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


async def _read_setups(conn: AsyncConnection, novel_id: str, chapter: int) -> list[Setup]:
    """The latest visible version of every set-up recorded by ``chapter``, by key."""
    rows = await conn.execute(
        select(
            SetupRow.key,
            SetupRow.description,
            SetupRow.planted_chapter,
            SetupRow.due_chapter,
            SetupRow.paid_off_chapter,
            SetupRow.recorded_chapter,
            SetupRow.entities,
        )
        .where(
            SetupRow.novel_id == novel_id,
            SetupRow.retracted.is_(False),
            SetupRow.recorded_chapter <= chapter,
        )
        .order_by(SetupRow.key, SetupRow.recorded_chapter)
    )
    latest: dict[str, Setup] = {}
    for r in rows:
        paid = r.paid_off_chapter
        latest[r.key] = Setup(
            key=r.key,
            description=r.description,
            planted_chapter=r.planted_chapter,
            due_chapter=r.due_chapter,
            paid_off_chapter=paid if paid is not None and paid <= chapter else None,
            entities=tuple(r.entities),
        )
    return [latest[key] for key in sorted(latest)]


async def _reopen_facts_closed_by(conn: AsyncConnection, novel_id: str, chapter: int) -> None:
    """Give every fact closed by ``chapter`` the end it would have had without it.

    A fact replaced at ``chapter`` handed the rest of its interval to its successor, so it
    takes that end back from the successor (the one recorded at ``chapter`` in the same
    slot that ``chapter`` itself did not close); a fact merely ended there reopens.
    """
    closed = list(
        await conn.execute(
            select(
                FactRow.id,
                FactRow.subject_key,
                FactRow.predicate,
                FactRow.value,
                FactRow.object_key,
            ).where(
                FactRow.novel_id == novel_id,
                FactRow.closed_by_chapter == chapter,
                FactRow.source_chapter != chapter,
                FactRow.retracted.is_(False),
            )
        )
    )
    if not closed:
        return
    successors: dict[Slot, tuple[int | None, int | None]] = {}
    for r in await conn.execute(
        select(
            FactRow.subject_key,
            FactRow.predicate,
            FactRow.value,
            FactRow.object_key,
            FactRow.valid_to_chapter,
            FactRow.closed_by_chapter,
        ).where(
            FactRow.novel_id == novel_id,
            FactRow.source_chapter == chapter,
            FactRow.retracted.is_(False),
            or_(FactRow.closed_by_chapter.is_(None), FactRow.closed_by_chapter != chapter),
        )
    ):
        slot = fact_slot(r.subject_key, r.predicate, r.value, r.object_key)
        successors[slot] = (r.valid_to_chapter, r.closed_by_chapter)
    params: list[dict[str, Any]] = []
    for fact in closed:
        slot = fact_slot(fact.subject_key, fact.predicate, fact.value, fact.object_key)
        valid_to, closed_by = successors.get(slot, (None, None))
        params.append({"b_id": fact.id, "b_to": valid_to, "b_by": closed_by})
    await conn.execute(
        update(FactRow)
        .where(FactRow.id == bindparam("b_id"))
        .values(valid_to_chapter=bindparam("b_to"), closed_by_chapter=bindparam("b_by")),
        params,
    )


class SqlWorldMemory(WorldMemory):
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
            return await self._apply_once(novel_id, chapter, changes)
        except IntegrityError:
            # A concurrent apply inserted the same entity or set-up first; a second pass
            # sees its rows and merges into them.
            pass
        except SQLAlchemyError as exc:
            raise StorageError(f"world memory could not apply changes: {exc}") from exc
        async with _storage_errors("apply changes"):
            return await self._apply_once(novel_id, chapter, changes)

    async def _apply_once(self, novel_id: str, chapter: int, changes: WorldChanges) -> ApplyResult:
        async with self._engine.begin() as conn:
            return await _Batch(conn, novel_id, chapter).run(changes)

    async def world_as_of(self, novel_id: str, chapter: int) -> WorldSnapshot:
        """Entities, valid facts and set-ups as they stand at ``chapter``."""
        check_novel(novel_id)
        async with _storage_errors("read the world"), self._engine.connect() as conn:
            entities = await _read_entities(conn, novel_id, chapter)
            facts = [
                _fact_from_row(r)
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
                candidates,
                key=lambda r: (0 if r.key == wanted else 1 if r.key_norm == norm else 2, r.id),
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
        return found.get(key)

    async def neighbourhood(self, novel_id: str, key: str, chapter: int) -> WorldSnapshot:
        """The entity, its relationships valid at ``chapter``, their other ends, the
        attributes of all of those, and set-ups naming the entity."""
        check_novel(novel_id)
        key = key.strip()
        async with _storage_errors("read a neighbourhood"), self._engine.connect() as conn:
            relations = [
                _fact_from_row(r)
                for r in await conn.execute(
                    select(*_FACT_COLUMNS).where(
                        FactRow.novel_id == novel_id,
                        _valid_at(chapter),
                        FactRow.object_key.is_not(None),
                        or_(FactRow.subject_key == key, FactRow.object_key == key),
                    )
                )
            ]
            keys = {key} | {f.subject for f in relations} | {f.object or key for f in relations}
            entities = await _read_entities(conn, novel_id, chapter, keys)
            if key not in entities:
                return WorldSnapshot(chapter=chapter, entities=(), facts=(), setups=())
            attributes = [
                _fact_from_row(r)
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
            await conn.execute(
                update(FactRow)
                .where(
                    FactRow.novel_id == novel_id,
                    FactRow.source_chapter == c,
                    FactRow.retracted.is_(False),
                )
                .values(retracted=True)
            )
            await conn.execute(
                update(EntityRow)
                .where(
                    EntityRow.novel_id == novel_id,
                    EntityRow.introduced_chapter == c,
                    EntityRow.retracted.is_(False),
                )
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
            for child in (AliasRow, FixedAttributeRow):
                await conn.execute(
                    update(child)
                    .where(
                        child.novel_id == novel_id,
                        child.recorded_chapter == c,
                        child.retracted.is_(False),
                    )
                    .values(retracted=True)
                )
            await conn.execute(
                update(SetupRow)
                .where(
                    SetupRow.novel_id == novel_id,
                    SetupRow.recorded_chapter == c,
                    SetupRow.retracted.is_(False),
                )
                .values(retracted=True)
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
