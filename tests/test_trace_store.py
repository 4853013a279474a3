"""SqlTraceStore against real SQLite files and real PostgreSQL databases, migrated by Alembic."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from errors import Conflict, InvalidInput, NotFound
from memory.app.sql import SqlAppStore
from memory.db import make_engine
from memory.traces.port import AgentUsage, Budget, ModelCall, ReplaySpec, RunSource, TracedRun
from memory.traces.sql import PIPELINE_ORDER, SqlTraceStore
from memory.traces.tables import ModelCallRow, TraceRunRow
from server.settings import to_sqlalchemy_url

THREAD = "00000000-0000-4000-8000-000000000001"
OTHER_THREAD = "00000000-0000-4000-8000-000000000002"
RUN_A = "10000000-0000-4000-8000-00000000000a"
RUN_B = "10000000-0000-4000-8000-00000000000b"
RUN_C = "10000000-0000-4000-8000-00000000000c"
RUN_X = "10000000-0000-4000-8000-0000000000ff"
UNKNOWN = "ffffffff-ffff-4fff-8fff-ffffffffffff"
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each SQL dialect: a SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("fresh_postgres_url")
        return to_sqlalchemy_url(url)
    return f"sqlite+aiosqlite:///{tmp_path / 'traces.db'}"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the fresh database."""
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[SqlTraceStore]:
    """A migrated store sharing ``engine``."""
    store = SqlTraceStore(engine, owns_engine=False)
    await store.setup()
    yield store
    await store.close()


async def _start(
    store: SqlTraceStore,
    run_id: str,
    thread_id: str = THREAD,
    *,
    source: RunSource = "api",
    input: Any = None,
    command: dict[str, Any] | None = None,
    budget: Budget | None = None,
    replay: ReplaySpec | None = None,
    owner_id: str | None = None,
    start_checkpoint_id: str | None = None,
) -> TracedRun:
    return await store.start_run(
        run_id=run_id,
        thread_id=thread_id,
        owner_id=owner_id,
        source=source,
        input=input,
        command=command,
        start_checkpoint_id=start_checkpoint_id,
        budget=budget or Budget(),
        replay=replay,
    )


def _call(
    call_id: str,
    run_id: str = RUN_A,
    thread_id: str = THREAD,
    *,
    step: int = 1,
    index: int = 0,
    agent: str = "writer",
    started_at: datetime = T0,
    **changes: Any,
) -> ModelCall:
    call = ModelCall(
        call_id=call_id,
        run_id=run_id,
        thread_id=thread_id,
        checkpoint_id="1efc0000-0000-6000-8000-000000000001",
        task_id="20000000-0000-4000-8000-000000000001",
        node=f"{agent}_node",
        step=step,
        chapter=1,
        index=index,
        agent=agent,
        task="chapter_draft",
        repair=False,
        model="gpt-4o-mini @ http://127.0.0.1:9/v1",
        settings={"temperature": 0.7, "max_tokens": 2000},
        messages=[
            {"role": "system", "content": "You are the writer."},
            {"role": "user", "content": f"Write chapter 1 ({call_id})."},
        ],
        answer=f"The sea was calm ({call_id}).",
        tool_calls=[],
        input_tokens=100,
        output_tokens=50,
        latency_ms=12.5,
        cost_usd=0.001,
        attempts=1,
        error=None,
        started_at=started_at,
    )
    return replace(call, **changes)


async def _count(engine: AsyncEngine, table: type[ModelCallRow] | type[TraceRunRow]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


# --- runs -----------------------------------------------------------------------------


async def test_start_and_get_run(store: SqlTraceStore) -> None:
    replay = ReplaySpec(
        source_run_id=RUN_X,
        recorded_agents=("director", "worldsmith"),
        live_from_step=7,
        from_checkpoint_id="1efc0000-0000-6000-8000-000000000009",
    )
    started = await _start(
        store,
        RUN_A,
        source="replay",
        input={"premise": "A lighthouse keeper hears the sea.", "chapters": 3},
        command=None,
        budget=Budget(max_tokens=50_000, max_cost_usd=0.25),
        replay=replay,
        owner_id="30000000-0000-4000-8000-000000000001",
        start_checkpoint_id="1efc0000-0000-6000-8000-000000000003",
    )
    assert started.status == "running"
    assert started.sequence == 1
    assert (started.stop_reason, started.finished_at) == (None, None)
    assert started.created_at.tzinfo == UTC
    assert started.replay == replay
    assert started.budget == Budget(max_tokens=50_000, max_cost_usd=0.25)

    fetched = await store.get_run(RUN_A)
    assert fetched == started
    assert fetched.created_at.tzinfo == UTC
    assert fetched.input == {"premise": "A lighthouse keeper hears the sea.", "chapters": 3}
    assert fetched.owner_id == "30000000-0000-4000-8000-000000000001"


async def test_absent_json_values_are_sql_null(store: SqlTraceStore, engine: AsyncEngine) -> None:
    await _start(store, RUN_A, input=None, command=None, replay=None)
    await _start(store, RUN_B, input=None, command={"resume": {"approved": True}})
    async with engine.connect() as conn:
        nulls = (
            await conn.execute(
                text(
                    "SELECT run_id FROM trace_runs "
                    "WHERE input IS NULL AND command IS NULL AND replay IS NULL"
                )
            )
        ).all()
    assert [row[0] for row in nulls] == [RUN_A]
    run_b = await store.get_run(RUN_B)
    assert (run_b.input, run_b.command, run_b.replay) == (
        None,
        {"resume": {"approved": True}},
        None,
    )


async def test_sequences_count_up_per_thread(store: SqlTraceStore) -> None:
    first = await _start(store, RUN_A, input={"premise": "p"})
    second = await _start(store, RUN_B, command={"resume": "yes"})
    other = await _start(store, RUN_X, OTHER_THREAD)
    third = await _start(store, RUN_C, command={"resume": "again"})
    assert [first.sequence, second.sequence, third.sequence] == [1, 2, 3]
    assert other.sequence == 1

    runs = await store.thread_runs(THREAD)
    assert [run.run_id for run in runs] == [RUN_A, RUN_B, RUN_C]
    assert [run.sequence for run in runs] == [1, 2, 3]
    assert [run.run_id for run in await store.thread_runs(OTHER_THREAD)] == [RUN_X]
    assert await store.thread_runs(UNKNOWN) == []


async def test_reregistering_a_run_keeps_it(store: SqlTraceStore, engine: AsyncEngine) -> None:
    await _start(store, RUN_A)
    original = await _start(store, RUN_B, input={"premise": "first"}, budget=Budget(max_tokens=9))
    await store.finish_run(RUN_B, "error", "worker lost")

    # A reclaimed run registers again, possibly with different arguments: only its
    # status changes, and the end it recorded is cleared.
    again = await _start(store, RUN_B, input={"premise": "second"}, budget=Budget())
    assert again.sequence == original.sequence == 2
    assert again.status == "running"
    assert (again.stop_reason, again.finished_at) == (None, None)
    assert again.input == {"premise": "first"}
    assert again.budget == Budget(max_tokens=9)
    assert again.created_at == original.created_at
    assert await store.get_run(RUN_B) == again
    assert await _count(engine, TraceRunRow) == 2

    # The next new run still takes the next sequence.
    assert (await _start(store, RUN_C)).sequence == 3


async def test_reregistering_on_another_thread_is_conflict(store: SqlTraceStore) -> None:
    await _start(store, RUN_A)
    with pytest.raises(Conflict):
        await _start(store, RUN_A, OTHER_THREAD)
    assert await store.thread_runs(OTHER_THREAD) == []


async def test_finish_run(store: SqlTraceStore) -> None:
    started = await _start(store, RUN_A)
    await store.finish_run(RUN_A, "budget_exceeded", "token budget exceeded: 10 of 5")
    finished = await store.get_run(RUN_A)
    assert finished.status == "budget_exceeded"
    assert finished.stop_reason == "token budget exceeded: 10 of 5"
    assert finished.finished_at is not None
    assert finished.finished_at.tzinfo == UTC
    assert finished.finished_at >= started.created_at

    await _start(store, RUN_B)
    await store.finish_run(RUN_B, "success")
    assert ((await store.get_run(RUN_B)).status, (await store.get_run(RUN_B)).stop_reason) == (
        "success",
        None,
    )


async def test_concurrent_starts_get_distinct_sequences(store: SqlTraceStore) -> None:
    run_ids = [f"40000000-0000-4000-8000-{n:012d}" for n in range(8)]
    started = await asyncio.gather(*(_start(store, run_id) for run_id in run_ids))
    assert sorted(run.sequence for run in started) == list(range(1, len(run_ids) + 1))
    by_id = {run.run_id: run.sequence for run in started}
    assert [(r.run_id, r.sequence) for r in await store.thread_runs(THREAD)] == sorted(
        by_id.items(), key=lambda item: item[1]
    )


async def test_concurrent_registration_of_one_run(
    store: SqlTraceStore, engine: AsyncEngine
) -> None:
    started = await asyncio.gather(*(_start(store, RUN_A) for _ in range(4)))
    assert {run.sequence for run in started} == {1}
    assert await _count(engine, TraceRunRow) == 1


# --- calls ----------------------------------------------------------------------------


async def test_save_calls_replaces_by_call_id(store: SqlTraceStore, engine: AsyncEngine) -> None:
    await _start(store, RUN_A)
    first = _call("c1", answer="First answer.", input_tokens=10, cost_usd=None)
    await store.save_calls([first, _call("c2", index=1)])
    assert [c.call_id for c in await store.calls(RUN_A)] == ["c1", "c2"]

    rerun = _call(
        "c1",
        answer="Second answer.",
        input_tokens=20,
        cost_usd=0.5,
        attempts=3,
        error="429 then ok",
        structured={"title": "Dawn"},
    )
    await store.save_calls([rerun])
    calls = await store.calls(RUN_A)
    assert [c.call_id for c in calls] == ["c1", "c2"]
    assert calls[0] == rerun
    assert await _count(engine, ModelCallRow) == 2

    # Within one batch the last record of an id wins.
    await store.save_calls([_call("c3", index=2, answer="old"), _call("c3", index=2, answer="new")])
    assert [(c.call_id, c.answer) for c in await store.calls(RUN_A)][-1] == ("c3", "new")
    assert await _count(engine, ModelCallRow) == 3

    await store.save_calls([])
    assert await _count(engine, ModelCallRow) == 3


async def test_concurrent_saves_of_one_call(store: SqlTraceStore, engine: AsyncEngine) -> None:
    await _start(store, RUN_A)
    versions = [_call("c1", answer=f"answer {n}") for n in range(5)]
    await asyncio.gather(*(store.save_calls([call]) for call in versions))
    calls = await store.calls(RUN_A)
    assert len(calls) == 1
    assert calls[0] in versions
    assert await _count(engine, ModelCallRow) == 1


async def test_calls_are_ordered_by_step_index_and_start(store: SqlTraceStore) -> None:
    await _start(store, RUN_A)
    await _start(store, RUN_B)
    ordered = [
        _call("s1-i0", step=1, index=0, started_at=T0 + timedelta(seconds=5)),
        _call("s1-i1", step=1, index=1, started_at=T0),
        # The same step and index recorded twice (a re-executed task with a new task id).
        _call("s2-i0-a", step=2, index=0, started_at=T0 + timedelta(seconds=1)),
        _call("s2-i0-b", step=2, index=0, started_at=T0 + timedelta(seconds=2)),
        _call("s10-i0", step=10, index=0, started_at=T0 - timedelta(hours=1)),
        _call("s10-i2", step=10, index=2, started_at=T0 - timedelta(hours=2)),
    ]
    shuffled = list(ordered)
    random.Random(7).shuffle(shuffled)
    await store.save_calls(shuffled)
    await store.save_calls([_call("b-only", RUN_B, step=0)])

    assert [c.call_id for c in await store.calls(RUN_A)] == [c.call_id for c in ordered]
    assert [c.call_id for c in await store.calls(RUN_B)] == ["b-only"]


async def test_started_at_in_another_zone_keeps_the_instant(store: SqlTraceStore) -> None:
    await _start(store, RUN_A)
    plus_two = timezone(timedelta(hours=2))
    # 13:00+02:00 is 11:00 UTC: before T0 (12:00 UTC) although its wall clock is later.
    early = _call("early", index=0, step=3, started_at=datetime(2025, 3, 1, 13, 0, tzinfo=plus_two))
    late = _call("late", index=0, step=3, started_at=T0)
    await store.save_calls([late, early])
    calls = await store.calls(RUN_A)
    assert [c.call_id for c in calls] == ["early", "late"]
    assert calls[0].started_at == datetime(2025, 3, 1, 11, 0, tzinfo=UTC)
    assert all(c.started_at.tzinfo == UTC for c in calls)


async def test_json_and_text_round_trip_exactly(store: SqlTraceStore) -> None:
    awkward = (
        "Él dijo: «¡Sí!» — 海は静かだった。 مرحبا 🌊🧭\n"
        "Line two\twith \"quotes\", 'apostrophes', back\\slashes and \\n literally.\r\n"
        "Separators:\u2028\u2029 zero-width:\u200b combining: e\u0301 {not json]"
    )
    await _start(
        store,
        RUN_A,
        input={"premise": awkward, "nested": [1, 2.5, True, None, {"k": awkward}]},
        command={"resume": {"notes": awkward}},
    )
    call = _call(
        "c1",
        settings={"temperature": 0.0, "stop": ["\n\n", "END"], "extra": {"ü": None, "n": -1}},
        messages=[
            {"role": "system", "content": awkward},
            {"role": "user", "content": ""},
            {"role": "assistant", "content": "  leading and trailing spaces  \n"},
        ],
        answer=awkward,
        tool_calls=[{"name": "lookup", "args": {"q": awkward}, "id": "call_1"}],
        structured={"title": awkward, "beats": ["a", "b"], "score": 0.125},
        error=awkward,
        repair=True,
        replayed_from="c0",
        model=awkward,
    )
    await store.save_calls([call])
    [stored] = await store.calls(RUN_A)
    assert stored == call
    assert stored.messages[0]["content"] == awkward
    assert list(stored.settings) == ["temperature", "stop", "extra"]
    run = await store.get_run(RUN_A)
    assert run.input == {"premise": awkward, "nested": [1, 2.5, True, None, {"k": awkward}]}
    assert run.command == {"resume": {"notes": awkward}}


# --- usage ----------------------------------------------------------------------------


def _expected(calls: Sequence[ModelCall], agent: str) -> AgentUsage:
    mine = [c for c in calls if c.agent == agent]
    return AgentUsage(
        agent=agent,
        calls=len(mine),
        input_tokens=sum(c.input_tokens for c in mine),
        output_tokens=sum(c.output_tokens for c in mine),
        cost_usd=sum(c.cost_usd or 0.0 for c in mine),
        latency_ms=sum(c.latency_ms for c in mine),
    )


def _assert_usage_matches(agents: Sequence[AgentUsage], expected: Sequence[AgentUsage]) -> None:
    assert [a.agent for a in agents] == [e.agent for e in expected]
    for got, want in zip(agents, expected, strict=True):
        assert (got.calls, got.input_tokens, got.output_tokens) == (
            want.calls,
            want.input_tokens,
            want.output_tokens,
        )
        assert got.cost_usd == pytest.approx(want.cost_usd)
        assert got.latency_ms == pytest.approx(want.latency_ms)


async def test_usage_per_run_and_thread(store: SqlTraceStore) -> None:
    await _start(store, RUN_A)
    await _start(store, RUN_B)
    await _start(store, RUN_X, OTHER_THREAD)
    # Agents chosen so that alphabetical order is not the pipeline order.
    agents = ["writer", "reviewer", "director", "zeta", "worldsmith", "critic"]
    run_a = [
        _call(
            f"a{n}",
            RUN_A,
            agent=agents[n % len(agents)],
            index=n,
            input_tokens=100 + n,
            output_tokens=10 * n,
            latency_ms=1.5 * n,
            # Every third call has no known price.
            cost_usd=None if n % 3 == 0 else 0.001 * n,
        )
        for n in range(13)
    ]
    run_b = [
        _call(f"b{n}", RUN_B, agent=agent, input_tokens=7, output_tokens=3, cost_usd=None)
        for n, agent in enumerate(["writer", "writer", "alpha"])
    ]
    elsewhere = [_call("x0", RUN_X, OTHER_THREAD, agent="director", input_tokens=10_000)]
    await store.save_calls(run_a + run_b + elsewhere)

    usage = await store.usage(run_id=RUN_A)
    order = [*PIPELINE_ORDER, "critic", "zeta"]
    _assert_usage_matches(usage.agents, [_expected(run_a, agent) for agent in order])
    assert usage.calls == len(run_a)
    assert usage.input_tokens == sum(c.input_tokens for c in run_a)
    assert usage.output_tokens == sum(c.output_tokens for c in run_a)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.cost_usd == pytest.approx(sum(c.cost_usd or 0.0 for c in run_a))
    assert usage.latency_ms == pytest.approx(sum(c.latency_ms for c in run_a))

    # Only unpriced calls: the cost is 0, not missing.
    only_b = await store.usage(run_id=RUN_B)
    assert [(a.agent, a.calls, a.cost_usd) for a in only_b.agents] == [
        ("writer", 2, 0.0),
        ("alpha", 1, 0.0),
    ]

    thread = await store.usage(thread_id=THREAD)
    both = run_a + run_b
    thread_order = [*PIPELINE_ORDER, "alpha", "critic", "zeta"]
    _assert_usage_matches(thread.agents, [_expected(both, agent) for agent in thread_order])
    assert thread.calls == len(both)
    assert thread.input_tokens == sum(c.input_tokens for c in both)
    assert thread.cost_usd == pytest.approx(sum(c.cost_usd or 0.0 for c in both))
    assert thread.to_json()["agents"]["alpha"]["calls"] == 1

    other = await store.usage(thread_id=OTHER_THREAD)
    assert (other.calls, other.input_tokens, [a.agent for a in other.agents]) == (
        1,
        10_000,
        ["director"],
    )


async def test_usage_without_calls_is_zero(store: SqlTraceStore) -> None:
    await _start(store, RUN_A)
    for usage in (await store.usage(run_id=RUN_A), await store.usage(thread_id=UNKNOWN)):
        assert (usage.calls, usage.total_tokens, usage.cost_usd, usage.agents) == (0, 0, 0.0, ())


async def test_usage_needs_exactly_one_scope(store: SqlTraceStore) -> None:
    await _start(store, RUN_A)
    with pytest.raises(InvalidInput):
        await store.usage()
    with pytest.raises(InvalidInput):
        await store.usage(run_id=RUN_A, thread_id=THREAD)


# --- errors ---------------------------------------------------------------------------


async def test_unknown_ids_are_not_found(store: SqlTraceStore, engine: AsyncEngine) -> None:
    await _start(store, RUN_A)
    with pytest.raises(NotFound):
        await store.get_run(UNKNOWN)
    with pytest.raises(NotFound):
        await store.finish_run(UNKNOWN, "success")
    with pytest.raises(NotFound):
        await store.calls(UNKNOWN)
    with pytest.raises(NotFound):
        await store.usage(run_id=UNKNOWN)
    # A batch naming an unknown run is refused whole.
    with pytest.raises(NotFound):
        await store.save_calls([_call("ok", RUN_A), _call("orphan", UNKNOWN)])
    assert await _count(engine, ModelCallRow) == 0


async def test_bad_input_is_refused(store: SqlTraceStore, engine: AsyncEngine) -> None:
    with pytest.raises(InvalidInput):
        await _start(store, "r" * 37)
    with pytest.raises(InvalidInput):
        await _start(store, RUN_A, "")
    with pytest.raises(InvalidInput):
        await _start(store, RUN_A, start_checkpoint_id="c" * 65)
    with pytest.raises(InvalidInput):
        await _start(store, RUN_A, source="cron")  # type: ignore[arg-type]
    assert await _count(engine, TraceRunRow) == 0

    await _start(store, RUN_A)
    with pytest.raises(InvalidInput):
        await store.finish_run(RUN_A, "running")
    with pytest.raises(InvalidInput):
        await store.finish_run(RUN_A, "exploded")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await store.save_calls([_call("x" * 37)])
    with pytest.raises(InvalidInput):
        await store.save_calls([_call("c1", agent="a" * 101)])
    # A call must belong to its run's thread, or deleting the thread would miss it.
    with pytest.raises(InvalidInput):
        await store.save_calls([_call("c1", RUN_A, OTHER_THREAD)])
    assert await _count(engine, ModelCallRow) == 0
    assert (await store.get_run(RUN_A)).status == "running"


# --- deletion -------------------------------------------------------------------------


async def test_delete_thread(store: SqlTraceStore, engine: AsyncEngine) -> None:
    await _start(store, RUN_A)
    await _start(store, RUN_B)
    await _start(store, RUN_X, OTHER_THREAD)
    await store.save_calls(
        [
            _call("a0", RUN_A),
            _call("a1", RUN_A, index=1),
            _call("b0", RUN_B),
            _call("x0", RUN_X, OTHER_THREAD),
        ]
    )

    await store.delete_thread(THREAD)

    assert await store.thread_runs(THREAD) == []
    with pytest.raises(NotFound):
        await store.get_run(RUN_A)
    assert (await store.usage(thread_id=THREAD)).calls == 0
    assert (await _count(engine, TraceRunRow), await _count(engine, ModelCallRow)) == (1, 1)
    assert [c.call_id for c in await store.calls(RUN_X)] == ["x0"]

    # Deleting an unknown (or already deleted) thread does nothing; the thread starts over.
    await store.delete_thread(THREAD)
    assert (await _start(store, RUN_C)).sequence == 1


async def test_database_cascades_run_deletion(store: SqlTraceStore, engine: AsyncEngine) -> None:
    """The foreign key itself cascades (for deletions made outside the store)."""
    await _start(store, RUN_A)
    await _start(store, RUN_B)
    await store.save_calls([_call("a0", RUN_A), _call("a1", RUN_A, index=1), _call("b0", RUN_B)])
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM trace_runs WHERE run_id = :id"), {"id": RUN_A})
    assert await _count(engine, ModelCallRow) == 1
    assert [c.call_id for c in await store.calls(RUN_B)] == ["b0"]


# --- lifecycle ------------------------------------------------------------------------


async def test_setup_is_idempotent_and_data_persists(db_url: str) -> None:
    first = SqlTraceStore.from_url(db_url)
    assert first.owns_engine
    await first.setup()
    await first.setup()
    await _start(first, RUN_A)
    await first.save_calls([_call("c1")])
    await first.close()

    second = SqlTraceStore.from_url(db_url)
    await second.setup()
    assert (await second.get_run(RUN_A)).sequence == 1
    assert [c.call_id for c in await second.calls(RUN_A)] == ["c1"]
    await second.close()


async def test_shares_an_engine_with_the_app_store(engine: AsyncEngine) -> None:
    app = SqlAppStore(engine)
    traces = SqlTraceStore(engine, owns_engine=False)
    assert not traces.owns_engine
    await app.setup()
    await traces.setup()
    await app.create_novel(THREAD, "premise", 2, None)
    await _start(traces, RUN_A)
    await traces.close()
    # The engine still serves the app store.
    assert (await app.get_novel(THREAD)).id == THREAD
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM trace_runs"))).scalar_one() == 1
    await app.close()
