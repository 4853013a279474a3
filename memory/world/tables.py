"""SQL tables of world memory: entities, their aliases and fixed attributes, facts, set-ups.

Kept in lock-step with ``migrations/versions/0002_world_memory.py`` (and
``0006_world_secrets.py``, which added the kind ``secret``); a test compares them.
Constraint names come from the naming convention on :data:`memory.db.Base.metadata`.

Everything ``retract_chapter`` must undo is traceable to its chapter: every row records
the chapter that wrote it (``introduced_chapter``, ``recorded_chapter``, ``source_chapter``,
``description_chapter``) and every change to an existing row records the chapter that made
it (``closed_by_chapter``, ``paid_off_chapter``). Retracted rows are kept and hidden; facts
always get new rows, while an entity, alias, fixed attribute or set-up version recorded
again after its retraction revives the retracted row (their keys are unique).

There is deliberately no foreign key to ``novels``: world memory is a port with non-SQL
backends and may be used for novels the app store does not know.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from memory.db import Base
from memory.world.port import ENTITY_KINDS

NOVEL_ID_LENGTH = 36
"""Novel ids are UUID strings, as in the app tables."""
KEY_LENGTH = 200
"""Longest entity key, set-up key, predicate or fixed-attribute name."""
KIND_LENGTH = 16


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class EntityRow(Base):
    """An entity of one novel's world, unique by key within the novel.

    ``key_norm`` and ``name_norm`` hold the lookup form (trimmed, case-folded) computed in
    Python, because SQL ``lower()`` is ASCII-only on SQLite. ``description_chapter`` is the
    chapter that set a non-empty description (``None`` while it is empty).
    """

    __tablename__ = "world_entities"
    __table_args__ = (
        UniqueConstraint("novel_id", "key"),
        CheckConstraint(_in_list("kind", ENTITY_KINDS), name="kind"),
        Index("ix_world_entities_novel_id_key_norm", "novel_id", "key_norm"),
        Index("ix_world_entities_novel_id_name_norm", "novel_id", "name_norm"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    novel_id: Mapped[str] = mapped_column(String(NOVEL_ID_LENGTH), nullable=False)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), nullable=False)
    key_norm: Mapped[str] = mapped_column(String(KEY_LENGTH), nullable=False)
    kind: Mapped[str] = mapped_column(String(KIND_LENGTH), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    name_norm: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    description_chapter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    introduced_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    retracted: Mapped[bool] = mapped_column(Boolean, nullable=False)


class AliasRow(Base):
    """Another name of an entity; ``alias_norm`` is its lookup form."""

    __tablename__ = "world_aliases"
    __table_args__ = (
        UniqueConstraint("entity_id", "alias_norm"),
        Index("ix_world_aliases_novel_id_alias_norm", "novel_id", "alias_norm"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("world_entities.id", ondelete="CASCADE"), nullable=False
    )
    # Denormalised so a whole novel's aliases load (and drop) without a join.
    novel_id: Mapped[str] = mapped_column(String(NOVEL_ID_LENGTH), nullable=False)
    alias: Mapped[str] = mapped_column(Text, nullable=False)
    alias_norm: Mapped[str] = mapped_column(Text, nullable=False)
    recorded_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    retracted: Mapped[bool] = mapped_column(Boolean, nullable=False)


class FixedAttributeRow(Base):
    """An attribute of an entity that never changes once recorded."""

    __tablename__ = "world_fixed_attributes"
    __table_args__ = (UniqueConstraint("entity_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("world_entities.id", ondelete="CASCADE"), nullable=False
    )
    novel_id: Mapped[str] = mapped_column(String(NOVEL_ID_LENGTH), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(KEY_LENGTH), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    recorded_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    retracted: Mapped[bool] = mapped_column(Boolean, nullable=False)


class FactRow(Base):
    """An attribute (``value``) or relationship (``object_key``) with its validity interval.

    ``closed_by_chapter`` is the chapter whose changes set ``valid_to_chapter``, so that
    retracting that chapter can reopen the fact (up to where its successor recorded at
    that chapter ended, if anywhere).
    """

    __tablename__ = "world_facts"
    __table_args__ = (
        CheckConstraint("(value IS NULL) <> (object_key IS NULL)", name="value_xor_object"),
        Index(
            "ix_world_facts_novel_id_subject_key_predicate", "novel_id", "subject_key", "predicate"
        ),
        Index("ix_world_facts_novel_id_object_key", "novel_id", "object_key"),
        Index(
            "ix_world_facts_novel_id_validity",
            "novel_id",
            "valid_from_chapter",
            "valid_to_chapter",
        ),
        Index("ix_world_facts_novel_id_source_chapter", "novel_id", "source_chapter"),
        Index("ix_world_facts_novel_id_closed_by_chapter", "novel_id", "closed_by_chapter"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    novel_id: Mapped[str] = mapped_column(String(NOVEL_ID_LENGTH), nullable=False)
    subject_key: Mapped[str] = mapped_column(String(KEY_LENGTH), nullable=False)
    predicate: Mapped[str] = mapped_column(String(KEY_LENGTH), nullable=False)
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    object_key: Mapped[str | None] = mapped_column(String(KEY_LENGTH), nullable=True)
    valid_from_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    valid_to_chapter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    closed_by_chapter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retracted: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SetupRow(Base):
    """One recorded version of a set-up.

    A set-up upserted again at a later chapter gets a new row (unique per
    ``recorded_chapter``), so retracting that chapter restores the earlier plan; reads use
    the latest visible version. ``paid_off_chapter`` is kept equal on every version.
    """

    __tablename__ = "world_setups"
    __table_args__ = (UniqueConstraint("novel_id", "key", "recorded_chapter"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    novel_id: Mapped[str] = mapped_column(String(NOVEL_ID_LENGTH), nullable=False)
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    planted_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    due_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    paid_off_chapter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recorded_chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    entities: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    retracted: Mapped[bool] = mapped_column(Boolean, nullable=False)
