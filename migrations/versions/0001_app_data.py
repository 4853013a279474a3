"""app data: novels, chapter versions and accepted chapters

Revision ID: 0001_app_data
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_app_data"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``novels``, ``chapter_versions`` and ``chapters`` (mirrors memory/app/tables.py)."""
    op.create_table(
        "novels",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("premise", sa.Text(), nullable=False),
        sa.Column("chapters", sa.Integer(), nullable=False),
        sa.Column("genre", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'paused', 'completed', 'failed')",
            name=op.f("ck_novels_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_novels")),
    )
    op.create_table(
        "chapter_versions",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("novel_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("word_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('draft', 'edit')", name=op.f("ck_chapter_versions_kind")),
        sa.ForeignKeyConstraint(
            ["novel_id"],
            ["novels.id"],
            name=op.f("fk_chapter_versions_novel_id_novels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chapter_versions")),
        sa.UniqueConstraint(
            "novel_id",
            "number",
            "version",
            name=op.f("uq_chapter_versions_novel_id_number_version"),
        ),
    )
    op.create_index(
        "ix_chapter_versions_novel_id_number",
        "chapter_versions",
        ["novel_id", "number"],
        unique=False,
    )
    op.create_table(
        "chapters",
        sa.Column("novel_id", sa.String(length=36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("current_version_id", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["current_version_id"],
            ["chapter_versions.id"],
            name=op.f("fk_chapters_current_version_id_chapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["novel_id"],
            ["novels.id"],
            name=op.f("fk_chapters_novel_id_novels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("novel_id", "number", name=op.f("pk_chapters")),
    )


def downgrade() -> None:
    """Drop the app-data tables, dependants first."""
    op.drop_table("chapters")
    op.drop_index("ix_chapter_versions_novel_id_number", table_name="chapter_versions")
    op.drop_table("chapter_versions")
    op.drop_table("novels")
