"""Benchmark of call recording and replay (prints figures; asserts nothing).

    uv run python tests/benchmarks/tracing.py [--calls 20000] [--chapters 3] [--repeat 3]

Reports:
- the cost of ``TraceRecorder.record`` on the caller's path (it only prices and queues)
  and how fast the background writer drains calls into SQLite;
- the wall time of an offline book with recording on and off (the same code path, the
  gateway with and without its sink), median of ``--repeat`` runs;
- the wall time of a full replay of that book from its records.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."


async def _recorder_figures(data_dir: Path, calls: int) -> tuple[float, float]:
    from memory.traces.port import Budget, ModelCall
    from memory.traces.recorder import TraceRecorder
    from memory.traces.sql import SqlTraceStore

    store = SqlTraceStore.from_url(f"sqlite+aiosqlite:///{data_dir / 'bench-traces.db'}")
    await store.setup()
    thread_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    await store.start_run(
        run_id=run_id,
        thread_id=thread_id,
        owner_id=None,
        source="cli",
        input=None,
        command=None,
        start_checkpoint_id=None,
        budget=Budget(),
        replay=None,
    )
    recorder = TraceRecorder(store)
    await recorder.start()
    recorder.begin_run(run_id, Budget(max_tokens=10**12))
    prompt = [{"role": "user", "content": "x " * 2000}]
    template = ModelCall(
        call_id="",
        run_id=run_id,
        thread_id=thread_id,
        checkpoint_id="cp",
        task_id="task",
        node="writer",
        step=1,
        chapter=1,
        index=0,
        agent="writer",
        task="chapter_draft",
        repair=False,
        model="offline",
        settings={},
        messages=prompt,
        answer="word " * 900,
        tool_calls=[],
        input_tokens=2600,
        output_tokens=1170,
        latency_ms=1.0,
        cost_usd=None,
        attempts=1,
        error=None,
        started_at=datetime.now(UTC),
    )
    items = [replace(template, call_id=str(uuid.uuid4()), index=i) for i in range(calls)]
    started = time.perf_counter()
    for item in items:
        recorder.before_call(run_id)
        recorder.record(item)
    on_path = time.perf_counter() - started
    await recorder.flush()
    drained = time.perf_counter() - started
    await recorder.close()
    await store.close()
    return on_path / calls * 1e6, calls / drained


async def _book(data_dir: Path, chapters: int, *, record: bool) -> tuple[float, str]:
    from nodes.llm.factory import build_gateway
    from nodes.schemas import AGENTS
    from nodes.session import validate_request
    from server.backends import open_backends
    from server.sessions import Sessions
    from server.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    async with open_backends(settings) as backends:
        if not record:
            plain = build_gateway({a: settings.model_for(a) for a in AGENTS}, settings.retry)
            backends = replace(backends, context=replace(backends.context, models=plain))
        started = time.perf_counter()
        result = await Sessions(backends).start(validate_request(PREMISE, chapters, "fantasy"))
        elapsed = time.perf_counter() - started
        assert result.status == "completed", result
        return elapsed, result.run_id


async def _replay(data_dir: Path, run_id: str) -> float:
    from server.backends import open_backends
    from server.sessions import Sessions
    from server.settings import load_settings

    async with open_backends(load_settings(data_dir=data_dir)) as backends:
        started = time.perf_counter()
        result = await Sessions(backends).replay(run_id)
        elapsed = time.perf_counter() - started
        assert result.status == "completed", result
        return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--chapters", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        per_call_us, drain_rate = await _recorder_figures(data, args.calls)
        print(f"record() on the caller's path: {per_call_us:.1f} µs per call ({args.calls} calls)")
        print(f"background writer (SQLite): {drain_rate:,.0f} calls/s")
        on: list[float] = []
        off: list[float] = []
        run_id = ""
        for i in range(args.repeat):
            elapsed, run_id = await _book(data / f"on-{i}", args.chapters, record=True)
            on.append(elapsed)
            off.append((await _book(data / f"off-{i}", args.chapters, record=False))[0])
        replayed = await _replay(data / f"on-{args.repeat - 1}", run_id)
        print(
            f"{args.chapters}-chapter offline book, median of {args.repeat}: "
            f"recording on {statistics.median(on):.2f} s, off {statistics.median(off):.2f} s"
        )
        print(f"full replay of the last recorded book: {replayed:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
