"""SQL tables of traces: the traced runs and the model calls made during them.

Kept in lock-step with ``migrations/versions/0005_traces.py``; a test compares them.
Constraint names come from the naming convention on :data:`memory.db.Base.metadata`.

There is deliberately no foreign key from ``trace_runs`` to ``threads`` or ``novels``:
runs started from the CLI are traced too and have no thread row. ``model_calls`` repeats
its run's ``thread_id`` so a thread's usage needs no join.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from memory.db import Base
from memory.traces.port import RunSource, TracedRunStatus

ID_LENGTH = 36
"""Run, thread, owner and call ids are UUID strings."""
CHECKPOINT_ID_LENGTH = 64
"""LangGraph checkpoint and task ids (UUIDs today; room to spare)."""
NAME_LENGTH = 100
"""Node, agent and task names: identifiers chosen in code."""
RUN_SOURCES: tuple[str, ...] = get_args(RunSource)
RUN_STATUSES: tuple[str, ...] = get_args(TracedRunStatus)

# SQL NULL rather than a JSON ``null`` for absent values, so "is there a command" is a
# plain IS NULL on either database.
_NULLABLE_JSON = JSON(none_as_null=True)


def _in_list(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


class TraceRunRow(Base):
    """A traced run: what it was asked to do, where it started and how it ended."""

    __tablename__ = "trace_runs"
    __table_args__ = (
        # Also the index behind "the runs of a thread in sequence order".
        UniqueConstraint("thread_id", "sequence"),
        CheckConstraint(_in_list("source", RUN_SOURCES), name="source"),
        CheckConstraint(_in_list("status", RUN_STATUSES), name="status"),
    )

    run_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False)
    owner_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    sequence: Mapped[int] = mapped_column(Integer, nullable=False)
    input: Mapped[Any] = mapped_column(_NULLABLE_JSON, nullable=True)
    command: Mapped[dict[str, Any] | None] = mapped_column(_NULLABLE_JSON, nullable=True)
    start_checkpoint_id: Mapped[str | None] = mapped_column(
        String(CHECKPOINT_ID_LENGTH), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    budget: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    replay: Mapped[dict[str, Any] | None] = mapped_column(_NULLABLE_JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ModelCallRow(Base):
    """One logical model call of a run (after retries), replaced when re-recorded."""

    __tablename__ = "model_calls"
    __table_args__ = (
        Index("ix_model_calls_run_id_step_call_index", "run_id", "step", "call_index"),
    )

    call_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    run_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("trace_runs.run_id", ondelete="CASCADE"), nullable=False
    )
    thread_id: Mapped[str] = mapped_column(String(ID_LENGTH), nullable=False, index=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(CHECKPOINT_ID_LENGTH), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(CHECKPOINT_ID_LENGTH), nullable=True)
    node: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    step: Mapped[int] = mapped_column(Integer, nullable=False)
    chapter: Mapped[int] = mapped_column(Integer, nullable=False)
    # ``index`` is a reserved word in SQL, hence the column name.
    index: Mapped[int] = mapped_column("call_index", Integer, nullable=False)
    agent: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    task: Mapped[str] = mapped_column(String(NAME_LENGTH), nullable=False)
    repair: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # Provider model names vary too much in length to bound them.
    model: Mapped[str] = mapped_column(Text, nullable=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    answer: Mapped[str] = mapped_column(Text, nullable=False)
    tool_calls: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    structured: Mapped[dict[str, Any] | None] = mapped_column(_NULLABLE_JSON, nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False)
    latency_ms: Mapped[float] = mapped_column(Float, nullable=False)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    replayed_from: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
