"""SQL tables of application data: novels (sessions), accepted chapters and chapter versions.

Kept in lock-step with ``migrations/versions/0001_app_data.py``; a test compares them.
Constraint names come from the naming convention on :data:`memory.db.Base.metadata`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
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

NOVEL_ID_LENGTH = 36
"""Novel ids are UUID strings (they double as LangGraph thread ids)."""
VERSION_ID_LENGTH = 100
"""Version ids are chosen by the caller, often derived from the novel id, so allow more room."""
NOVEL_STATUSES: tuple[str, ...] = ("running", "paused", "completed", "failed")
VERSION_KINDS: tuple[str, ...] = ("draft", "edit")


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class NovelRow(Base):
    """A writing session."""

    __tablename__ = "novels"
    __table_args__ = (CheckConstraint(_in_list("status", NOVEL_STATUSES), name="status"),)

    id: Mapped[str] = mapped_column(String(NOVEL_ID_LENGTH), primary_key=True)
    premise: Mapped[str] = mapped_column(Text, nullable=False)
    chapters: Mapped[int] = mapped_column(Integer, nullable=False)
    genre: Mapped[str | None] = mapped_column(Text, nullable=True)
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ChapterVersionRow(Base):
    """One stored text of a chapter (writer draft or author edit)."""

    __tablename__ = "chapter_versions"
    __table_args__ = (
        UniqueConstraint("novel_id", "number", "version"),
        CheckConstraint(_in_list("kind", VERSION_KINDS), name="kind"),
        Index("ix_chapter_versions_novel_id_number", "novel_id", "number"),
    )

    id: Mapped[str] = mapped_column(String(VERSION_ID_LENGTH), primary_key=True)
    novel_id: Mapped[str] = mapped_column(
        String(NOVEL_ID_LENGTH), ForeignKey("novels.id", ondelete="CASCADE"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    word_count: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # What the reviewer read in this text (its claims) and found (its findings), kept so
    # the accepted version's claims update world memory without another model call and
    # an author can see why a draft was sent back. NULL until reviewed.
    claims: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    findings: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)


class ChapterRow(Base):
    """An accepted chapter, pointing at the version that currently stands for it."""

    __tablename__ = "chapters"

    novel_id: Mapped[str] = mapped_column(
        String(NOVEL_ID_LENGTH),
        ForeignKey("novels.id", ondelete="CASCADE"),
        primary_key=True,
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    summary: Mapped[str] = mapped_column(Text, nullable=False)
    current_version_id: Mapped[str] = mapped_column(
        String(VERSION_ID_LENGTH), ForeignKey("chapter_versions.id"), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
