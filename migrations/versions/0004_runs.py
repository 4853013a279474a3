"""runs: LangGraph threads and the durable run queue

Revision ID: 0004_runs
Revises: 0003_auth
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_runs"
down_revision: str | None = "0003_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``threads`` and ``runs`` (mirrors memory/runs/tables.py)."""
    op.create_table(
        "threads",
        sa.Column("thread_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('idle', 'busy', 'interrupted', 'error')",
            name=op.f("ck_threads_status"),
        ),
        sa.PrimaryKeyConstraint("thread_id", name=op.f("pk_threads")),
    )
    op.create_index(
        "ix_threads_owner_id_updated_at", "threads", ["owner_id", "updated_at"], unique=False
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("thread_id", sa.String(length=36), nullable=False),
        sa.Column("assistant_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("multitask_strategy", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("worker_id", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_action", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'success', 'error', 'interrupted', 'timeout')",
            name=op.f("ck_runs_status"),
        ),
        sa.CheckConstraint(
            "multitask_strategy IN ('reject', 'interrupt', 'rollback', 'enqueue')",
            name=op.f("ck_runs_multitask_strategy"),
        ),
        sa.CheckConstraint(
            "cancel_action IN ('interrupt', 'rollback')",
            name=op.f("ck_runs_cancel_action"),
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["threads.thread_id"],
            name=op.f("fk_runs_thread_id_threads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_runs")),
    )
    op.create_index("ix_runs_thread_id_status", "runs", ["thread_id", "status"], unique=False)
    op.create_index("ix_runs_status_not_before", "runs", ["status", "not_before"], unique=False)


def downgrade() -> None:
    """Drop the run-engine tables, dependants first."""
    op.drop_index("ix_runs_status_not_before", table_name="runs")
    op.drop_index("ix_runs_thread_id_status", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_threads_owner_id_updated_at", table_name="threads")
    op.drop_table("threads")
