"""Smoke test of ``tests/benchmarks/runs_api.py``: its figures come from real runs.

The embedded target (``scribe serve`` in a subprocess) with 2 concurrent SDK clients must
produce 2 finished books and numeric figures, and leave no server behind. Nothing here
asserts a speed: speed goals live in the benchmark's printed table.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from tests.benchmarks.runs_api import (
    Batch,
    RunSample,
    TargetReport,
    Workload,
    bench_target,
    format_table,
    percentile,
)


def test_percentile_is_nearest_rank() -> None:
    hundred = [float(v) for v in range(100, 0, -1)]
    assert percentile(hundred, 50) == 50.0
    assert percentile(hundred, 99) == 99.0
    assert percentile(hundred, 100) == 100.0
    # Fewer samples than 100: p99 is the largest.
    assert percentile([0.3, 0.1, 0.2], 99) == 0.3
    assert percentile([0.3, 0.1, 0.2], 50) == 0.2
    assert percentile([], 50) is None


def test_failed_runs_count_as_errors_not_figures() -> None:
    good = RunSample(True, run_s=2.0, first_event_s=0.01, first_data_s=0.05, events=40)
    bad = RunSample(False, run_s=0.5, first_event_s=0.02, first_data_s=None, events=2, error="x")
    batch = Batch("embedded", clients=2, wall_s=4.0, samples=(good, bad))
    assert (batch.runs, batch.errors) == (2, 1)
    assert batch.runs_per_s == 0.25
    assert batch.ttfe(99, metadata_included=True) == 0.01
    assert batch.ttfe(50, metadata_included=False) == 0.05
    assert batch.run_time(50) == 2.0
    table = format_table([TargetReport("embedded", (batch,))])
    assert "embedded x2: 1 error(s), e.g. x" in table


@pytest.mark.slow
def test_embedded_target_two_clients(tmp_path: Path) -> None:
    workload = Workload(
        words_per_chapter=100,
        tokens_per_second=1000.0,
        runs_per_client=1,
        workers=2,
        warm_up=False,
        run_timeout_s=120.0,
    )
    report = bench_target("embedded", (2,), workload, tmp_path)
    assert report.unavailable is None
    [batch] = report.batches
    assert (batch.target, batch.clients, batch.runs, batch.errors) == ("embedded", 2, 2, 0)
    assert math.isfinite(batch.runs_per_s) and batch.runs_per_s > 0
    for sample in batch.samples:
        assert sample.ok and sample.error is None
        assert sample.first_event_s is not None and sample.first_data_s is not None
        # metadata, then the graph's events (tokens among them), then the end.
        assert 0 < sample.first_event_s <= sample.first_data_s < sample.run_s
        assert sample.events > 20
    for q in (50, 99):
        for included in (True, False):
            value = batch.ttfe(q, metadata_included=included)
            assert value is not None and math.isfinite(value) and value > 0
    row = next(line for line in format_table([report]).splitlines() if line.startswith("embedded"))
    cells = row.split()
    assert cells[:3] == ["embedded", "2", "2"]
    assert all(float(cell) >= 0 for cell in cells[3:])
    log = tmp_path / "embedded" / "scribe-serve.log"
    assert log.exists() and "Application startup complete" in log.read_text()
    # The server (named by its --data-dir on the command line) was stopped.
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert str(tmp_path).encode() not in cmdline, f"process {pid} of the benchmark is alive"
