"""Rolling a thread back to where it stood before a run (cancel with ``action=rollback``).

LangGraph's savers do not implement ``adelete_for_runs``, so this module removes a run's
checkpoints from the saver's own tables: every checkpoint whose metadata names the run
(the engine puts ``run_id`` in the config metadata, which LangGraph copies into each
checkpoint), their pending writes, and the writes the run added to the checkpoint it
started from (a resume value, finished tasks of an unfinished step). Writes that were on
that checkpoint before the run, such as the interrupt it waits at, stay.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from errors import ConfigurationError
from memory.runs.models import BaseCheckpoint

WriteKey = tuple[str, int]


class CheckpointJanitor(ABC):
    """Reads a thread's head checkpoint and removes a run's checkpoints."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self._saver = saver

    async def base(self, thread_id: str) -> BaseCheckpoint:
        """The thread's head checkpoint and the keys of the writes already on it."""
        head = await self._saver.aget_tuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        )
        if head is None:
            return BaseCheckpoint(None, ())
        checkpoint_id = str(head.config["configurable"]["checkpoint_id"])
        keys = await self._write_keys(thread_id, checkpoint_id)
        return BaseCheckpoint(checkpoint_id, tuple(sorted(keys)))

    async def rollback(self, thread_id: str, run_id: str, base: BaseCheckpoint) -> None:
        """Remove the run's checkpoints and writes; the thread's head is ``base`` again."""
        await self._delete_run(thread_id, run_id)
        if base.checkpoint_id is None:
            return
        added = await self._write_keys(thread_id, base.checkpoint_id) - set(base.write_keys)
        if added:
            await self._delete_writes(thread_id, base.checkpoint_id, sorted(added))

    @abstractmethod
    async def _write_keys(self, thread_id: str, checkpoint_id: str) -> set[WriteKey]:
        """``(task_id, idx)`` of the pending writes on one root checkpoint."""

    @abstractmethod
    async def _delete_run(self, thread_id: str, run_id: str) -> None:
        """Delete the checkpoints (and their writes) whose metadata names ``run_id``."""

    @abstractmethod
    async def _delete_writes(
        self, thread_id: str, checkpoint_id: str, keys: list[WriteKey]
    ) -> None:
        """Delete the given writes of one root checkpoint."""


class SqliteJanitor(CheckpointJanitor):
    """For ``AsyncSqliteSaver`` (tables ``checkpoints`` and ``writes``; JSON metadata)."""

    _RUN_CHECKPOINTS = (
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? "
        "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?"
    )

    def _parts(self) -> tuple[Any, Any]:
        saver: Any = self._saver
        return saver.conn, saver.lock

    async def _write_keys(self, thread_id: str, checkpoint_id: str) -> set[WriteKey]:
        conn, lock = self._parts()
        async with (
            lock,
            conn.execute(
                "SELECT task_id, idx FROM writes WHERE thread_id = ? AND checkpoint_ns = '' "
                "AND checkpoint_id = ?",
                (thread_id, checkpoint_id),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return {(str(r[0]), int(r[1])) for r in rows}

    async def _delete_run(self, thread_id: str, run_id: str) -> None:
        conn, lock = self._parts()
        async with lock:
            await conn.execute(
                f"DELETE FROM writes WHERE thread_id = ? AND checkpoint_id IN "
                f"({self._RUN_CHECKPOINTS})",
                (thread_id, thread_id, run_id),
            )
            await conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? "
                "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?",
                (thread_id, run_id),
            )
            await conn.commit()

    async def _delete_writes(
        self, thread_id: str, checkpoint_id: str, keys: list[WriteKey]
    ) -> None:
        conn, lock = self._parts()
        async with lock:
            await conn.executemany(
                "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = '' "
                "AND checkpoint_id = ? AND task_id = ? AND idx = ?",
                [(thread_id, checkpoint_id, task, idx) for task, idx in keys],
            )
            await conn.commit()


class PostgresJanitor(CheckpointJanitor):
    """For ``AsyncPostgresSaver`` (``checkpoints`` with JSONB metadata, ``checkpoint_writes``).

    Channel blobs are left alone: versions are unique, so the run's are merely unused.
    """

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        saver: Any = self._saver
        conn = saver.conn
        if hasattr(conn, "connection"):
            async with conn.connection() as pooled:
                yield pooled
        else:
            yield conn

    async def _write_keys(self, thread_id: str, checkpoint_id: str) -> set[WriteKey]:
        async with self._connection() as conn:
            cursor = await conn.execute(
                "SELECT task_id, idx FROM checkpoint_writes WHERE thread_id = %s "
                "AND checkpoint_ns = '' AND checkpoint_id = %s",
                (thread_id, checkpoint_id),
            )
            rows = await cursor.fetchall()
        return {(str(_field(r, "task_id", 0)), int(_field(r, "idx", 1))) for r in rows}

    async def _delete_run(self, thread_id: str, run_id: str) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_id IN "
                "(SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s "
                "AND metadata->>'run_id' = %s)",
                (thread_id, thread_id, run_id),
            )
            await conn.execute(
                "DELETE FROM checkpoints WHERE thread_id = %s AND metadata->>'run_id' = %s",
                (thread_id, run_id),
            )

    async def _delete_writes(
        self, thread_id: str, checkpoint_id: str, keys: list[WriteKey]
    ) -> None:
        async with self._connection() as conn, conn.transaction():
            for task, idx in keys:
                await conn.execute(
                    "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = '' "
                    "AND checkpoint_id = %s AND task_id = %s AND idx = %s",
                    (thread_id, checkpoint_id, task, idx),
                )


def _field(row: Any, name: str, index: int) -> Any:
    # The saver's pool hands out dict rows; a bare connection may give tuples.
    return row[name] if isinstance(row, dict) else row[index]


def janitor_for(saver: BaseCheckpointSaver[Any]) -> CheckpointJanitor:
    """The janitor for the saver the backends opened."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    if isinstance(saver, AsyncSqliteSaver):
        return SqliteJanitor(saver)
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    if isinstance(saver, AsyncPostgresSaver):
        return PostgresJanitor(saver)
    raise ConfigurationError(
        f"rollback is not supported for checkpointer {type(saver).__name__}",
        checkpointer=type(saver).__name__,
    )
