"""SQL tables of the run engine: threads (one per novel) and the durable run queue.

Kept in lock-step with ``migrations/versions/0004_runs.py``; a test compares them.
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
)
from sqlalchemy.orm import Mapped, mapped_column

from memory.db import Base

ID_LENGTH = 36
"""Thread, run, assistant and owner ids are UUID strings."""
WORKER_ID_LENGTH = 100
THREAD_STATUSES: tuple[str, ...] = ("idle", "busy", "interrupted", "error")
RUN_STATUSES: tuple[str, ...] = ("pending", "running", "success", "error", "interrupted", "timeout")
MULTITASK_STRATEGIES: tuple[str, ...] = ("reject", "interrupt", "rollback", "enqueue")
CANCEL_ACTIONS: tuple[str, ...] = ("interrupt", "rollback")


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class ThreadRow(Base):
    """A LangGraph thread; its id is also the novel (session) id."""

    __tablename__ = "threads"
    __table_args__ = (
        CheckConstraint(_in_list("status", THREAD_STATUSES), name="status"),
        Index("ix_threads_owner_id_updated_at", "owner_id", "updated_at"),
    )

    thread_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    # ``metadata`` is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class RunRow(Base):
    """One run of the graph on a thread: a row of the queue workers claim from."""

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(_in_list("status", RUN_STATUSES), name="status"),
        CheckConstraint(
            _in_list("multitask_strategy", MULTITASK_STRATEGIES), name="multitask_strategy"
        ),
        CheckConstraint(_in_list("cancel_action", CANCEL_ACTIONS), name="cancel_action"),
        Index("ix_runs_thread_id_status", "thread_id", "status"),
        Index("ix_runs_status_not_before", "status", "not_before"),
    )

    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    thread_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("threads.thread_id", ondelete="CASCADE"), nullable=False
    )
    assistant_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    owner_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    multitask_strategy: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    """Earliest start (``after_seconds``); equal to ``created_at`` when not delayed."""
    worker_id: Mapped[str | None] = mapped_column(String(WORKER_ID_LENGTH), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_action: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
