"""world memory: entities, aliases, fixed attributes, facts and set-ups

Revision ID: 0002_world_memory
Revises: 0001_app_data
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_world_memory"
down_revision: str | None = "0001_app_data"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the ``world_*`` tables (mirrors memory/world/tables.py)."""
    op.create_table(
        "world_entities",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("novel_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("key_norm", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_norm", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("description_chapter", sa.Integer(), nullable=True),
        sa.Column("introduced_chapter", sa.Integer(), nullable=False),
        sa.Column("retracted", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('character', 'location', 'faction', 'item', 'rule', 'event')",
            name=op.f("ck_world_entities_kind"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_world_entities")),
        sa.UniqueConstraint("novel_id", "key", name=op.f("uq_world_entities_novel_id_key")),
    )
    op.create_index(
        "ix_world_entities_novel_id_key_norm",
        "world_entities",
        ["novel_id", "key_norm"],
        unique=False,
    )
    op.create_index(
        "ix_world_entities_novel_id_name_norm",
        "world_entities",
        ["novel_id", "name_norm"],
        unique=False,
    )
    op.create_table(
        "world_aliases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("novel_id", sa.String(length=36), nullable=False),
        sa.Column("alias", sa.Text(), nullable=False),
        sa.Column("alias_norm", sa.Text(), nullable=False),
        sa.Column("recorded_chapter", sa.Integer(), nullable=False),
        sa.Column("retracted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["world_entities.id"],
            name=op.f("fk_world_aliases_entity_id_world_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_world_aliases")),
        sa.UniqueConstraint(
            "entity_id", "alias_norm", name=op.f("uq_world_aliases_entity_id_alias_norm")
        ),
    )
    op.create_index(
        "ix_world_aliases_novel_id_alias_norm",
        "world_aliases",
        ["novel_id", "alias_norm"],
        unique=False,
    )
    op.create_table(
        "world_fixed_attributes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity_id", sa.Integer(), nullable=False),
        sa.Column("novel_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("recorded_chapter", sa.Integer(), nullable=False),
        sa.Column("retracted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entity_id"],
            ["world_entities.id"],
            name=op.f("fk_world_fixed_attributes_entity_id_world_entities"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_world_fixed_attributes")),
        sa.UniqueConstraint(
            "entity_id", "name", name=op.f("uq_world_fixed_attributes_entity_id_name")
        ),
    )
    op.create_index(
        op.f("ix_world_fixed_attributes_novel_id"),
        "world_fixed_attributes",
        ["novel_id"],
        unique=False,
    )
    op.create_table(
        "world_facts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("novel_id", sa.String(length=36), nullable=False),
        sa.Column("subject_key", sa.String(length=200), nullable=False),
        sa.Column("predicate", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("object_key", sa.String(length=200), nullable=True),
        sa.Column("valid_from_chapter", sa.Integer(), nullable=False),
        sa.Column("valid_to_chapter", sa.Integer(), nullable=True),
        sa.Column("source_chapter", sa.Integer(), nullable=False),
        sa.Column("closed_by_chapter", sa.Integer(), nullable=True),
        sa.Column("retracted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(value IS NULL) <> (object_key IS NULL)",
            name=op.f("ck_world_facts_value_xor_object"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_world_facts")),
    )
    op.create_index(
        "ix_world_facts_novel_id_subject_key_predicate",
        "world_facts",
        ["novel_id", "subject_key", "predicate"],
        unique=False,
    )
    op.create_index(
        "ix_world_facts_novel_id_object_key",
        "world_facts",
        ["novel_id", "object_key"],
        unique=False,
    )
    op.create_index(
        "ix_world_facts_novel_id_validity",
        "world_facts",
        ["novel_id", "valid_from_chapter", "valid_to_chapter"],
        unique=False,
    )
    op.create_index(
        "ix_world_facts_novel_id_source_chapter",
        "world_facts",
        ["novel_id", "source_chapter"],
        unique=False,
    )
    op.create_index(
        "ix_world_facts_novel_id_closed_by_chapter",
        "world_facts",
        ["novel_id", "closed_by_chapter"],
        unique=False,
    )
    op.create_table(
        "world_setups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("novel_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("planted_chapter", sa.Integer(), nullable=False),
        sa.Column("due_chapter", sa.Integer(), nullable=False),
        sa.Column("paid_off_chapter", sa.Integer(), nullable=True),
        sa.Column("recorded_chapter", sa.Integer(), nullable=False),
        sa.Column("entities", sa.JSON(), nullable=False),
        sa.Column("retracted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_world_setups")),
        sa.UniqueConstraint(
            "novel_id",
            "key",
            "recorded_chapter",
            name=op.f("uq_world_setups_novel_id_key_recorded_chapter"),
        ),
    )


def downgrade() -> None:
    """Drop the ``world_*`` tables, dependants first."""
    op.drop_table("world_setups")
    op.drop_index("ix_world_facts_novel_id_closed_by_chapter", table_name="world_facts")
    op.drop_index("ix_world_facts_novel_id_source_chapter", table_name="world_facts")
    op.drop_index("ix_world_facts_novel_id_validity", table_name="world_facts")
    op.drop_index("ix_world_facts_novel_id_object_key", table_name="world_facts")
    op.drop_index("ix_world_facts_novel_id_subject_key_predicate", table_name="world_facts")
    op.drop_table("world_facts")
    op.drop_index(op.f("ix_world_fixed_attributes_novel_id"), table_name="world_fixed_attributes")
    op.drop_table("world_fixed_attributes")
    op.drop_index("ix_world_aliases_novel_id_alias_norm", table_name="world_aliases")
    op.drop_table("world_aliases")
    op.drop_index("ix_world_entities_novel_id_name_norm", table_name="world_entities")
    op.drop_index("ix_world_entities_novel_id_key_norm", table_name="world_entities")
    op.drop_table("world_entities")
