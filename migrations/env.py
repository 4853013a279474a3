"""Alembic environment: always run on a connection handed in by ``memory.migrate``."""

from __future__ import annotations

from alembic import context

import memory.app.tables
import memory.auth.tables
import memory.runs.tables
import memory.traces.tables  # registers trace runs and model calls
import memory.world.tables  # noqa: F401  (registers world tables on Base.metadata)
from memory.db import Base

target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations on the connection supplied through ``config.attributes``."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "migrations run through memory.migrate.upgrade_to_head(engine), not the alembic CLI"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
