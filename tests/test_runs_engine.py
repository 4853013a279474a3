"""The durable run engine: queue, leases, reclaim, cancellation, multitask strategies, events.

Core scenarios run on each combination of database (SQLite, Postgres) and event bus
(in-process, Redis Streams); the others run on the embedded default.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from errors import Conflict, InvalidInput, NotFound
from memory.redis import RedisService
from memory.runs.events import RunEvent
from memory.runs.models import RunKwargs, RunRecord
from server.backends import open_backends
from server.runs.service import ASSISTANT_ID, RunRequest, RunService
from server.runs.worker import Worker
from server.settings import Settings, load_settings

PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."
SLOW_TPS = 3000.0
"""Offline-model speed at which a three-chapter book takes a few seconds."""
MATRIX = ["sqlite-inproc", "sqlite-redis", "postgres-inproc", "postgres-redis"]


def book(chapters: int = 2, **extra: Any) -> dict[str, Any]:
    """A graph input for a short book."""
    return {"premise": PREMISE, "chapters": chapters, "genre": "fantasy", **extra}


@dataclass
class Engine:
    """An opened run service and the settings it was opened with."""

    service: RunService
    settings: Settings
    stack: AsyncExitStack
    owner: str

    async def worker(self, *, concurrency: int = 1, worker_id: str | None = None) -> Worker:
        """A started worker, stopped when the test ends."""
        worker = Worker(self.service.engine, concurrency=concurrency, worker_id=worker_id)
        self.stack.push_async_callback(worker.stop)
        await worker.start()
        return worker

    async def run(
        self,
        thread_id: str,
        *,
        input: dict[str, Any] | None = None,
        command: dict[str, Any] | None = None,
        stream_mode: tuple[str, ...] = ("values", "updates", "custom"),
        strategy: str = "enqueue",
        if_not_exists: str = "create",
        after_seconds: float = 0.0,
        owner: str | None = None,
    ) -> RunRecord:
        """Queue a run."""
        request = RunRequest(
            assistant_id=ASSISTANT_ID,
            kwargs=RunKwargs(input=input, command=command, stream_mode=stream_mode),
            metadata={"test": True},
            multitask_strategy=strategy,  # type: ignore[arg-type]
            if_not_exists=if_not_exists,  # type: ignore[arg-type]
            after_seconds=after_seconds,
        )
        return await self.service.create_run(owner or self.owner, thread_id, request)

    async def join(self, run: RunRecord, within: float = 90.0) -> RunRecord | None:
        """Wait for the run to end (None: it was deleted by a rollback)."""
        async with asyncio.timeout(within):
            return await self.service.wait_finished(self.owner, run.thread_id, run.run_id)

    async def events(
        self, run: RunRecord, *, after: str | None = None, within: float = 90.0
    ) -> list[RunEvent]:
        """Every event of the run after ``after``, up to and including ``end``."""
        found: list[RunEvent] = []
        async with asyncio.timeout(within):
            async for event in self.service.events(
                self.owner, run.thread_id, run.run_id, last_event_id=after
            ):
                if event is not None:
                    found.append(event)
        return found

    async def chapters(self, thread_id: str) -> list[int]:
        """Numbers of the novel's accepted chapters."""
        try:
            return [c.number for c in await self.service.backends.store.list_chapters(thread_id)]
        except NotFound:
            return []


OpenEngine = Callable[..., Awaitable[Engine]]


def _settings(data_dir: Path, database_url: str | None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "words_per_chapter": 150,
        "lease_s": 1.0,
        "heartbeat_s": 0.2,
        "worker_poll_s": 0.05,
        "sse_heartbeat_s": 0.5,
        **extra,
    }
    if database_url is not None:
        values["database_url"] = database_url
    return load_settings(**values)


@asynccontextmanager
async def _engine(
    settings: Settings, redis_url: str | None, redis_prefix: str | None
) -> AsyncIterator[Engine]:
    async with AsyncExitStack() as stack:
        backends = await stack.enter_async_context(open_backends(settings))
        redis: RedisService | None = None
        if redis_url is not None:
            redis = RedisService.from_url(redis_url, prefix=redis_prefix or "scribe-test:")
            stack.push_async_callback(redis.close)
            await redis.start()
        service = await RunService.open(settings, backends, redis, stack)
        yield Engine(service, settings, stack, str(uuid.uuid4()))


async def _factory(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> AsyncIterator[OpenEngine]:
    db, bus = kind.split("-")
    url = request.getfixturevalue("fresh_postgres_url") if db == "postgres" else None
    redis_url = request.getfixturevalue("redis_url") if bus == "redis" else None
    prefix = request.getfixturevalue("redis_key_prefix") if bus == "redis" else None
    async with AsyncExitStack() as outer:
        count = 0

        async def make(**extra: Any) -> Engine:
            nonlocal count
            count += 1
            settings = _settings(tmp_path / f"data{count}", url, **extra)
            return await outer.enter_async_context(_engine(settings, redis_url, prefix))

        yield make


@pytest.fixture(params=MATRIX)
async def open_engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenEngine]:
    """Opens engines on one database and bus of the matrix."""
    async for make in _factory(request, tmp_path, request.param):
        yield make


@pytest.fixture
async def open_embedded(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenEngine]:
    """Opens engines on the embedded default (SQLite, in-process events)."""
    async for make in _factory(request, tmp_path, "sqlite-inproc"):
        yield make


async def _eventually(check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    # Polls the database: the engine's progress is only observable there.
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _data(event: RunEvent) -> Any:
    return json.loads(event.data)


# --- runs to the end ----------------------------------------------------------------------


async def test_a_run_writes_the_book_and_streams_its_events(open_engine: OpenEngine) -> None:
    engine = await open_engine()
    await engine.worker()
    thread_id = str(uuid.uuid4())
    run = await engine.run(thread_id, input=book(2))
    assert run.status == "pending"

    finished = await engine.join(run)
    assert finished is not None
    assert finished.status == "success"
    assert finished.attempts == 1
    assert await engine.chapters(thread_id) == [1, 2]
    thread = await engine.service.get_thread(engine.owner, thread_id)
    assert thread.thread.status == "idle"
    assert thread.snapshot.values["done"] is True
    novel = await engine.service.backends.store.get_novel(thread_id)
    assert novel.status == "completed"

    events = await engine.events(finished)
    names = [e.event for e in events]
    assert names[0] == "metadata"
    assert _data(events[0]) == {"run_id": run.run_id, "attempt": 1}
    assert names[-1] == "end"
    assert names.count("end") == 1
    assert {"values", "updates", "custom"} <= set(names)
    last_values = [_data(e) for e in events if e.event == "values"][-1]
    assert last_values["accepted"] == 2
    committed = [e for e in events if e.event == "updates" and "commit_chapter" in _data(e)]
    assert len(committed) == 2
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids), "every event has its own id"

    # Replay after a given id yields exactly the rest.
    middle = events[len(events) // 2]
    assert [e.id for e in await engine.events(finished, after=middle.id)] == [
        e.id for e in events[len(events) // 2 + 1 :]
    ]
    # The stream of a finished run replays to its end again.
    assert [e.id for e in await engine.events(finished)] == ids


async def test_interrupt_then_resume_with_a_command(open_engine: OpenEngine) -> None:
    engine = await open_engine()
    await engine.worker()
    thread_id = str(uuid.uuid4())
    first = await engine.join(await engine.run(thread_id, input=book(1, pause_after=["outline"])))
    assert first is not None
    assert first.status == "interrupted"
    view = await engine.service.get_thread(engine.owner, thread_id)
    assert view.thread.status == "interrupted"
    assert view.snapshot.interrupts[0].value["gate"] == "outline"
    output = await engine.service.output(engine.owner, thread_id, first)
    assert output["__interrupt__"][0]["value"]["gate"] == "outline"
    assert (await engine.service.backends.store.get_novel(thread_id)).status == "paused"

    second = await engine.join(
        await engine.run(thread_id, command={"resume": {"action": "approve"}})
    )
    assert second is not None
    assert second.status == "success"
    assert await engine.chapters(thread_id) == [1]
    assert (await engine.service.get_thread(engine.owner, thread_id)).thread.status == "idle"


async def test_a_failing_run_reports_its_error(open_embedded: OpenEngine) -> None:
    engine = await open_embedded()
    thread_id = str(uuid.uuid4())
    failing = await engine.run(thread_id, input=book(1))
    # The novel's record vanishes before a worker takes the run up: the graph fails.
    await engine.service.backends.store.delete_novel(thread_id)
    await engine.worker()
    finished = await engine.join(failing)
    assert finished is not None
    assert finished.status == "error"
    assert finished.error is not None and "NotFound" in finished.error
    assert (await engine.service.get_thread(engine.owner, thread_id)).thread.status == "error"
    events = await engine.events(finished)
    assert [e.event for e in events][-2:] == ["error", "end"]
    assert _data(events[-2])["error"] == "NotFound"
    output = await engine.service.output(engine.owner, thread_id, finished)
    assert output["__error__"]["error"] == "NotFound"
    assert "is not recorded" in output["__error__"]["message"]


async def test_a_run_records_its_novel_once_with_the_validated_request(
    open_embedded: OpenEngine,
) -> None:
    engine = await open_embedded()
    thread_id = str(uuid.uuid4())
    run = await engine.run(thread_id, input={**book(1), "premise": f"  {PREMISE}  "})
    assert run.kwargs.input is not None
    assert run.kwargs.input["premise"] == PREMISE and run.kwargs.input["language"] == "en"
    novel = await engine.service.backends.store.get_novel(thread_id)
    assert (novel.premise, novel.chapters, novel.status) == (PREMISE, 1, "paused")
    with pytest.raises(InvalidInput, match="max_revisions"):
        await engine.run(str(uuid.uuid4()), input=book(1, max_revisions=-1))
    with pytest.raises(NotFound):  # no thread, and none created: no novel left behind
        await engine.run(str(uuid.uuid4()), input=book(1), if_not_exists="reject")
    assert [n.id for n in await engine.service.backends.store.list_novels()] == [thread_id]


async def test_bad_answers_to_a_gate_change_nothing(open_embedded: OpenEngine) -> None:
    engine = await open_embedded()
    thread_id = str(uuid.uuid4())
    await engine.worker()
    paused = book(1, pause_after=["outline", "chapter"])
    await engine.join(await engine.run(thread_id, input=paused))
    before = await engine.service.get_state(engine.owner, thread_id)

    # Refused when queued: the outline gate would reject it.
    with pytest.raises(InvalidInput) as caught:
        await engine.run(thread_id, command={"resume": {"action": "dance"}})
    assert caught.value.data["field"] == "command.resume"
    assert (await engine.service.get_state(engine.owner, thread_id)).config == before.config

    # Valid for the outline when queued, but it runs after the approval, at the chapter
    # gate, which would reject it: the run fails and the thread is left as it was.
    outline = [{"number": 1, "title": "Keys", "summary": "Ada finds the door."}]
    approve = await engine.run(thread_id, command={"resume": {"action": "approve"}})
    late = await engine.run(thread_id, command={"resume": {"action": "edit", "outline": outline}})
    assert (await engine.join(approve)) is not None
    refused = await engine.join(late)
    assert refused is not None and refused.status == "error"
    assert refused.error is not None and refused.error.startswith("InvalidInput: ")
    view = await engine.service.get_thread(engine.owner, thread_id)
    assert view.thread.status == "interrupted"
    assert view.snapshot.interrupts[0].value["gate"] == "chapter"

    done = await engine.join(await engine.run(thread_id, command={"resume": {"action": "approve"}}))
    assert done is not None and done.status == "success"
    assert await engine.chapters(thread_id) == [1]


async def test_run_timeout(open_embedded: OpenEngine) -> None:
    engine = await open_embedded(offline_tokens_per_second=SLOW_TPS, run_timeout_s=0.5)
    await engine.worker()
    finished = await engine.join(await engine.run(str(uuid.uuid4()), input=book(3)))
    assert finished is not None
    assert finished.status == "timeout"
    events = await engine.events(finished)
    assert [e.event for e in events][-2:] == ["error", "end"]
    assert _data(events[-2])["error"] == "TimeoutError"


# --- the queue --------------------------------------------------------------------------


async def test_claims_respect_thread_order_and_leases(open_engine: OpenEngine) -> None:
    engine = await open_engine()
    store = engine.service.store
    thread_a, thread_b = str(uuid.uuid4()), str(uuid.uuid4())
    a1 = await engine.run(thread_a, input=book(1))
    a2 = await engine.run(thread_a, input=book(1))
    b1 = await engine.run(thread_b, input=book(1))

    first = await store.claim("w1", lease_s=30.0)
    assert first is not None and first.run_id == a1.run_id
    assert first.status == "running" and first.worker_id == "w1" and first.attempts == 1
    assert (await store.get_thread(thread_a, engine.owner)).status == "busy"
    # a2 waits for a1 (same thread); b1 is free.
    second = await store.claim("w2", lease_s=30.0)
    assert second is not None and second.run_id == b1.run_id
    assert await store.claim("w3", lease_s=30.0) is None

    beat = await store.heartbeat(a1.run_id, "w1", 30.0)
    assert beat.owned and beat.cancel_action is None
    assert not (await store.heartbeat(a1.run_id, "w2", 30.0)).owned

    assert await store.finish(a1.run_id, "w1", "success", "idle")
    assert not await store.finish(a1.run_id, "w1", "success", "idle"), "finished only once"
    third = await store.claim("w3", lease_s=30.0)
    assert third is not None and third.run_id == a2.run_id


async def test_an_expired_lease_is_reclaimed(open_engine: OpenEngine) -> None:
    engine = await open_engine()
    store = engine.service.store
    run = await engine.run(str(uuid.uuid4()), input=book(1))
    claimed = await store.claim("dead-worker", lease_s=0.3)
    assert claimed is not None
    assert await store.claim("other", lease_s=5.0) is None
    await asyncio.sleep(0.4)
    reclaimed = await store.claim("other", lease_s=5.0)
    assert reclaimed is not None
    assert reclaimed.run_id == run.run_id
    assert reclaimed.worker_id == "other"
    assert reclaimed.attempts == 2
    # The dead worker can no longer touch it.
    assert not (await store.heartbeat(run.run_id, "dead-worker", 5.0)).owned
    assert not await store.finish(run.run_id, "dead-worker", "error", "error")


async def test_after_seconds_delays_the_start(open_embedded: OpenEngine) -> None:
    engine = await open_embedded()
    store = engine.service.store
    run = await engine.run(str(uuid.uuid4()), input=book(1), after_seconds=0.6)
    assert await store.claim("w", lease_s=5.0) is None
    await asyncio.sleep(0.7)
    claimed = await store.claim("w", lease_s=5.0)
    assert claimed is not None and claimed.run_id == run.run_id


async def test_unknown_threads_and_other_owners(open_embedded: OpenEngine) -> None:
    engine = await open_embedded()
    thread_id = str(uuid.uuid4())
    with pytest.raises(NotFound):
        await engine.run(thread_id, input=book(1), if_not_exists="reject")
    run = await engine.run(thread_id, input=book(1), if_not_exists="create")
    stranger = str(uuid.uuid4())
    with pytest.raises(NotFound):
        await engine.run(thread_id, input=book(1), owner=stranger)
    with pytest.raises(NotFound):
        await engine.service.get_thread(stranger, thread_id)
    with pytest.raises(NotFound):
        await engine.service.get_run(stranger, thread_id, run.run_id)
    with pytest.raises(NotFound):
        await engine.service.cancel_run(stranger, thread_id, run.run_id)
    with pytest.raises(NotFound):
        await engine.service.get_state(stranger, thread_id)
    assert await engine.service.search_threads(stranger) == []


async def test_runs_ask_only_for_what_the_graph_has(open_embedded: OpenEngine) -> None:
    engine = await open_embedded()
    service = engine.service
    for kwargs, field in [
        (RunKwargs(input=book(1), stream_mode=("events",)), "stream_mode"),
        (RunKwargs(input=book(1), interrupt_before=("nowhere",)), "interrupt_before"),
        (RunKwargs(input={"premise": PREMISE, "chapters": 1, "mood": "x"}), "input"),
        (RunKwargs(input={"premise": "", "chapters": 1}), "premise"),
        (RunKwargs(input=book(1), command={"resume": 1}), "command"),
        (RunKwargs(command={"jump": "writer"}), "command"),
    ]:
        request = RunRequest(ASSISTANT_ID, kwargs, {})
        with pytest.raises(InvalidInput) as caught:
            await service.create_run(engine.owner, str(uuid.uuid4()), request)
        assert caught.value.data.get("field") == field, kwargs


# --- crash and reclaim --------------------------------------------------------------------


async def test_a_killed_worker_s_run_is_finished_by_another(open_engine: OpenEngine) -> None:
    engine = await open_engine(offline_tokens_per_second=SLOW_TPS)
    first = await engine.worker(worker_id="first")
    thread_id = str(uuid.uuid4())
    run = await engine.run(thread_id, input=book(3))

    async def drafting_chapter_two() -> bool:
        return await engine.chapters(thread_id) == [1]

    await _eventually(drafting_chapter_two)
    await asyncio.sleep(0.3)  # well into chapter 2
    await first.kill()
    row = await engine.service.store.find_run(run.run_id)
    assert row is not None and row.status == "running" and row.worker_id == "first"
    assert await engine.chapters(thread_id) == [1], "killed mid-chapter 2"

    await engine.worker(worker_id="second")
    finished = await engine.join(run)
    assert finished is not None
    assert finished.status == "success"
    assert finished.worker_id == "second"
    assert finished.attempts == 2
    assert await engine.chapters(thread_id) == [1, 2, 3]

    # Each chapter was committed exactly once on the thread's history.
    commits: dict[int, int] = {}
    async for state in engine.service.backends.graph.aget_state_history(
        {"configurable": {"thread_id": thread_id}}
    ):
        if state.next == ("worldsmith_update",):
            chapter = int(state.values["chapter"])
            commits[chapter] = commits.get(chapter, 0) + 1
    assert commits == {1: 1, 2: 1, 3: 1}

    events = await engine.events(finished)
    attempts = [_data(e)["attempt"] for e in events if e.event == "metadata"]
    assert attempts == [1, 2]
    assert events[-1].event == "end"


async def test_a_stopped_worker_hands_its_run_back(open_embedded: OpenEngine) -> None:
    engine = await open_embedded(offline_tokens_per_second=SLOW_TPS)
    first = await engine.worker()
    thread_id = str(uuid.uuid4())
    run = await engine.run(thread_id, input=book(2))

    async def started() -> bool:
        return await engine.chapters(thread_id) == [1]

    await _eventually(started)
    await first.stop()
    row = await engine.service.store.find_run(run.run_id)
    assert row is not None and row.status == "pending" and row.worker_id is None
    await engine.worker()
    finished = await engine.join(run)
    assert finished is not None and finished.status == "success"
    assert await engine.chapters(thread_id) == [1, 2]


# --- cancellation -----------------------------------------------------------------------


async def test_cancel_with_interrupt_keeps_the_progress(open_engine: OpenEngine) -> None:
    engine = await open_engine(offline_tokens_per_second=SLOW_TPS)
    await engine.worker()
    thread_id = str(uuid.uuid4())
    run = await engine.run(thread_id, input=book(3))

    async def one_chapter() -> bool:
        return await engine.chapters(thread_id) == [1]

    await _eventually(one_chapter)
    await engine.service.cancel_run(engine.owner, thread_id, run.run_id, wait=True)
    row = await engine.service.get_run(engine.owner, thread_id, run.run_id)
    assert row.status == "interrupted"
    view = await engine.service.get_thread(engine.owner, thread_id)
    assert view.thread.status == "idle"
    assert view.snapshot.tasks, "stopped mid-book"
    assert (await engine.events(row))[-1].event == "end"
    with pytest.raises(Conflict):
        await engine.service.cancel_run(engine.owner, thread_id, run.run_id)

    # Carry on from where it stopped.
    finished = await engine.join(await engine.run(thread_id))
    assert finished is not None and finished.status == "success"
    assert await engine.chapters(thread_id) == [1, 2, 3]


async def test_cancel_with_rollback_restores_the_thread(open_engine: OpenEngine) -> None:
    engine = await open_engine(offline_tokens_per_second=SLOW_TPS)
    await engine.worker()
    thread_id = str(uuid.uuid4())
    await engine.join(await engine.run(thread_id, input=book(3, pause_after=["outline"])))
    before = await engine.service.get_state(engine.owner, thread_id)
    assert before.interrupts

    resumed = await engine.run(thread_id, command={"resume": {"action": "approve"}})

    async def writing() -> bool:
        state = await engine.service.get_state(engine.owner, thread_id)
        return (state.values.get("chapter", 0) >= 1 and "writer" in state.next) or bool(
            await engine.chapters(thread_id)
        )

    await _eventually(writing)
    await engine.service.cancel_run(
        engine.owner, thread_id, resumed.run_id, action="rollback", wait=True
    )
    with pytest.raises(NotFound):
        await engine.service.get_run(engine.owner, thread_id, resumed.run_id)
    after = await engine.service.get_state(engine.owner, thread_id)
    assert (
        after.config["configurable"]["checkpoint_id"]
        == (before.config["configurable"]["checkpoint_id"])
    )
    assert [i.id for i in after.interrupts] == [i.id for i in before.interrupts]
    assert after.values == before.values
    assert (await engine.service.get_thread(engine.owner, thread_id)).thread.status == (
        "interrupted"
    )
    history = [
        s
        async for s in engine.service.backends.graph.aget_state_history(
            {"configurable": {"thread_id": thread_id}}
        )
    ]
    assert all(s.metadata and s.metadata.get("run_id") != resumed.run_id for s in history)

    # The gate can be answered again, from the same place.
    finished = await engine.join(
        await engine.run(thread_id, command={"resume": {"action": "approve"}})
    )
    assert finished is not None and finished.status == "success"
    assert await engine.chapters(thread_id) == [1, 2, 3]


async def test_cancel_a_pending_run(open_embedded: OpenEngine) -> None:
    engine = await open_embedded()
    thread_id = str(uuid.uuid4())
    kept = await engine.run(thread_id, input=book(1))
    dropped = await engine.run(thread_id, input=book(1))
    await engine.service.cancel_run(engine.owner, thread_id, kept.run_id, wait=True)
    assert (await engine.service.get_run(engine.owner, thread_id, kept.run_id)).status == (
        "interrupted"
    )
    await engine.service.cancel_run(
        engine.owner, thread_id, dropped.run_id, action="rollback", wait=True
    )
    with pytest.raises(NotFound):
        await engine.service.get_run(engine.owner, thread_id, dropped.run_id)
    assert [e.event for e in await engine.events(kept)] == ["metadata", "end"]


# --- multitask strategies -----------------------------------------------------------------


async def _busy(engine: Engine) -> tuple[str, RunRecord]:
    thread_id = str(uuid.uuid4())
    run = await engine.run(thread_id, input=book(3))

    async def running() -> bool:
        row = await engine.service.store.find_run(run.run_id)
        return (
            row is not None and row.status == "running" and bool(await engine.chapters(thread_id))
        )

    await _eventually(running)
    return thread_id, run


async def test_multitask_reject(open_embedded: OpenEngine) -> None:
    engine = await open_embedded(offline_tokens_per_second=SLOW_TPS)
    await engine.worker()
    thread_id, current = await _busy(engine)
    with pytest.raises(Conflict):
        await engine.run(thread_id, strategy="reject")
    assert (await engine.service.get_run(engine.owner, thread_id, current.run_id)).status == (
        "running"
    )
    await engine.service.cancel_run(engine.owner, thread_id, current.run_id, wait=True)


async def test_multitask_enqueue(open_embedded: OpenEngine) -> None:
    engine = await open_embedded(offline_tokens_per_second=SLOW_TPS)
    await engine.worker(concurrency=2)
    thread_id, current = await _busy(engine)
    queued = await engine.run(thread_id, strategy="enqueue")
    finished_first = await engine.join(current)
    finished_second = await engine.join(queued)
    assert finished_first is not None and finished_first.status == "success"
    assert finished_second is not None and finished_second.status == "success"
    assert finished_second.created_at > finished_first.created_at
    assert finished_second.updated_at >= finished_first.updated_at


async def test_multitask_interrupt(open_embedded: OpenEngine) -> None:
    engine = await open_embedded(offline_tokens_per_second=SLOW_TPS)
    await engine.worker(concurrency=2)
    thread_id, current = await _busy(engine)
    newer = await engine.run(thread_id, strategy="interrupt")
    finished_newer = await engine.join(newer)
    assert finished_newer is not None and finished_newer.status == "success"
    old = await engine.service.get_run(engine.owner, thread_id, current.run_id)
    assert old.status == "interrupted"
    assert await engine.chapters(thread_id) == [1, 2, 3]


async def test_multitask_rollback(open_embedded: OpenEngine) -> None:
    engine = await open_embedded(offline_tokens_per_second=SLOW_TPS)
    await engine.worker(concurrency=2)
    thread_id = str(uuid.uuid4())
    await engine.join(await engine.run(thread_id, input=book(2, pause_after=["outline"])))
    before = await engine.service.get_state(engine.owner, thread_id)
    current = await engine.run(thread_id, command={"resume": {"action": "approve"}})

    async def running() -> bool:
        row = await engine.service.store.find_run(current.run_id)
        return row is not None and row.status == "running"

    await _eventually(running)
    await asyncio.sleep(0.3)
    newer = await engine.run(
        thread_id,
        command={"resume": {"action": "revise", "notes": "More storms."}},
        strategy="rollback",
    )
    finished = await engine.join(newer)
    assert finished is not None
    with pytest.raises(NotFound):
        await engine.service.get_run(engine.owner, thread_id, current.run_id)
    # The newer run answered the same outline gate the rolled-back run had answered.
    history = [
        s
        async for s in engine.service.backends.graph.aget_state_history(
            {"configurable": {"thread_id": thread_id}}
        )
    ]
    assert before.config["configurable"]["checkpoint_id"] in {
        s.config["configurable"]["checkpoint_id"] for s in history
    }
    assert all(s.metadata and s.metadata.get("run_id") != current.run_id for s in history)
    assert any(s.values.get("plan_notes") == "More storms." for s in history)


async def test_deleting_a_thread_deletes_the_novel(open_embedded: OpenEngine) -> None:
    engine = await open_embedded()
    await engine.worker()
    thread_id = str(uuid.uuid4())
    await engine.join(await engine.run(thread_id, input=book(1)))
    context = engine.service.backends.context
    assert await context.passages.count(thread_id) > 0
    assert (await context.world.world_as_of(thread_id, 1)).entities

    await engine.service.delete_thread(engine.owner, thread_id)
    with pytest.raises(NotFound):
        await engine.service.get_thread(engine.owner, thread_id)
    with pytest.raises(NotFound):
        await engine.service.backends.store.get_novel(thread_id)
    assert await context.passages.count(thread_id) == 0
    assert not (await context.world.world_as_of(thread_id, 1)).entities
    saver = engine.service.backends.checkpointer
    assert await saver.aget_tuple({"configurable": {"thread_id": thread_id}}) is None


# --- replay -------------------------------------------------------------------------------


async def test_a_killed_replay_is_finished_by_another_worker(open_embedded: OpenEngine) -> None:
    """A replay re-executes the source thread's runs (here: a run to the first chapter's
    gate, then one approval per chapter); killed in the middle, another worker finishes
    the step it was in from its checkpoint and goes on with the remaining ones, and the
    result is still the source's book, each chapter once."""
    engine = await open_embedded(offline_tokens_per_second=SLOW_TPS)
    first = await engine.worker(worker_id="first")
    source_thread = str(uuid.uuid4())
    last = await engine.join(
        await engine.run(source_thread, input=book(3, pause_after=["chapter"]))
    )
    steps = 1
    while last is not None and last.status == "interrupted":
        last = await engine.join(
            await engine.run(source_thread, command={"resume": {"action": "approve"}})
        )
        steps += 1
    assert last is not None and last.status == "success"
    assert steps >= 3, "the source must have several runs for this test"
    approved = last

    # The reviewer answers live (the same offline model at its slow rate, so the same
    # verdicts): recorded answers alone come back too fast to kill the run mid-chapter.
    replay = await engine.service.replay(engine.owner, approved.run_id, live=["reviewer"])
    assert replay.thread_id != source_thread

    async def drafting_chapter_two() -> bool:
        return await engine.chapters(replay.thread_id) == [1]

    await _eventually(drafting_chapter_two)
    await asyncio.sleep(0.1)
    await first.kill()
    assert await engine.chapters(replay.thread_id) == [1], "killed mid-chapter 2"

    await engine.worker(worker_id="second")
    finished = await engine.join(replay)
    assert finished is not None
    assert (finished.status, finished.attempts, finished.worker_id) == ("success", 2, "second")

    store = engine.service.backends.store
    original = await store.list_chapters(source_thread)
    replayed = await store.list_chapters(replay.thread_id)
    assert [c.number for c in replayed] == [1, 2, 3]
    assert [c.text for c in replayed] == [c.text for c in original]
    commits: dict[int, int] = {}
    async for state in engine.service.backends.graph.aget_state_history(
        {"configurable": {"thread_id": replay.thread_id}}
    ):
        if state.next == ("worldsmith_update",):
            chapter = int(state.values["chapter"])
            commits[chapter] = commits.get(chapter, 0) + 1
    assert commits == {1: 1, 2: 1, 3: 1}
    traced = await engine.service.backends.tracing.store.get_run(replay.run_id)
    assert traced.status == "success" and traced.source == "replay"
