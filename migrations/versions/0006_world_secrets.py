"""world secrets: entities of kind 'secret'

Revision ID: 0006_world_secrets
Revises: 0005_traces
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_world_secrets"
down_revision: str | None = "0005_traces"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The kinds each side of this revision allows, spelled out (not imported from the models)
# so that the revision keeps meaning what it meant when later kinds are added.
_KINDS_BEFORE = ("character", "location", "faction", "item", "rule", "event")
_KINDS_AFTER = (*_KINDS_BEFORE, "secret")


def _kind_check(kinds: tuple[str, ...]) -> str:
    return "kind IN ({})".format(", ".join(f"'{kind}'" for kind in kinds))


def _replace_kind_check(kinds: tuple[str, ...]) -> None:
    # SQLite cannot alter a constraint in place: batch mode copies the table into one with
    # the new constraint (memory.migrate runs it with foreign keys off, so the copy does
    # not cascade into aliases and fixed attributes). Postgres alters the table directly.
    with op.batch_alter_table("world_entities") as batch:
        batch.drop_constraint(op.f("ck_world_entities_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_world_entities_kind"), _kind_check(kinds))


def upgrade() -> None:
    """Allow entities of kind ``secret`` (mirrors memory/world/tables.py)."""
    _replace_kind_check(_KINDS_AFTER)


def downgrade() -> None:
    """Forbid kind ``secret`` again, removing secrets and everything hanging off them.

    The older schema cannot hold a secret, so its entity, aliases and fixed attributes go,
    and so do the facts naming it (facts name entities by key, without a foreign key).
    """
    op.execute(
        "DELETE FROM world_facts WHERE EXISTS (SELECT 1 FROM world_entities e"
        " WHERE e.kind = 'secret' AND e.novel_id = world_facts.novel_id"
        " AND e.key IN (world_facts.subject_key, world_facts.object_key))"
    )
    secret_ids = "SELECT e.id FROM world_entities e WHERE e.kind = 'secret'"
    # Deleted explicitly: the migration may run with foreign keys (and cascades) off.
    op.execute(f"DELETE FROM world_aliases WHERE entity_id IN ({secret_ids})")
    op.execute(f"DELETE FROM world_fixed_attributes WHERE entity_id IN ({secret_ids})")
    op.execute("DELETE FROM world_entities WHERE kind = 'secret'")
    _replace_kind_check(_KINDS_BEFORE)
