"""The decisions of world memory's writes, made once for every backend.

``apply`` runs in three steps inside one transaction: the backend loads the stored state a
batch touches (:func:`batch_keys` says which), :func:`plan_batch` decides what the batch
changes and returns a :class:`WritePlan`, and the backend executes that plan in its own
query language. ``retract_chapter`` works alike with :func:`plan_reopen`. Nothing here does
I/O, so the rules below hold for SQL and Neo4j alike and are unit-tested without a
database (``tests/test_world_planner.py``); the conformance suite
(``tests/conformance/test_world_memory.py``) checks that every backend executes them.

Semantics beyond the port's docstrings:

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
* an attribute fact on a fixed attribute's name that restates the value valid at its
  chapter (the fixed value, or the one a caused change set) is dropped; one that changes
  it needs a non-empty ``cause`` and is then an ordinary attribute fact, valid from its
  chapter and replaced by the next change like any other, so reads (fixed values overlaid
  by valid facts) show the old value before the chapter and the new one from it; without
  a cause it is rejected. The cause is not stored: the chapter's text tells it;
* a rename is an attribute fact with the reserved predicate
  :data:`~memory.world.rules.RENAME_PREDICATE` (so it replaces the previous rename, is
  placed among chapters applied out of order and is undone by retraction like any fact)
  plus its new name as an alias recorded at its chapter (so lookups find the entity by
  every name it had); renaming an unknown entity is rejected, renaming to the name valid
  at the chapter is dropped, and the last rename of an entity in a batch wins. Facts and
  ends using the reserved predicate are rejected, so only renames write name facts;
* set-ups keep one version per recording chapter, so a retracted re-plan restores the
  previous plan; paying off an unknown set-up is rejected;
* a retracted entity, alias, fixed attribute or set-up version recorded again is revived
  in place (its record keeps its id), so natural keys stay unique in storage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from memory.world.port import (
    ENTITY_KINDS,
    EntitySpec,
    FactEnd,
    FactSpec,
    Rejection,
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
    RecordId,
    SetupRecord,
    Slot,
    clean,
    fact_label,
    fact_slot,
    normalise,
    referenced_keys,
)
from memory.world.tables import KEY_LENGTH

_K = TypeVar("_K")
_R = TypeVar("_R")


@dataclass(frozen=True)
class BatchKeys:
    """The keys a batch names: what a backend loads into a :class:`BatchState`."""

    entities: frozenset[str]
    setups: frozenset[str]


def batch_keys(changes: WorldChanges) -> BatchKeys:
    """The entity and set-up keys ``changes`` names (trimmed, empty ones left out)."""
    setups = {s.key.strip() for s in changes.setups} | {k.strip() for k in changes.paid_off}
    setups.discard("")
    return BatchKeys(entities=frozenset(referenced_keys(changes)), setups=frozenset(setups))


@dataclass(frozen=True)
class BatchState:
    """The stored state a batch touches, loaded in the batch's own transaction.

    For the entity keys of :class:`BatchKeys`: every entity record (retracted ones too),
    every alias of those entities in recording order, every fixed attribute, and the
    non-retracted facts whose subject is one of them and that are still open after the
    batch's chapter (``valid_to`` is ``None`` or greater). For its set-up keys: every
    stored version, retracted ones too. Anything more is ignored.
    """

    entities: tuple[EntityRecord, ...] = ()
    aliases: tuple[AliasRecord, ...] = ()
    fixed: tuple[FixedRecord, ...] = ()
    facts: tuple[FactRecord, ...] = ()
    setups: tuple[SetupRecord, ...] = ()


@dataclass(frozen=True)
class WritePlan:
    """What one batch writes at ``chapter``, for a backend to execute as it is.

    ``new_*`` records are to be created (their ``id`` is ``None``); ``changed_*`` records
    exist (by ``id``) and are to be overwritten with the values given. ``closed_facts``
    are stored facts to end at ``chapter`` (each already shows ``valid_to`` and
    ``closed_by`` equal to ``chapter``). Lists keep the order the batch made them in.
    ``entities`` and ``aliases`` hold every entity and alias the batch loaded or created,
    after it, for a backend that writes an entity together with its aliases.
    """

    chapter: int
    new_entities: tuple[EntityRecord, ...] = ()
    changed_entities: tuple[EntityRecord, ...] = ()
    new_aliases: tuple[AliasRecord, ...] = ()
    changed_aliases: tuple[AliasRecord, ...] = ()
    new_fixed: tuple[FixedRecord, ...] = ()
    changed_fixed: tuple[FixedRecord, ...] = ()
    closed_facts: tuple[FactRecord, ...] = ()
    new_facts: tuple[FactRecord, ...] = ()
    new_setups: tuple[SetupRecord, ...] = ()
    changed_setups: tuple[SetupRecord, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    entities: tuple[EntityRecord, ...] = ()
    aliases: tuple[AliasRecord, ...] = ()

    @property
    def writes_nothing(self) -> bool:
        """True when executing the plan changes nothing (e.g. a batch applied again)."""
        return not (
            self.new_entities
            or self.changed_entities
            or self.new_aliases
            or self.changed_aliases
            or self.new_fixed
            or self.changed_fixed
            or self.closed_facts
            or self.new_facts
            or self.new_setups
            or self.changed_setups
        )


def plan_batch(state: BatchState, changes: WorldChanges, chapter: int) -> WritePlan:
    """Decide what applying ``changes`` at ``chapter`` writes, given the stored ``state``
    (see :meth:`memory.world.port.WorldMemory.apply` and this module's docstring).

    Invalid changes become rejections in the plan, never exceptions. Rejections come in
    the order of the batch's parts: entities, renames, facts, ends, set-ups, pay-offs.
    """
    return _Planner(state, chapter).plan(changes)


def plan_reopen(chapter: int, facts: Iterable[FactRecord]) -> tuple[FactRecord, ...]:
    """The end each fact closed by ``chapter`` takes back when ``chapter`` is retracted.

    ``facts`` are the non-retracted facts recorded at or closed by ``chapter``. A fact
    replaced at ``chapter`` handed the rest of its interval to its successor, so it takes
    that end back from the successor (the fact recorded at ``chapter`` in the same slot
    that ``chapter`` itself did not close); a fact merely ended there reopens. Returns
    the facts to update, with their new ``valid_to`` and ``closed_by``.
    """
    closed: list[FactRecord] = []
    successors: dict[Slot, FactRecord] = {}
    for fact in facts:
        if fact.closed_by == chapter and fact.source_chapter != chapter:
            closed.append(fact)
        elif fact.source_chapter == chapter and fact.closed_by != chapter:
            successors[fact.slot] = fact
    reopened: list[FactRecord] = []
    for fact in closed:
        successor = successors.get(fact.slot)
        reopened.append(
            replace(
                fact,
                valid_to=successor.valid_to if successor else None,
                closed_by=successor.closed_by if successor else None,
            )
        )
    return tuple(reopened)


class _Planner:
    """The working state of one :func:`plan_batch` call.

    It keeps frozen records of what the batch touches and replaces them as it decides;
    comparing them with what was loaded yields the creations and updates of the plan.
    """

    def __init__(self, state: BatchState, chapter: int) -> None:
        self.chapter = chapter
        self.rejected: list[Rejection] = []
        self.loaded_entities = {e.key: e for e in state.entities}
        self.loaded_aliases = {(a.entity, a.norm): a for a in state.aliases}
        self.loaded_fixed = {(f.entity, f.name): f for f in state.fixed}
        self.loaded_setups = {(v.key, v.recorded_chapter): v for v in state.setups}
        self.entities = dict(self.loaded_entities)
        self.aliases = dict(self.loaded_aliases)
        self.fixed = dict(self.loaded_fixed)
        self.setups = dict(self.loaded_setups)
        self.stored_facts = state.facts
        self.closing: dict[RecordId, FactRecord] = {}
        self.new_facts: list[FactRecord] = []

    def reject(self, change: str, reason: str) -> None:
        self.rejected.append(Rejection(change=change, reason=reason))

    def plan(self, changes: WorldChanges) -> WritePlan:
        pending: list[FactSpec] = []
        for spec in changes.entities:
            pending.extend(self._merge_entity(spec))
        names = self._rename(changes.renames)
        pending.extend(changes.facts)
        self._apply_facts(pending, changes.ended, names)
        self._apply_setups(changes.setups, changes.paid_off)
        return WritePlan(
            chapter=self.chapter,
            new_entities=_created(self.entities, self.loaded_entities),
            changed_entities=_changed(self.entities, self.loaded_entities),
            new_aliases=_created(self.aliases, self.loaded_aliases),
            changed_aliases=_changed(self.aliases, self.loaded_aliases),
            new_fixed=_created(self.fixed, self.loaded_fixed),
            changed_fixed=_changed(self.fixed, self.loaded_fixed),
            closed_facts=tuple(self.closing.values()),
            new_facts=tuple(self.new_facts),
            new_setups=_created(self.setups, self.loaded_setups),
            changed_setups=_changed(self.setups, self.loaded_setups),
            rejected=tuple(self.rejected),
            entities=tuple(self.entities.values()),
            aliases=tuple(self.aliases.values()),
        )

    # --- entities -------------------------------------------------------------------

    def _merge_entity(self, spec: EntitySpec) -> list[FactSpec]:
        """Upsert one entity; returns its mutable attributes as facts."""
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
            # A retracted record is revived in place: (novel, key) stays unique.
            self.entities[key] = EntityRecord(
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
            self.aliases[(key, norm)] = AliasRecord(key, text, norm, self.chapter)
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
            self.fixed[(key, attribute)] = FixedRecord(key, attribute, value, self.chapter)
        elif current.retracted:
            self.fixed[(key, attribute)] = replace(
                current, value=value, recorded_chapter=self.chapter, retracted=False
            )
        elif normalise(current.value) != normalise(value):
            self.reject(label, f"{key}.{attribute} is fixed as {current.value!r}")

    # --- renames --------------------------------------------------------------------

    def _rename(self, renames: Sequence[Rename]) -> list[FactRecord]:
        """Checked renames as name facts, one per entity; their names become aliases."""
        names: dict[str, str] = {}
        for rename in renames:
            key = rename.key.strip()
            name = clean(rename.name)
            label = f"rename {key!r}"
            if not self._visible(key):
                self.reject(label, f"unknown entity {key!r}")
                continue
            if not name:
                self.reject(label, "name is empty")
                continue
            current = names.get(key) or self._name_at(key)
            if normalise(name) == normalise(current):
                continue
            # The alias is what lookups find the new name by; the fact says from when it
            # is the name. Both carry this chapter, so retracting it undoes the rename.
            self._merge_alias(key, name)
            names[key] = name
        c = self.chapter
        return [
            FactRecord(key, RENAME_PREDICATE, name, None, c, None, c) for key, name in names.items()
        ]

    def _name_at(self, key: str) -> str:
        """The name of a visible entity at this chapter, before this batch."""
        return self._stored_value_at(key, RENAME_PREDICATE) or self.entities[key].name

    # --- facts ----------------------------------------------------------------------

    def _visible(self, key: str) -> bool:
        state = self.entities.get(key)
        return state is not None and not state.retracted

    def _stored_value_at(self, subject: str, attribute: str) -> str | None:
        """The stored value of an attribute fact valid at this chapter, if any."""
        valid = [
            f
            for f in self.stored_facts
            if f.subject == subject
            and f.predicate == attribute
            and f.value is not None
            and f.valid_at(self.chapter)
        ]
        return max(valid, key=lambda f: f.valid_from).value if valid else None

    def _validate_facts(self, pending: Sequence[FactSpec]) -> list[FactRecord]:
        """Checked facts, collapsed so each single-valued (subject, predicate) occurs once."""
        collapsed: dict[Slot, FactRecord] = {}
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
            if predicate == RENAME_PREDICATE:
                self.reject(label, f"predicate {RENAME_PREDICATE!r} is reserved for renames")
                continue
            unknown = [k for k in (subject, obj) if k is not None and not self._visible(k)]
            if unknown:
                self.reject(label, f"unknown entity {unknown[0]!r}")
                continue
            slot = fact_slot(subject, predicate, value, obj)
            if value is not None:
                fixed = self.fixed.get((subject, predicate))
                if fixed is not None and not fixed.retracted:
                    # What holds at this chapter: this batch's own assertion, else the last
                    # caused change, else the fixed value itself.
                    earlier = collapsed.get(slot)
                    current = (
                        earlier.value
                        if earlier is not None and earlier.value is not None
                        else self._stored_value_at(subject, predicate) or fixed.value
                    )
                    if normalise(current) == normalise(value):
                        # A restatement adds nothing: what holds already says it.
                        continue
                    if not (spec.cause or "").strip():
                        changed = normalise(current) != normalise(fixed.value)
                        now = f" (now {current!r})" if changed else ""
                        self.reject(
                            label,
                            f"{subject}.{predicate} is fixed as {fixed.value!r}{now};"
                            " changing it needs a cause",
                        )
                        continue
                    # A caused change falls through: an ordinary attribute fact from here on.
            fact = FactRecord(subject, predicate, value, obj, self.chapter, None, self.chapter)
            # Earlier assertions of the same single-valued slot would hold for no chapter.
            collapsed.pop(slot, None)
            collapsed[slot] = fact
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
            if predicate == RENAME_PREDICATE:
                # Ending a name would rename without an alias; a Rename says what it becomes.
                self.reject(label, f"predicate {RENAME_PREDICATE!r} is reserved for renames")
                continue
            unknown = [k for k in (subject, obj) if k is not None and not self._visible(k)]
            if unknown:
                self.reject(label, f"unknown entity {unknown[0]!r}")
                continue
            valid.append(FactEnd(subject, predicate, obj))
        return valid

    def _apply_facts(
        self, pending: Sequence[FactSpec], ended: Sequence[FactEnd], names: Sequence[FactRecord]
    ) -> None:
        """Record ``pending`` facts, ``ended`` ends and the checked name facts of renames."""
        asserted = [*self._validate_facts(pending), *names]
        ends = self._validate_ends(ended)
        stored: dict[tuple[str, str], list[FactRecord]] = defaultdict(list)
        for f in self.stored_facts:
            stored[(f.subject, f.predicate)].append(f)
        c = self.chapter

        def close(fact: FactRecord, bucket: list[FactRecord]) -> None:
            closed = replace(fact, valid_to=c, closed_by=c)
            if fact.id is not None:
                self.closing[fact.id] = closed
            bucket[bucket.index(fact)] = closed

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
            self.new_facts.append(fact)

    # --- set-ups --------------------------------------------------------------------

    def _latest_setup(self, key: str) -> SetupRecord | None:
        visible = [
            v
            for (k, recorded), v in self.setups.items()
            if k == key and not v.retracted and recorded <= self.chapter
        ]
        return max(visible, key=lambda v: v.recorded_chapter, default=None)

    def _apply_setups(self, specs: Sequence[SetupSpec], paid_off: Sequence[str]) -> None:
        c = self.chapter
        for spec in specs:
            key = spec.key.strip()
            label = f"setup {key!r}"
            if not key or len(key) > KEY_LENGTH:
                self.reject(label, f"key must be 1-{KEY_LENGTH} characters")
                continue
            if spec.planted_chapter < 0 or spec.due_chapter < spec.planted_chapter:
                self.reject(label, "chapters must be 0 or more and due must not precede planted")
                continue
            plan = SetupRecord(
                key=key,
                description=spec.description.strip(),
                planted_chapter=spec.planted_chapter,
                due_chapter=spec.due_chapter,
                entities=tuple(dict.fromkeys(e.strip() for e in spec.entities if e.strip())),
                paid_off_chapter=None,
                recorded_chapter=c,
            )
            previous = self._latest_setup(key)
            if previous is not None and previous.same_plan(plan):
                continue
            existing = self.setups.get((key, c))
            self.setups[(key, c)] = replace(
                plan,
                paid_off_chapter=previous.paid_off_chapter if previous else None,
                id=existing.id if existing else None,
            )

        for raw in paid_off:
            key = raw.strip()
            current = self._latest_setup(key)
            if current is None:
                self.reject(f"paid_off {key!r}", f"unknown set-up {key!r}")
                continue
            if current.paid_off_chapter is not None:
                continue
            # Every visible version carries the pay-off so any of them may become latest.
            for slot, version in list(self.setups.items()):
                if slot[0] == key and not version.retracted and version.paid_off_chapter is None:
                    self.setups[slot] = replace(version, paid_off_chapter=c)


def _created(now: dict[_K, _R], loaded: dict[_K, _R]) -> tuple[_R, ...]:
    return tuple(record for key, record in now.items() if key not in loaded)


def _changed(now: dict[_K, _R], loaded: dict[_K, _R]) -> tuple[_R, ...]:
    return tuple(record for key, record in now.items() if key in loaded and record != loaded[key])
