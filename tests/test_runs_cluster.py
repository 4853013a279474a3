"""Durable runs in a cluster: two API replicas and two workers on PostgreSQL and Redis.

Four real processes share one fresh PostgreSQL database (runs and threads, checkpoints,
app data, world memory, users) and one Redis server (run events, rate limits) and one
``SCRIBE_JWT_SECRET``: two ``scribe serve`` processes on their own loopback ports that run
no workers (``SCRIBE_WORKER_CONCURRENCY=0``) and two ``scribe worker --concurrency 1``.

Local Qdrant allows one process per directory and there is no Qdrant server here, so every
process has its own ``SCRIBE_DATA_DIR`` and with it its own local Qdrant: passages indexed
by a worker are visible to that worker only (a run reclaimed from a dead worker does not
see the passages the dead one indexed). Every other store is shared.

Redis isolation: the application's key prefix is not a setting, so the processes use the
default one in the database the ``redis_url`` fixture flushes before and after each test.

The first scenario SIGKILLs the worker executing a run in the middle of chapter 2; the
other worker reclaims the run once its lease expired and finishes it, while a client
follows the run's stream through the other API replica. The second queues several runs
through both replicas and checks they are spread over both workers, each run executed once.
The database is migrated once before the processes start, as a deployment would (LangGraph's
checkpointer setup is not safe from several processes at once); a third test starts four
processes migrating one empty database at the same moment (``memory.migrate`` lets them
take turns).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from alembic.script import ScriptDirectory
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.schema import StreamMode, StreamPart

from errors import NotFound
from graphs.novel import build_graph
from memory.app.sql import SqlAppStore
from memory.migrate import alembic_config
from memory.retrieval.chunking import split_passages
from memory.retrieval.qdrant import QdrantPassageIndex
from memory.runs.models import RunRecord
from memory.runs.store import RunStore
from server.backends import make_embedder
from server.settings import load_settings, to_libpq_url, to_sqlalchemy_url
from tests.services.base import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."
PASSWORD = "correct horse battery staple"
LEASE_S = 2.0
HEARTBEAT_S = 0.3
ENV = {
    "SCRIBE_WORDS_PER_CHAPTER": "150",
    # uvloop rounds sub-millisecond sleeps to nothing: stay at 1 ms or more per token.
    "SCRIBE_OFFLINE_TOKENS_PER_SECOND": "400",
    "SCRIBE_LEASE_S": str(LEASE_S),
    "SCRIBE_HEARTBEAT_S": str(HEARTBEAT_S),
    "SCRIBE_WORKER_POLL_S": "0.1",
    "SCRIBE_SSE_HEARTBEAT_S": "0.5",
    "SCRIBE_AUTH_RATE_LIMIT": "10000",
    # Four processes share one server: keep each one's checkpoint pool small.
    "SCRIBE_CHECKPOINT_POOL_SIZE": "4",
}
STREAM_MODES: list[StreamMode] = ["values", "updates", "custom", "messages-tuple"]
_APP_ENV_PREFIXES = ("SCRIBE_", "OPENAI_", "LANGGRAPH_", "LANGSMITH_", "LANGCHAIN_")
_APP_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "QDRANT_URL", "QDRANT_API_KEY", "NEO4J_URL")
_WORKER_UP = re.compile(r"^worker (\S+): up to", re.M)
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 60


def book(chapters: int) -> dict[str, Any]:
    """A graph input for a short book."""
    return {"premise": PREMISE, "chapters": chapters, "genre": "fantasy"}


# --- the processes --------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """One ``scribe`` process of the cluster, its log and its own data folder."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    url: str = ""
    """``http://127.0.0.1:PORT`` of an API process."""
    worker_id: str = ""
    """The id a worker writes into the runs it claims."""

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def sigkill(self) -> None:
        """Die at once, like a crashed machine: no lease is handed back."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> None:
        """Ask the process to stop (it hands its runs back to the queue)."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        """Wait for a stop asked with :meth:`terminate`; SIGKILL when it takes too long."""
        try:
            self.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the process's log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class ClusterError(RuntimeError):
    """A process of the cluster did not start; the message carries its log."""


class Cluster:
    """Starts ``scribe serve`` and ``scribe worker`` processes sharing one environment."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self._root = root
        self._env = env
        self.procs: list[Proc] = []

    def _spawn(self, name: str, args: list[str], extra: dict[str, str], url: str = "") -> Proc:
        data_dir = self._root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self._root / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "server.cli", *args],
                cwd=ROOT,
                env={**self._env, **extra, "SCRIBE_DATA_DIR": str(data_dir)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log, data_dir, url=url)
        self.procs.append(proc)
        return proc

    def spawn_api(self, name: str) -> Proc:
        """Start ``scribe serve`` on a free port, running no workers (not yet ready)."""
        port = free_port()
        return self._spawn(
            name,
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            {"SCRIBE_WORKER_CONCURRENCY": "0"},
            url=f"http://127.0.0.1:{port}",
        )

    def spawn_worker(self, name: str) -> Proc:
        """Start ``scribe worker --concurrency 1`` (not yet ready)."""
        return self._spawn(name, ["worker", "--concurrency", "1"], {})

    def ready_api(self, proc: Proc, deadline: float) -> Proc:
        """Wait until the API answers ``/health`` (uvicorn answers once startup is done)."""
        with httpx.Client(base_url=proc.url, timeout=5) as http:
            while True:
                self._check_alive(proc, deadline)
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/health").status_code == 200:
                        return proc
                time.sleep(0.1)

    def ready_worker(self, proc: Proc, deadline: float) -> Proc:
        """Wait for the worker's start line; returns the process with its worker id."""
        while True:
            self._check_alive(proc, deadline)
            found = _WORKER_UP.search(proc.log.read_text(errors="replace"))
            if found:
                worker = Proc(proc.name, proc.popen, proc.log, proc.data_dir, worker_id=found[1])
                assert f":{proc.popen.pid}:" in worker.worker_id, worker.worker_id
                return worker
            time.sleep(0.1)

    @staticmethod
    def _check_alive(proc: Proc, deadline: float) -> None:
        if not proc.alive:
            raise ClusterError(
                f"{proc.name} exited with {proc.popen.returncode} while starting:\n{proc.tail()}"
            )
        if time.monotonic() > deadline:
            raise ClusterError(f"{proc.name} did not start in time:\n{proc.tail()}")

    def stop(self, proc: Proc) -> None:
        """Stop one process gracefully."""
        proc.terminate()
        proc.reap()

    def stop_all(self) -> None:
        """Stop every process still running: workers first (they hand runs back)."""
        order = sorted(self.procs, key=lambda p: p.url != "")
        for proc in order:
            proc.terminate()
        for proc in order:
            proc.reap()

    def logs(self) -> str:
        """The tail of every process's log, for a failure report."""
        return "".join(
            f"\n----- {p.name} (pid {p.popen.pid}, exit {p.popen.poll()}) -----\n{p.tail()}\n"
            for p in self.procs
        )


@dataclass(frozen=True)
class Stack:
    """The running cluster: API processes ``a``/``b``, workers ``w1``/``w2``, the shared
    database URL and a user's bearer token (registered through ``a``)."""

    cluster: Cluster
    a: Proc
    b: Proc
    w1: Proc
    w2: Proc
    database_url: str
    token: str = field(repr=False)

    @property
    def workers(self) -> tuple[Proc, Proc]:
        """Both workers."""
        return self.w1, self.w2

    def worker(self, worker_id: str | None) -> Proc:
        """The worker process that wrote ``worker_id``."""
        for proc in self.workers:
            if proc.worker_id == worker_id:
                return proc
        raise AssertionError(f"no worker of this cluster has id {worker_id!r}")

    def client(self, api: Proc) -> LangGraphClient:
        """The official SDK client on one API process, as the registered user."""
        return get_client(
            url=api.url, headers={"Authorization": f"Bearer {self.token}"}, api_key=None
        )


def _child_env(database_url: str, redis_url: str) -> dict[str, str]:
    """This process's environment without application settings, plus the cluster's."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("SCRIBE_TEST_")
        or not (name.startswith(_APP_ENV_PREFIXES) or name in _APP_ENV_NAMES)
    }
    return {
        **env,
        **ENV,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SCRIBE_JWT_SECRET": secrets.token_urlsafe(48),
    }


def _register(url: str, email: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:
        registered = http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        login = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token: str = login.json()["access_token"]
        return token


def _print_logs(request: pytest.FixtureRequest, text: str) -> None:
    """Write the logs to the terminal: teardown output of a failed test is not shown."""
    capman: Any = request.config.pluginmanager.getplugin("capturemanager")
    header = f"\n===== process logs of {request.node.nodeid} =====\n"
    if capman is None:
        sys.stderr.write(header + text)
        return
    with capman.global_and_fixture_disabled():
        sys.stderr.write(header + text)
        sys.stderr.flush()


@pytest.fixture
async def migrated_url(fresh_postgres_url: str) -> str:
    """A fresh database with every table, the checkpointer's included.

    Migrated once before the processes start, as a deployment would: LangGraph's
    checkpointer ``setup()`` is not safe to run from several processes at once on an
    empty database (two may insert the same migration version).
    """
    store = RunStore.from_url(to_sqlalchemy_url(fresh_postgres_url))
    try:
        await store.setup()
    finally:
        await store.close()
    async with AsyncPostgresSaver.from_conn_string(to_libpq_url(fresh_postgres_url)) as saver:
        await saver.setup()
    return fresh_postgres_url


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_url: str, redis_url: str
) -> Iterator[Stack]:
    """Two API processes and two workers on one database; all stopped afterwards (their
    logs are printed when the test failed)."""
    cluster = Cluster(tmp_path, _child_env(migrated_url, redis_url))
    failed_before = request.session.testsfailed
    try:
        # All four at once, as replicas of a deployment start.
        spawned = (
            cluster.spawn_api("api-a"),
            cluster.spawn_api("api-b"),
            cluster.spawn_worker("worker-1"),
            cluster.spawn_worker("worker-2"),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        a = cluster.ready_api(spawned[0], deadline)
        b = cluster.ready_api(spawned[1], deadline)
        w1 = cluster.ready_worker(spawned[2], deadline)
        w2 = cluster.ready_worker(spawned[3], deadline)
        token = _register(a.url, f"ada-{uuid.uuid4().hex[:8]}@example.com")
        yield Stack(cluster, a, b, w1, w2, migrated_url, token)
    finally:
        cluster.stop_all()
        if request.session.testsfailed > failed_before:
            _print_logs(request, cluster.logs())


@pytest.fixture
async def runs(stack: Stack) -> AsyncIterator[RunStore]:
    """The shared run queue, read directly (attempts and worker ids are not in the API)."""
    store = RunStore.from_url(to_sqlalchemy_url(stack.database_url))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def app(stack: Stack) -> AsyncIterator[SqlAppStore]:
    """The shared app store (chapters and their versions)."""
    store = SqlAppStore.from_url(to_sqlalchemy_url(stack.database_url))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def clients(stack: Stack) -> AsyncIterator[tuple[LangGraphClient, LangGraphClient]]:
    """SDK clients of the same user on API process ``a`` and on ``b``."""
    a, b = stack.client(stack.a), stack.client(stack.b)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


# --- reading the shared stores ----------------------------------------------------------


async def _chapters(app: SqlAppStore, novel_id: str) -> list[int]:
    try:
        return [c.number for c in await app.list_chapters(novel_id)]
    except NotFound:
        return []


async def _row(runs: RunStore, run_id: str) -> RunRecord:
    found = await runs.find_run(run_id)
    assert found is not None, f"run {run_id} is gone"
    return found


async def _commits(database_url: str, thread_id: str) -> dict[int, int]:
    """How often each chapter was committed, from the thread's checkpoint history."""
    commits: dict[int, int] = {}
    async with AsyncPostgresSaver.from_conn_string(to_libpq_url(database_url)) as saver:
        graph = build_graph(saver)
        async for state in graph.aget_state_history({"configurable": {"thread_id": thread_id}}):
            if state.next == ("worldsmith_update",):  # right after commit_chapter
                chapter = int(state.values["chapter"])
                commits[chapter] = commits.get(chapter, 0) + 1
    return commits


async def _passages(data_dir: Path, novel_id: str, chapters: range) -> dict[int, int]:
    """Passages per chapter in one process's local Qdrant (the process must be stopped)."""
    embedder = make_embedder(load_settings(data_dir=data_dir))
    index = QdrantPassageIndex.from_path(data_dir / "qdrant", embedder)
    try:
        await index.setup()
        return {n: await index.count(novel_id, n) for n in chapters}
    finally:
        await index.close()
        await embedder.close()


async def _expected_passages(app: SqlAppStore, novel_id: str, number: int) -> int:
    return len(split_passages((await app.get_chapter(novel_id, number)).text))


def _data(part: StreamPart) -> Any:
    return part.data


def _committed(parts: list[StreamPart]) -> list[int]:
    """Chapters the ``committed`` progress events announce, in stream order."""
    return [
        int(_data(p)["chapter"])
        for p in parts
        if p.event == "custom"
        and isinstance(_data(p), dict)
        and _data(p).get("agent") == "writer"
        and _data(p).get("step") == "committed"
    ]


def _redis_ms(event_id: str | None) -> int:
    """The server time (ms since the epoch) a Redis stream id was handed out at."""
    assert event_id, "an event from Redis carries its stream id"
    return int(event_id.split("-", 1)[0])


async def _collect(stream: AsyncIterator[StreamPart]) -> list[StreamPart]:
    return [part async for part in stream]


@contextlib.asynccontextmanager
async def _background(
    work: Coroutine[Any, Any, list[StreamPart]],
) -> AsyncIterator[asyncio.Task[list[StreamPart]]]:
    """Run ``work`` as a task for the block; cancelled when the block fails before it ends."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- replicas starting together -------------------------------------------------------

_MIGRATE = """
import asyncio, sys
from memory.db import make_engine
from memory.migrate import upgrade_to_head

async def main(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect():
            pass
        print("ready", flush=True)
        sys.stdin.readline()
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()

asyncio.run(main(sys.argv[1]))
"""


def test_processes_migrate_one_empty_database_together(fresh_postgres_url: str) -> None:
    url = to_sqlalchemy_url(fresh_postgres_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == b"ready", "a process failed to start"
        # Released together, so their migrations overlap as far as they can.
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120)[0].decode(errors="replace") for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0], "\n".join(outputs)
    with psycopg.connect(fresh_postgres_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    assert versions == [ScriptDirectory.from_config(alembic_config()).get_current_head()]


# --- a worker dies mid-chapter ----------------------------------------------------------


async def test_killed_worker_run_completes_on_the_other(
    stack: Stack,
    runs: RunStore,
    app: SqlAppStore,
    clients: tuple[LangGraphClient, LangGraphClient],
) -> None:
    a, b = clients
    thread = await a.threads.create(metadata={"shelf": "cluster"})
    tid = thread["thread_id"]
    run = await a.runs.create(tid, "novel", input=book(3), stream_mode=STREAM_MODES)
    rid = run["run_id"]
    # Followed through the other replica from the start: events cross processes by Redis.
    async with _background(_collect(b.runs.join_stream(tid, rid))) as live:
        # A client that leaves after a few events, to rejoin later with Last-Event-ID.
        first: list[StreamPart] = []
        partial: Any = b.runs.join_stream(tid, rid)
        async with contextlib.aclosing(partial):
            async for part in partial:
                first.append(part)
                if len(first) == 10:
                    break
        assert first[0].event == "metadata"
        assert _data(first[0]) == {"run_id": rid, "attempt": 1}

        # Kill the worker that executes the run while it is in chapter 2.
        async with asyncio.timeout(120):
            # Polling the shared queue is the point: the run is claimed in another process.
            while (row := await _row(runs, rid)).worker_id is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            owner = stack.worker(row.worker_id)
            other = next(w for w in stack.workers if w is not owner)
            while True:
                assert owner.alive, "the owning worker died on its own"
                state: Any = await b.threads.get_state(tid)
                if state["values"].get("chapter") == 2 and await _chapters(app, tid) == [1]:
                    break
                await asyncio.sleep(0.05)
        chapter_one = await app.get_chapter(tid, 1)
        owner.sigkill()
        killed_at_ms = int(time.time() * 1000)
        killed = await _row(runs, rid)
        assert killed.status == "running" and killed.attempts == 1
        assert killed.worker_id == owner.worker_id
        assert killed.lease_expires_at is not None
        assert await _chapters(app, tid) == [1], "killed mid-chapter 2, before its commit"
        assert other.alive

        last_id = first[-1].id
        assert last_id is not None
        async with asyncio.timeout(180):
            rest = await _collect(b.runs.join_stream(tid, rid, last_event_id=last_id))
            parts = await live

    # Ended well, on the other worker, after exactly one reclaim.
    finished = await _row(runs, rid)
    assert finished.status == "success", finished.error
    assert finished.attempts == 2
    assert finished.worker_id == other.worker_id
    assert (await b.runs.get(tid, rid))["status"] == "success"
    got: Any = await b.threads.get(tid)
    assert got["status"] == "idle"
    assert got["values"]["accepted"] == 3 and got["values"]["done"] is True

    # Every chapter once; the one written before the kill untouched.
    chapters = await app.list_chapters(tid)
    assert [c.number for c in chapters] == [1, 2, 3]
    assert chapters[0].text == chapter_one.text
    assert chapters[0].current_version_id == chapter_one.current_version_id
    assert await _commits(stack.database_url, tid) == {1: 1, 2: 1, 3: 1}

    # The stream followed on B: both attempts, the reclaim only after the lease expired.
    events = [p.event for p in parts]
    assert events[0] == "metadata" and events[-1] == "end"
    assert events.count("end") == 1
    assert all(p.id for p in parts), "every event came from Redis (none made up)"
    metadata = [(i, _data(p)) for i, p in enumerate(parts) if p.event == "metadata"]
    assert [m for _, m in metadata] == [
        {"run_id": rid, "attempt": 1},
        {"run_id": rid, "attempt": 2},
    ]
    reclaim = metadata[1][0]
    lease_ms = killed.lease_expires_at.timestamp() * 1000
    assert _redis_ms(parts[reclaim].id) >= lease_ms - 5, "reclaimed before the lease expired"
    assert _redis_ms(parts[reclaim].id) >= killed_at_ms - 5
    assert _committed(parts[:reclaim]) == [1], "attempt 1 committed chapter 1 only"
    assert _committed(parts[reclaim:]) == [2, 3], "attempt 2 did not commit chapter 1 again"
    attempts_seen = {_data(p)[1].get("run_attempt") for p in parts if p.event == "messages"}
    assert attempts_seen == {1, 2}, "model tokens streamed from both workers' attempts"
    final = [_data(p) for p in parts if p.event == "values"][-1]
    assert final["accepted"] == 3 and final["done"] is True

    # The rejoin picked up exactly after the last event it had, across the reclaim.
    assert rest[-1].event == "end"
    assert [(p.event, p.id) for p in first + rest] == [(p.event, p.id) for p in parts]
    replay = await _collect(b.runs.join_stream(tid, rid))
    assert [(p.event, p.id) for p in replay] == [(p.event, p.id) for p in parts]

    # Passages: each process has its own local Qdrant, so each worker holds what it indexed.
    stack.cluster.stop(other)
    indexed_by_owner = await _passages(owner.data_dir, tid, range(1, 4))
    indexed_by_other = await _passages(other.data_dir, tid, range(1, 4))
    expected = {n: await _expected_passages(app, tid, n) for n in range(1, 4)}
    assert indexed_by_owner == {1: expected[1], 2: 0, 3: 0}
    assert indexed_by_other == {1: 0, 2: expected[2], 3: expected[3]}


# --- many runs, both replicas, both workers -------------------------------------------


async def test_runs_from_both_replicas_spread_over_both_workers(
    stack: Stack,
    runs: RunStore,
    app: SqlAppStore,
    clients: tuple[LangGraphClient, LangGraphClient],
) -> None:
    a, b = clients
    queued: list[tuple[str, str]] = []
    for n in range(4):
        client = (a, b)[n % 2]
        thread = await client.threads.create(metadata={"n": n})
        run = await client.runs.create(thread["thread_id"], "novel", input=book(2))
        queued.append((thread["thread_id"], run["run_id"]))

    async with asyncio.timeout(240):
        # Each joined through the replica that did not create it.
        outputs = await asyncio.gather(
            *((b, a)[n % 2].runs.join(tid, rid) for n, (tid, rid) in enumerate(queued))
        )
    for values in outputs:
        assert isinstance(values, dict)
        assert values["done"] is True and values["accepted"] == 2, json.dumps(values)[:500]

    rows = [await _row(runs, rid) for _, rid in queued]
    assert [r.status for r in rows] == ["success"] * 4
    assert [r.attempts for r in rows] == [1] * 4, "no run was executed twice"
    assert {r.worker_id for r in rows} == {w.worker_id for w in stack.workers}
    for n, (tid, rid) in enumerate(queued):
        assert (await (a, b)[n % 2].runs.get(tid, rid))["status"] == "success"
        assert (await (b, a)[n % 2].threads.get(tid))["status"] == "idle"
        assert await _chapters(app, tid) == [1, 2]
        assert await _commits(stack.database_url, tid) == {1: 1, 2: 1}

    # Only the worker that executed a run indexed its passages (its own local Qdrant).
    for worker in stack.workers:
        stack.cluster.stop(worker)
    for tid, rid in queued:
        row = await _row(runs, rid)
        expected = {n: await _expected_passages(app, tid, n) for n in (1, 2)}
        for worker in stack.workers:
            found = await _passages(worker.data_dir, tid, range(1, 3))
            mine = worker.worker_id == row.worker_id
            assert found == (expected if mine else {1: 0, 2: 0}), (worker.name, tid)
