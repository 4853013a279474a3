"""Recording model calls: the recorder's writes and budgets, recorded answers for
replay, the places the gateway gives calls, and fork-aware draft ids."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from errors import BudgetExceeded, ReplayMissing
from memory.traces.port import Budget, ModelCall
from memory.traces.recorder import ModelPrice, TraceRecorder
from memory.traces.sql import SqlTraceStore
from nodes.llm.replay import RecordedAnswers
from nodes.llm.trace import CallKey
from nodes.session import validate_request
from server.backends import Backends
from server.sessions import Sessions, thread_config

PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlTraceStore]:
    """A migrated trace store on a fresh SQLite file."""
    opened = SqlTraceStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'traces.db'}")
    await opened.setup()
    try:
        yield opened
    finally:
        await opened.close()


async def _run(store: SqlTraceStore, thread_id: str | None = None) -> str:
    run_id = str(uuid.uuid4())
    await store.start_run(
        run_id=run_id,
        thread_id=thread_id or str(uuid.uuid4()),
        owner_id=None,
        source="cli",
        input={"premise": "x"},
        command=None,
        start_checkpoint_id=None,
        budget=Budget(),
        replay=None,
    )
    return run_id


def _call(
    run_id: str,
    thread_id: str,
    *,
    index: int = 0,
    step: int = 1,
    agent: str = "writer",
    node: str = "writer",
    chapter: int = 1,
    answer: str = "text",
    model: str = "gpt-x @ http://127.0.0.1:9",
    tokens: tuple[int, int] = (100, 50),
) -> ModelCall:
    return ModelCall(
        call_id=str(uuid.uuid4()),
        run_id=run_id,
        thread_id=thread_id,
        checkpoint_id="cp",
        task_id="task",
        node=node,
        step=step,
        chapter=chapter,
        index=index,
        agent=agent,
        task="chapter_draft",
        repair=False,
        model=model,
        settings={},
        messages=[{"role": "user", "content": "write"}],
        answer=answer,
        tool_calls=[],
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        latency_ms=1.0,
        cost_usd=None,
        attempts=1,
        error=None,
        started_at=datetime.now(UTC),
    )


async def test_close_writes_everything_queued_and_prices_calls(store: SqlTraceStore) -> None:
    thread = str(uuid.uuid4())
    run = await _run(store, thread)
    recorder = TraceRecorder(store, {"gpt-x": ModelPrice(input_per_mtok=2.0, output_per_mtok=8.0)})
    await recorder.start()
    recorder.begin_run(run, Budget())
    for i in range(200):
        recorder.record(_call(run, thread, index=i))
    recorder.record(_call(run, thread, index=500, model="offline"))
    recorder.record(_call(run, thread, index=501, model="unpriced @ http://x"))
    await recorder.close()  # no flush first: close alone must lose nothing

    calls = await store.calls(run)
    assert len(calls) == 202
    by_index = {c.index: c for c in calls}
    assert by_index[0].cost_usd == pytest.approx((100 * 2.0 + 50 * 8.0) / 1e6)
    assert by_index[500].cost_usd == 0.0
    assert by_index[501].cost_usd is None
    usage = await store.usage(run_id=run)
    assert usage.calls == 202
    assert usage.total_tokens == 202 * 150
    assert usage.cost_usd == pytest.approx(200 * 600 / 1e6)


async def test_untracked_runs_and_deleted_runs_cost_no_batch(store: SqlTraceStore) -> None:
    thread = str(uuid.uuid4())
    run = await _run(store, thread)
    doomed_thread = str(uuid.uuid4())
    doomed = await _run(store, doomed_thread)
    recorder = TraceRecorder(store, retry_delay_s=0.01)
    recorder.begin_run(run, Budget())
    recorder.begin_run(doomed, Budget())
    recorder.record(_call(str(uuid.uuid4()), thread))  # never begun here: not recorded
    recorder.record(_call(run, thread, index=0))
    recorder.record(_call(doomed, doomed_thread, index=0))
    recorder.record(_call(run, thread, index=1))
    await store.delete_thread(doomed_thread)  # its calls can no longer be written
    await recorder.close()  # never started: close writes the batch itself
    assert [c.index for c in await store.calls(run)] == [0, 1]


async def test_budget_stops_the_next_call(store: SqlTraceStore) -> None:
    thread = str(uuid.uuid4())
    run = await _run(store, thread)
    recorder = TraceRecorder(store, {"gpt-x": ModelPrice(2000.0, 2000.0)})  # $0.30 a call
    recorder.begin_run(run, Budget(max_tokens=250))
    recorder.before_call(run)
    recorder.record(_call(run, thread, index=0))  # 150 tokens
    recorder.before_call(run)
    recorder.record(_call(run, thread, index=1))  # 300 tokens
    with pytest.raises(BudgetExceeded) as caught:
        recorder.before_call(run)
    assert caught.value.data["used_tokens"] == 300
    assert caught.value.data["max_tokens"] == 250
    assert "300 tokens used of 250" in caught.value.message

    # what earlier attempts spent counts (a reclaimed or resumed run is seeded with it)
    other = await _run(store, thread)
    await recorder.flush()
    recorder.begin_run(other, Budget(max_cost_usd=0.5), await store.usage(run_id=run))
    with pytest.raises(BudgetExceeded, match="cost budget exceeded"):
        recorder.before_call(other)
    recorder.begin_run(other, Budget())
    recorder.before_call(other)  # no limits, no stop
    recorder.end_run(other)
    recorder.before_call(other)  # untracked: never stopped
    await recorder.close()


async def test_recorded_answers_are_taken_in_order_and_missing_ones_named() -> None:
    run, thread = str(uuid.uuid4()), str(uuid.uuid4())
    calls = [
        _call(run, thread, index=0, node="director_plan", agent="director", answer="plan A"),
        _call(run, thread, index=1, node="director_plan", agent="director", answer="repaired"),
        _call(run, thread, index=0, node="director_plan", agent="director", answer="plan B"),
        _call(run, thread, index=0, chapter=2, answer="chapter two"),
    ]
    failed = _call(run, thread, index=0, chapter=3, answer="")
    answers = RecordedAnswers([*calls, replace_error(failed)], run)
    plan = CallKey("director", "director_plan", 1, 0)
    assert answers.take(plan).answer == "plan A"
    assert answers.take(CallKey("director", "director_plan", 1, 1)).answer == "repaired"
    assert answers.take(plan).answer == "plan B"  # the outline's second visit
    assert answers.take(CallKey("writer", "writer", 2, 0)).answer == "chapter two"
    with pytest.raises(ReplayMissing) as caught:
        answers.take(plan)
    assert caught.value.agent == "director"
    assert caught.value.data["call_index"] == 0
    assert caught.value.data["visit"] == 3
    assert "director call #0 of node director_plan at chapter 1" in caught.value.message
    # a call that failed in the source run is not an answer to replay
    with pytest.raises(ReplayMissing, match="writer call #0 of node writer at chapter 3"):
        answers.take(CallKey("writer", "writer", 3, 0))


def replace_error(call: ModelCall) -> ModelCall:
    """The call as a failed one."""
    return replace(call, error="ModelUnavailable: down")


async def test_a_run_records_each_call_at_its_place(backends: Backends) -> None:
    result = await Sessions(backends).start(validate_request(PREMISE, 2, None))
    assert result.status == "completed"
    traced = await backends.tracing.store.get_run(result.run_id)
    assert (traced.status, traced.source, traced.thread_id) == (
        "success",
        "cli",
        result.session_id,
    )
    calls = await backends.tracing.store.calls(result.run_id)
    history = [s async for s in backends.graph.aget_state_history(thread_config(result.session_id))]
    checkpoints = {s.config["configurable"]["checkpoint_id"]: s for s in history}
    steps: dict[int, list[ModelCall]] = {}
    for call in calls:
        steps.setdefault(call.step, []).append(call)
        assert call.thread_id == result.session_id
        assert call.input_tokens > 0 and call.output_tokens > 0
        assert call.answer and call.messages[-1]["role"] == "user"
        assert call.error is None and call.attempts == 1
        assert call.model == "offline" and call.cost_usd == 0.0
        # the checkpoint the step started from exists and is the step before
        assert call.checkpoint_id in checkpoints
        assert (checkpoints[call.checkpoint_id].metadata or {})["step"] == call.step - 1
        assert call.agent in ("director", "worldsmith", "writer", "reviewer")
    for step_calls in steps.values():
        assert [c.index for c in step_calls] == list(range(len(step_calls)))
    nodes = {c.node for c in calls}
    assert nodes == {
        "director_plan",
        "worldsmith_seed",
        "director_beats",
        "writer",
        "reviewer",  # its claims serve worldsmith_update, which makes no call
    }
    assert {c.chapter for c in calls if c.node == "writer"} == {1, 2}
    # the writer's recorded answers are the stored drafts
    drafts = [c for c in calls if c.node == "writer"]
    for chapter in await backends.store.list_chapters(result.session_id):
        texts = {c.answer.strip() for c in drafts if c.chapter == chapter.number}
        assert chapter.text.strip() in texts
    usage = await backends.tracing.store.usage(run_id=result.run_id)
    assert usage.calls == len(calls)
    assert [a.agent for a in usage.agents] == ["director", "worldsmith", "writer", "reviewer"]


async def test_budget_stop_leaves_a_resumable_session(backends: Backends) -> None:
    sessions = Sessions(backends)
    stopped = await sessions.start(
        validate_request(PREMISE, 2, None), budget=Budget(max_tokens=8_000)
    )
    assert stopped.status == "stopped"
    assert stopped.stop_reason and "token budget exceeded" in stopped.stop_reason
    traced = await backends.tracing.store.get_run(stopped.run_id)
    assert traced.status == "budget_exceeded"
    assert traced.stop_reason == stopped.stop_reason
    assert (await backends.store.get_novel(stopped.session_id)).status == "paused"
    spent = await backends.tracing.store.usage(run_id=stopped.run_id)
    # it stopped at the first call after the limit: at most one call's worth over it
    biggest = max(c.total_tokens for c in await backends.tracing.store.calls(stopped.run_id))
    assert 8_000 <= spent.total_tokens < 8_000 + biggest

    resumed = await sessions.resume(stopped.session_id, None)
    assert resumed.status == "completed"
    chapters = await backends.store.list_chapters(stopped.session_id)
    assert [c.number for c in chapters] == [1, 2]
    runs = await backends.tracing.store.thread_runs(stopped.session_id)
    assert [(r.sequence, r.status) for r in runs] == [(1, "budget_exceeded"), (2, "success")]


async def test_a_fork_writes_new_drafts_instead_of_reusing_old_ones(backends: Backends) -> None:
    """Draft ids include the checkpoint a step starts from: a crash replay reuses the
    draft, a fork from the past gets a version of its own."""
    result = await Sessions(backends).start(validate_request(PREMISE, 1, None))
    config = thread_config(result.session_id)
    history = [s async for s in backends.graph.aget_state_history(config)]
    before_writer = next(s for s in reversed(history) if s.next == ("writer",))
    first = await backends.store.list_versions(result.session_id, 1)

    fork = await backends.graph.aupdate_state(
        before_writer.config, {"notes": "Make the sea louder."}, as_node="director_beats"
    )
    async for _ in backends.graph.astream(
        None, fork, context=backends.context, stream_mode="custom", durability="sync"
    ):
        pass
    after = await backends.store.list_versions(result.session_id, 1)
    assert len(after) > len(first)
    assert {v.id for v in first} < {v.id for v in after}
    state = await backends.graph.aget_state(config)
    current = await backends.store.get_chapter(result.session_id, 1)
    assert current.current_version_id not in {v.id for v in first}
    assert state.values["draft_id"] == current.current_version_id


async def test_recorder_writes_do_not_block_the_caller(store: SqlTraceStore) -> None:
    """record() only queues: a slow store does not slow the caller."""
    thread = str(uuid.uuid4())
    run = await _run(store, thread)
    recorder = TraceRecorder(store)
    await recorder.start()
    recorder.begin_run(run, Budget())
    gate = asyncio.Event()
    original = store.save_calls

    async def slow(calls: Any) -> None:
        await gate.wait()
        await original(calls)

    store.save_calls = slow  # type: ignore[method-assign]
    for i in range(50):
        recorder.record(_call(run, thread, index=i))  # returns at once although writes wait
    assert await store.calls(run) == []
    gate.set()
    await recorder.flush()
    assert len(await store.calls(run)) == 50
    await recorder.close()
