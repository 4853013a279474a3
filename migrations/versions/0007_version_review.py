"""version review: the claims a reviewer read in a chapter version and their findings

Revision ID: 0007_version_review
Revises: 0006_world_secrets
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_version_review"
down_revision: str | None = "0006_world_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``claims`` and ``findings`` to ``chapter_versions`` (memory/app/tables.py)."""
    with op.batch_alter_table("chapter_versions") as batch:
        batch.add_column(sa.Column("claims", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("findings", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the review columns."""
    with op.batch_alter_table("chapter_versions") as batch:
        batch.drop_column("findings")
        batch.drop_column("claims")
