"""Benchmark of the embedded default with the offline model (prints figures; asserts nothing).

    uv run python tests/benchmarks/pipeline.py [--chapters-long 20]

Reports the wall time of a 3-chapter run, the bytes written per checkpoint at chapter 1 and
at the last chapter of a long run (state must stay flat as the book grows), and the start
time of ``scribe --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."


async def _write(data_dir: Path, chapters: int) -> tuple[str, float]:
    from nodes.session import validate_request
    from server.backends import open_backends
    from server.sessions import Sessions
    from server.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    async with open_backends(settings) as backends:
        started = time.perf_counter()
        result = await Sessions(backends).start(validate_request(PREMISE, chapters, "fantasy"))
        elapsed = time.perf_counter() - started
        assert result.status == "completed", result
        return result.session_id, elapsed


async def _checkpoint_bytes(data_dir: Path, session_id: str) -> dict[int, list[int]]:
    """Bytes written per checkpoint (checkpoint + metadata + its pending writes), by chapter."""
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    db = data_dir / "checkpoints.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT checkpoint_id, length(checkpoint) + length(metadata) FROM checkpoints "
            "WHERE thread_id = ? AND checkpoint_ns = ''",
            (session_id,),
        ).fetchall()
        writes = dict(
            conn.execute(
                "SELECT checkpoint_id, sum(length(value)) FROM writes WHERE thread_id = ? "
                "GROUP BY checkpoint_id",
                (session_id,),
            ).fetchall()
        )
    by_chapter: dict[int, list[int]] = defaultdict(list)
    async with aiosqlite.connect(db) as conn:
        saver = AsyncSqliteSaver(conn)
        for checkpoint_id, size in rows:
            config = {
                "configurable": {
                    "thread_id": session_id,
                    "checkpoint_ns": "",
                    "checkpoint_id": checkpoint_id,
                }
            }
            found = await saver.aget_tuple(config)  # type: ignore[arg-type]
            chapter = found.checkpoint["channel_values"].get("chapter", 0) if found else 0
            by_chapter[int(chapter)].append(int(size) + int(writes.get(checkpoint_id, 0)))
    return by_chapter


def _help_time(runs: int = 5) -> float:
    script = Path(sys.executable).with_name("scribe")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(script), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chapters-long", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _, short = asyncio.run(_write(Path(tmp) / "short", 3))
        print(f"offline 3-chapter run (in-process, stores open): {short:.2f} s")
        long_dir = Path(tmp) / "long"
        session_id, long_time = asyncio.run(_write(long_dir, args.chapters_long))
        print(f"offline {args.chapters_long}-chapter run: {long_time:.2f} s")
        sizes = asyncio.run(_checkpoint_bytes(long_dir, session_id))
        for chapter in (1, args.chapters_long // 2, args.chapters_long):
            values = sizes.get(chapter, [])
            if values:
                print(
                    f"checkpoints in chapter {chapter:>3}: {len(values):>3}, bytes each "
                    f"mean {statistics.mean(values):>7.0f}  max {max(values):>7}"
                )
        total = sum(len(v) for v in sizes.values())
        print(f"checkpoints in the {args.chapters_long}-chapter run: {total}")
        started = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).with_name("scribe")),
                "--data-dir",
                str(Path(tmp) / "cli"),
                "write",
                "--premise",
                PREMISE,
                "--chapters",
                "3",
            ],
            check=True,
            capture_output=True,
        )
        print(
            f"`scribe write --chapters 3` end to end (process start to book): "
            f"{time.perf_counter() - started:.2f} s"
        )
    print(f"`scribe --help` median of 5: {_help_time() * 1000:.0f} ms")


if __name__ == "__main__":
    main()
