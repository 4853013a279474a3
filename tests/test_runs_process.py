"""A ``scribe worker`` process killed with SIGKILL mid-run; another process finishes the run.

The test process only queues the run and reads the database: the workers open the
backends themselves (local Qdrant allows one process at a time).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from errors import NotFound
from graphs.novel import build_graph
from memory.app.sql import SqlAppStore
from memory.runs.models import RunKwargs, RunRecord
from memory.runs.store import RunStore
from server.runs.service import ASSISTANT_ID
from server.settings import Settings, load_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."
ENV = {
    "SCRIBE_WORDS_PER_CHAPTER": "150",
    "SCRIBE_OFFLINE_TOKENS_PER_SECOND": "500",
    "SCRIBE_LEASE_S": "2",
    "SCRIBE_HEARTBEAT_S": "0.3",
    "SCRIBE_WORKER_POLL_S": "0.1",
}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Embedded settings shared by this process and the worker processes."""
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[RunStore]:
    """The run queue, migrated."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    opened = RunStore.from_url(settings.sql_url)
    await opened.setup()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def spawn(settings: Settings) -> Iterator[Any]:
    """Starts ``scribe worker`` processes; any still alive are stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (settings.data_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "worker", "--concurrency", "1"],
            cwd=ROOT,
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _chapters(app: SqlAppStore, novel_id: str) -> list[int]:
    try:
        return [c.number for c in await app.list_chapters(novel_id)]
    except NotFound:
        return []


async def _row(store: RunStore, run: RunRecord) -> RunRecord:
    found = await store.find_run(run.run_id)
    assert found is not None
    return found


async def test_sigkilled_worker_process(settings: Settings, store: RunStore, spawn: Any) -> None:
    thread_id, owner = str(uuid.uuid4()), str(uuid.uuid4())
    app = SqlAppStore.from_url(settings.sql_url)
    await app.setup()
    # The run goes straight into the queue, so the novel is recorded here as the run
    # service records it before it queues a book's first run.
    await app.create_novel(thread_id, PREMISE, 3, None, status="paused")
    run, _ = await store.create_run(
        run_id=str(uuid.uuid4()),
        thread_id=thread_id,
        owner_id=owner,
        assistant_id=ASSISTANT_ID,
        metadata={},
        kwargs=RunKwargs(input={"premise": PREMISE, "chapters": 3}),
        multitask_strategy="enqueue",
        if_not_exists="create",
    )
    try:
        first = spawn("first")
        async with asyncio.timeout(120):
            while await _chapters(app, thread_id) != [1]:
                assert first.poll() is None, "the first worker died on its own"
                await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed = await _row(store, run)
        assert killed.status == "running" and killed.attempts == 1
        assert await _chapters(app, thread_id) == [1], "killed mid-chapter 2"

        second = spawn("second")
        async with asyncio.timeout(180):
            while not (await _row(store, run)).finished:
                assert second.poll() is None, "the second worker died"
                await asyncio.sleep(0.1)
        finished = await _row(store, run)
        assert finished.status == "success", finished.error
        assert finished.attempts == 2
        assert finished.worker_id != killed.worker_id
        assert await _chapters(app, thread_id) == [1, 2, 3]
        assert (await store.get_thread(thread_id, owner)).status == "idle"
    finally:
        await app.close()

    commits: dict[int, int] = {}
    async with AsyncSqliteSaver.from_conn_string(str(settings.checkpoint_path)) as saver:
        graph = build_graph(saver)
        async for state in graph.aget_state_history({"configurable": {"thread_id": thread_id}}):
            if state.next == ("worldsmith_update",):  # right after commit_chapter
                chapter = int(state.values["chapter"])
                commits[chapter] = commits.get(chapter, 0) + 1
    assert commits == {1: 1, 2: 1, 3: 1}, "each chapter committed exactly once"
