"""traces: traced runs and their model calls

Revision ID: 0005_traces
Revises: 0004_runs
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_traces"
down_revision: str | None = "0004_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``trace_runs`` and ``model_calls`` (mirrors memory/traces/tables.py)."""
    op.create_table(
        "trace_runs",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("thread_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=True),
        sa.Column("command", sa.JSON(), nullable=True),
        sa.Column("start_checkpoint_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("replay", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "source IN ('api', 'cli', 'replay')",
            name=op.f("ck_trace_runs_source"),
        ),
        sa.CheckConstraint(
            "status IN ('running', 'success', 'interrupted', 'error', 'budget_exceeded')",
            name=op.f("ck_trace_runs_status"),
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_trace_runs")),
        sa.UniqueConstraint("thread_id", "sequence", name=op.f("uq_trace_runs_thread_id_sequence")),
    )
    op.create_table(
        "model_calls",
        sa.Column("call_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("thread_id", sa.String(length=36), nullable=False),
        sa.Column("checkpoint_id", sa.String(length=64), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("node", sa.String(length=100), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("chapter", sa.Integer(), nullable=False),
        sa.Column("call_index", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=100), nullable=False),
        sa.Column("task", sa.String(length=100), nullable=False),
        sa.Column("repair", sa.Boolean(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("tool_calls", sa.JSON(), nullable=False),
        sa.Column("structured", sa.JSON(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_from", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["trace_runs.run_id"],
            name=op.f("fk_model_calls_run_id_trace_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_model_calls")),
    )
    op.create_index(
        "ix_model_calls_run_id_step_call_index",
        "model_calls",
        ["run_id", "step", "call_index"],
        unique=False,
    )
    op.create_index(op.f("ix_model_calls_thread_id"), "model_calls", ["thread_id"], unique=False)


def downgrade() -> None:
    """Drop the trace tables, dependants first."""
    op.drop_index(op.f("ix_model_calls_thread_id"), table_name="model_calls")
    op.drop_index("ix_model_calls_run_id_step_call_index", table_name="model_calls")
    op.drop_table("model_calls")
    op.drop_table("trace_runs")
