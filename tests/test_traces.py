"""Traces and replay end to end: recording, full and mixed replays, replay from a checkpoint,
budgets, the JSON Lines export against its schema, run comparison, and the CLI commands.

Everything runs on the embedded default (SQLite, Qdrant local) with the offline model;
``offline:<variant>`` names a differently seeded offline model, which stands in for a
changed agent (a new prompt or model) deterministically.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from errors import NotFound, ReplayMissing
from memory.traces.port import ModelCall
from nodes.schemas import AGENTS
from nodes.session import BookRequest, validate_request
from server.backends import Backends, open_backends
from server.cli import main
from server.sessions import Sessions, thread_config
from server.settings import Settings, load_settings
from server.trace_export import (
    TRACE_LINE_SCHEMA,
    compare_runs,
    render_comparison,
    review_verdicts,
    run_steps,
    trace_lines,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PREMISE = "A lighthouse keeper finds a map of a coast that is not on any chart."
WORDS = 150
CHAPTERS = 2
TIMEOUT_S = 300
# Which agent each model-calling node asks (the graph's wiring, see graphs/novel.py).
MODEL_NODES = {
    "director_plan": "director",
    "director_beats": "director",
    "worldsmith_seed": "worldsmith",
    "writer": "writer",
    "reviewer": "reviewer",
}
# The reviewer reads a draft's claims and then judges it; the worldsmith records the
# accepted draft's claims without another call.
CALLS_PER_STEP = {"worldsmith_seed": 3, "reviewer": 2}
"""Model calls per node step where there is more than one (places, cast, links)."""
ID_KEYS = frozenset({"novel_id", "draft_id"})
"""State keys that hold ids: a replay on a new thread has its own."""


# --- helpers ----------------------------------------------------------------------------


def _settings(data: Path, **overrides: Any) -> Settings:
    return load_settings(data_dir=data, words_per_chapter=WORDS, **overrides)


def _request(chapters: int = CHAPTERS) -> BookRequest:
    return validate_request(PREMISE, chapters)


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIBE_", "OPENAI_"))}
    env.update({"SCRIBE_DATA_DIR": str(data), "SCRIBE_WORDS_PER_CHAPTER": str(WORDS), **extra})
    return env


def _scribe(data: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``scribe`` command in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *argv],
        cwd=ROOT,
        env=_env(data, **env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def steps_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The step lines of a trace."""
    return [line for line in lines if line["type"] == "step"]


def _validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(TRACE_LINE_SCHEMA)
    return jsonschema.Draft202012Validator(
        # date-time is only checked with the optional rfc3339-validator; the rest is.
        TRACE_LINE_SCHEMA,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _verdicts(calls: list[ModelCall]) -> list[dict[str, Any] | None]:
    return [c.structured for c in calls if c.task == "chapter_review"]


def _key(call: ModelCall) -> tuple[str, str, int, int]:
    return (call.agent, call.node, call.chapter, call.index)


def _by_visit(calls: list[ModelCall]) -> dict[tuple[str, str, int, int, int], ModelCall]:
    """Calls by (agent, node, chapter, index, visit): how a replay finds its answers."""
    seen: Counter[tuple[str, str, int, int]] = Counter()
    out: dict[tuple[str, str, int, int, int], ModelCall] = {}
    for call in calls:
        key = _key(call)
        seen[key] += 1
        out[(*key, seen[key])] = call
    return out


def _drafts_per_chapter(calls: list[ModelCall]) -> Counter[int]:
    return Counter(c.chapter for c in calls if c.agent == "writer")


async def _state(backends: Backends, session_id: str) -> dict[str, Any]:
    snapshot = await backends.graph.aget_state(thread_config(session_id))
    return dict(snapshot.values)


@dataclass(frozen=True)
class Book:
    """A 2-chapter book written by the real CLI, and its run."""

    data: Path
    session_id: str
    run_id: str


@pytest.fixture(scope="module")
def cli_book(tmp_path_factory: pytest.TempPathFactory) -> Book:
    """``scribe write`` in a child process (shared: tests only add sessions next to it)."""
    data = tmp_path_factory.mktemp("cli-book") / "data"
    written = _scribe(data, "write", "--premise", PREMISE, "--chapters", str(CHAPTERS))
    assert written.returncode == 0, written.stderr
    session_id = written.stdout.splitlines()[0]

    async def runs() -> list[str]:
        async with open_backends(_settings(data)) as backends:
            return [r.run_id for r in await backends.tracing.store.thread_runs(session_id)]

    [run_id] = asyncio.run(runs())
    return Book(data, session_id, run_id)


def _main(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    """The ``scribe`` command in this process (faster than a child; same code path)."""
    code = main(["--data-dir", str(data), *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- recording --------------------------------------------------------------------------


async def test_a_cli_run_records_every_model_call(cli_book: Book) -> None:
    async with open_backends(_settings(cli_book.data)) as backends:
        store = backends.tracing.store
        runs = await store.thread_runs(cli_book.session_id)
        assert [(r.run_id, r.source, r.status, r.sequence) for r in runs] == [
            (cli_book.run_id, "cli", "success", 1)
        ]
        run = runs[0]
        assert run.input["premise"] == PREMISE and run.finished_at is not None
        calls = await store.calls(run.run_id)
        steps = await run_steps(backends, run)

        # one call per model-calling node step (the offline model never needs a repair)
        model_steps = [s for s in steps if s.node in MODEL_NODES]
        assert {(c.step, c.task_id) for c in calls} == {(s.step, s.task_id) for s in model_steps}
        per_agent: Counter[str] = Counter()
        for s in model_steps:
            per_agent[MODEL_NODES[s.node]] += CALLS_PER_STEP.get(s.node, 1)
        assert Counter(c.agent for c in calls) == per_agent
        usage = await store.usage(run_id=run.run_id)
        assert {a.agent: a.calls for a in usage.agents} == dict(per_agent)
        assert per_agent["writer"] >= CHAPTERS and per_agent["reviewer"] == 2 * per_agent["writer"]
        assert usage.total_tokens == sum(c.total_tokens for c in calls) > 0

        by_step: dict[tuple[int, str | None], list[int]] = defaultdict(list)
        for call in calls:
            assert call.run_id == run.run_id and call.thread_id == cli_book.session_id
            assert call.input_tokens > 0 and call.output_tokens > 0
            assert call.latency_ms >= 0 and call.attempts == 1 and call.error is None
            assert call.model == "offline" and call.cost_usd == 0.0
            assert call.messages and all(m["content"] for m in call.messages)
            assert [m["role"] for m in call.messages][:2] == ["system", "user"]
            assert call.answer.strip()
            assert MODEL_NODES[call.node] == call.agent
            # the checkpoint the step started from exists, one step before the call's
            assert call.checkpoint_id is not None
            found = await backends.checkpointer.aget_tuple(
                {
                    "configurable": {
                        "thread_id": cli_book.session_id,
                        "checkpoint_ns": "",
                        "checkpoint_id": call.checkpoint_id,
                    }
                }
            )
            assert found is not None
            assert found.metadata["step"] == call.step - 1
            assert found.metadata["run_id"] == run.run_id
            by_step[(call.step, call.task_id)].append(call.index)
        assert all(sorted(ix) == list(range(len(ix))) for ix in by_step.values())

        # structured tasks keep their parsed answer; prose tasks do not
        for call in calls:
            assert (call.structured is None) == (call.agent == "writer")

        # the stored drafts are the recorded writer answers (cut at a paragraph end when
        # one runs far past the target length)
        writer_steps = [s for s in steps if s.node == "writer"]
        by_task = {c.task_id: c for c in calls}
        for step in writer_steps:
            assert step.update is not None
            version = await backends.store.get_version(step.update["draft_id"])
            assert by_task[step.task_id].answer.strip().startswith(version.text)
        accepted = await backends.store.list_chapters(cli_book.session_id)
        drafts = [c.answer.strip() for c in calls if c.agent == "writer"]
        assert [c.number for c in accepted] == list(range(1, CHAPTERS + 1))
        assert all(any(d.startswith(c.text) for d in drafts) for c in accepted)


# --- full replay ------------------------------------------------------------------------


async def test_full_replay_reproduces_chapters_verdicts_world_and_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    variants = {agent: {"model": f"offline:{agent}-v2"} for agent in AGENTS}
    async with open_backends(_settings(data, **variants)) as backends:
        source = await Sessions(backends).start(_request())
    assert source.status == "completed"

    # The settings now name the plain offline model: only the records can reproduce it.
    async with open_backends(_settings(data)) as backends:
        sessions = Sessions(backends)
        replay = await sessions.replay(source.run_id)
        plain = await sessions.start(_request())
        store, traces = backends.store, backends.tracing.store
        assert replay.status == "completed" and replay.session_id != source.session_id

        src_chapters = await store.list_chapters(source.session_id)
        new_chapters = await store.list_chapters(replay.session_id)
        plain_chapters = await store.list_chapters(plain.session_id)
        assert len(src_chapters) == CHAPTERS
        assert [(c.number, c.title, c.text.encode()) for c in new_chapters] == [
            (c.number, c.title, c.text.encode()) for c in src_chapters
        ]
        assert [c.text for c in plain_chapters] != [c.text for c in src_chapters]

        src_calls = await traces.calls(source.run_id)
        new_calls = await traces.calls(replay.run_id)
        assert {c.model for c in src_calls} == {f"offline:{a}-v2" for a in AGENTS}
        assert {c.model for c in new_calls} == {"replay"}
        assert _verdicts(new_calls) == _verdicts(src_calls)
        assert all(v for v in _verdicts(src_calls))
        assert [c.answer for c in new_calls] == [c.answer for c in src_calls]
        assert [c.replayed_from for c in new_calls] == [c.call_id for c in src_calls]
        src_usage = await traces.usage(run_id=source.run_id)
        new_usage = await traces.usage(run_id=replay.run_id)
        assert new_usage.total_tokens == src_usage.total_tokens
        assert new_usage.cost_usd == src_usage.cost_usd == 0.0

        for chapter in range(CHAPTERS + 1):
            src_world = await backends.context.world.world_as_of(source.session_id, chapter)
            new_world = await backends.context.world.world_as_of(replay.session_id, chapter)
            assert new_world == src_world
        assert src_world.entities and src_world.facts and src_world.setups
        assert any(f.is_relationship for f in src_world.facts)

        src_state = await _state(backends, source.session_id)
        new_state = await _state(backends, replay.session_id)
        assert new_state["done"] is True
        assert {k: v for k, v in new_state.items() if k not in ID_KEYS} == {
            k: v for k, v in src_state.items() if k not in ID_KEYS
        }
        assert new_state["novel_id"] == replay.session_id
        new_draft = await store.get_version(new_state["draft_id"])
        src_draft = await store.get_version(src_state["draft_id"])
        assert new_draft.novel_id == replay.session_id and new_draft.text == src_draft.text

        run = await traces.get_run(replay.run_id)
        assert run.source == "replay" and run.status == "success"
        assert run.replay is not None and run.replay.source_run_id == source.run_id
        assert run.replay.recorded_agents == tuple(AGENTS)


# --- mixed replay -----------------------------------------------------------------------


async def test_mixed_replay_changes_only_the_reviewer_and_what_follows(cli_book: Book) -> None:
    strict = _settings(cli_book.data, reviewer={"model": "offline:strict"})
    async with open_backends(strict) as backends:
        mixed = await Sessions(backends).replay(cli_book.run_id, live=["reviewer"])
        assert mixed.status == "completed"
        traces = backends.tracing.store
        src_calls = await traces.calls(cli_book.run_id)
        new_calls = await traces.calls(mixed.run_id)
        run = await traces.get_run(mixed.run_id)
        assert run.replay is not None
        assert run.replay.recorded_agents == ("director", "worldsmith", "writer")

        # the reviewer is live (the strict variant) and judges differently
        reviews = [c for c in new_calls if c.agent == "reviewer"]
        assert reviews and all(c.model == "offline:strict" for c in reviews)
        assert all(c.replayed_from is None for c in reviews)
        assert _verdicts(new_calls)[0] != _verdicts(src_calls)[0]

        # everyone else answers from the records: the same answer for the same call
        source_by_visit = _by_visit(src_calls)
        for key, call in _by_visit(new_calls).items():
            if call.agent == "reviewer":
                continue
            assert call.replayed_from == source_by_visit[key].call_id
            assert call.answer == source_by_visit[key].answer
        first_draft = ("writer", "writer", 1, 0, 1)
        assert _by_visit(new_calls)[first_draft].answer == source_by_visit[first_draft].answer
        src_state = await _state(backends, cli_book.session_id)
        new_state = await _state(backends, mixed.session_id)
        assert new_state["bible"] == src_state["bible"]
        assert new_state["outline"] == src_state["outline"]

        # the comparison shows the reviewer's differences and identical texts where the
        # two runs accepted the same recorded draft (same number of drafts per chapter)
        comparison = await compare_runs(backends, cli_book.run_id, mixed.run_id)
    src_drafts, new_drafts = _drafts_per_chapter(src_calls), _drafts_per_chapter(new_calls)
    assert [c.number for c in comparison.chapters] == list(range(1, CHAPTERS + 1))
    for chapter in comparison.chapters:
        same_draft = src_drafts[chapter.number] == new_drafts[chapter.number]
        assert chapter.identical == same_draft, chapter.number
        assert (chapter.diff == "") == same_draft
        assert [v.scores for v in chapter.verdicts_a] == [
            v["scores"] for v in _verdicts_of(src_calls, chapter.number)
        ]
        assert [v.scores for v in chapter.verdicts_b] == [
            v["scores"] for v in _verdicts_of(new_calls, chapter.number)
        ]
        assert all(v.replayed is False for v in chapter.verdicts_b)
    assert any(c.identical for c in comparison.chapters)
    assert any(
        [v.scores for v in c.verdicts_a] != [v.scores for v in c.verdicts_b]
        for c in comparison.chapters
    )
    assert comparison.usage_b.total_tokens > 0
    text = render_comparison(comparison)
    assert cli_book.run_id in text and mixed.run_id in text
    for chapter in comparison.chapters:
        assert f"== Chapter {chapter.number}" in text
        last = chapter.last_b
        assert last is not None and f"low {last.lowest}" in text
    assert "text: identical" in text
    data = comparison.to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["differing_chapters"] == comparison.differing_chapters


def _verdicts_of(calls: list[ModelCall], chapter: int) -> list[dict[str, Any]]:
    """The reviewer's parsed answers for one chapter, one per reviewer step."""
    return [
        c.structured
        for c in calls
        if c.task == "chapter_review" and c.chapter == chapter and c.structured is not None
    ]


async def test_a_replay_needing_an_unrecorded_call_names_the_agent_and_call(
    tmp_path: Path,
) -> None:
    """Recorded without revisions, replayed with them allowed and a strict reviewer: the
    reviewer sends chapter 1 back, and the writer's second draft was never recorded."""
    data = tmp_path / "data"
    async with open_backends(_settings(data, max_revisions=0)) as backends:
        source = await Sessions(backends).start(_request())
        calls = await backends.tracing.store.calls(source.run_id)
    assert _drafts_per_chapter(calls) == Counter(range(1, CHAPTERS + 1))

    strict = _settings(data, max_revisions=2, reviewer={"model": "offline:strict"})
    async with open_backends(strict) as backends:
        session_id = Sessions.new_id()
        with pytest.raises(ReplayMissing) as raised:
            await Sessions(backends).replay(source.run_id, live=["reviewer"], session_id=session_id)
        error = raised.value
        assert error.agent == "writer"
        assert error.data["call_index"] == 0 and error.data["chapter"] == 1
        assert error.data["visit"] == 2 and error.data["source_run_id"] == source.run_id
        assert "writer call #0" in error.message and source.run_id in error.message

        [run] = await backends.tracing.store.thread_runs(session_id)
        assert run.status == "error" and "never recorded" in (run.stop_reason or "")
        record = await backends.store.get_novel(session_id)
        assert record.status == "failed"
        reviews = [
            c for c in await backends.tracing.store.calls(run.run_id) if c.agent == "reviewer"
        ]
        assert reviews[0].structured is not None and reviews[0].replayed_from is None


async def test_a_replay_with_claims_read_otherwise_says_the_settings_differ(
    cli_book: Book,
) -> None:
    """Recorded with the claims read in one call, replayed with them read in parts: the
    recorded answer of another task is not passed off as this one's."""
    split = _settings(cli_book.data, split_answers=True)
    async with open_backends(split) as backends:
        with pytest.raises(ReplayMissing) as raised:
            await Sessions(backends).replay(cli_book.run_id, session_id=Sessions.new_id())
    error = raised.value
    assert error.agent == "reviewer" and error.data["chapter"] == 1
    assert "chapter_claims_scene" in error.message and "asked chapter_claims" in error.message
    assert "SCRIBE_SPLIT_ANSWERS" in error.message


async def test_a_replay_cut_off_mid_book_goes_on_with_resume(cli_book: Book) -> None:
    """A CLI replay stopped mid-book (Ctrl-C, a crash) is the same queued run as an API
    replay: ``resume`` finishes it from its last checkpoint and replay step."""
    slow = _settings(cli_book.data, offline_tokens_per_second=300.0)
    async with open_backends(slow) as backends:
        sessions = Sessions(backends)
        session_id = sessions.new_id()
        replaying = asyncio.create_task(
            sessions.replay(cli_book.run_id, live=["writer"], session_id=session_id)
        )
        async with asyncio.timeout(TIMEOUT_S):
            while len(await backends.store.list_chapters(session_id)) < 1:
                assert not replaying.done(), replaying
                await asyncio.sleep(0.05)
        replaying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await replaying
        assert [c.number for c in await backends.store.list_chapters(session_id)] == [1]

        result = await sessions.resume(session_id, None)
        assert result.status == "completed"
        chapters = await backends.store.list_chapters(session_id)
        source = await backends.store.list_chapters(cli_book.session_id)
        assert [(c.number, c.text) for c in chapters] == [(c.number, c.text) for c in source]
        [run] = await backends.tracing.store.thread_runs(session_id)
        assert run.run_id == result.run_id and run.source == "replay"
        assert run.status == "success"


async def test_replay_from_a_checkpoint_goes_live_after_it(cli_book: Book) -> None:
    strict = _settings(cli_book.data, reviewer={"model": "offline:strict"})
    async with open_backends(strict) as backends:
        traces = backends.tracing.store
        src_calls = await traces.calls(cli_book.run_id)
        # the checkpoint chapter 2 starts from: before its beats are planned
        beats = next(c for c in src_calls if c.node == "director_beats" and c.chapter == 2)
        assert beats.checkpoint_id is not None
        with pytest.raises(NotFound):
            await Sessions(backends).replay(
                cli_book.run_id, live=["reviewer"], from_checkpoint_id=str(uuid.uuid4())
            )
        result = await Sessions(backends).replay(
            cli_book.run_id, live=["reviewer"], from_checkpoint_id=beats.checkpoint_id
        )
        assert result.status == "completed"
        run = await traces.get_run(result.run_id)
        assert run.replay is not None
        assert run.replay.from_checkpoint_id == beats.checkpoint_id
        assert run.replay.live_from_step == beats.step
        new_calls = await traces.calls(result.run_id)

        before = [c for c in new_calls if c.step < beats.step]
        after = [c for c in new_calls if c.step >= beats.step]
        source_by_visit = _by_visit(src_calls)
        for key, call in _by_visit(new_calls).items():
            if call.step < beats.step or call.agent != "reviewer":
                assert call.replayed_from == source_by_visit[key].call_id, key
                assert call.model == "replay"
            else:
                assert call.replayed_from is None and call.model == "offline:strict"
        assert any(c.agent == "reviewer" for c in before)
        assert any(c.agent == "reviewer" for c in after)
        assert all(c.chapter == 1 for c in before) and all(c.chapter == 2 for c in after)

        src_chapter = await backends.store.get_chapter(cli_book.session_id, 1)
        new_chapter = await backends.store.get_chapter(result.session_id, 1)
        assert new_chapter.text == src_chapter.text
        src_verdicts, new_verdicts = review_verdicts(src_calls), review_verdicts(new_calls)
        assert [v.scores for v in new_verdicts[1]] == [v.scores for v in src_verdicts[1]]
        assert all(v.replayed for v in new_verdicts[1])
        assert not any(v.replayed for v in new_verdicts[2])


async def test_gates_show_in_traces_and_replays_re_execute_every_run(tmp_path: Path) -> None:
    """A run paused at the outline shows the gate step as interrupted; the run that answers
    it shows it done; a replay of the second run re-executes both, gate answer included."""
    data = tmp_path / "data"
    async with open_backends(_settings(data)) as backends:
        sessions = Sessions(backends)
        paused = await sessions.start(validate_request(PREMISE, 1, None, ["outline"]))
        assert paused.status == "paused" and paused.gate is not None
        approved = await sessions.resume(paused.session_id, {"action": "approve"})
        assert approved.status == "completed"

        validator = _validator()
        first = [line async for line in trace_lines(backends, paused.run_id)]
        second = [line async for line in trace_lines(backends, approved.run_id)]
        for line in [*first, *second]:
            validator.validate(line)
        gate = steps_of(first)[-1]
        assert gate["node"] == "outline_gate" and gate["status"] == "interrupted"
        assert gate["interrupts"] and gate["interrupts"][0]["value"]["gate"] == "outline"
        assert gate["next_checkpoint_id"] is None and gate["update"] is None
        answered = steps_of(second)[0]
        assert (answered["node"], answered["status"]) == ("outline_gate", "done")
        assert answered["task_id"] == gate["task_id"]
        assert answered["update"] == {"outline_gate": "approve"}
        assert second[0]["command"] == {"resume": {"action": "approve"}}
        first_steps = {s["step"] for s in steps_of(first) if s["status"] == "done"}
        assert first_steps.isdisjoint(s["step"] for s in steps_of(second))

        replay = await sessions.replay(approved.run_id)
        assert replay.status == "completed"
        new_calls = await backends.tracing.store.calls(replay.run_id)
        old_calls = [
            *await backends.tracing.store.calls(paused.run_id),
            *await backends.tracing.store.calls(approved.run_id),
        ]
        assert [c.replayed_from for c in new_calls] == [c.call_id for c in old_calls]
        src = await backends.store.get_chapter(paused.session_id, 1)
        new = await backends.store.get_chapter(replay.session_id, 1)
        assert new.text == src.text


# --- budgets (CLI) ----------------------------------------------------------------------


def test_budget_stop_exits_3_and_resume_finishes_the_book(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    budget = 3000
    stopped = _scribe(
        data,
        "write",
        "--premise",
        PREMISE,
        "--chapters",
        str(CHAPTERS),
        "--budget-tokens",
        str(budget),
    )
    assert stopped.returncode == 3, stopped.stderr
    session_id = stopped.stdout.splitlines()[0]
    reason = [line for line in stopped.stderr.splitlines() if line.startswith("scribe:")]
    assert len(reason) == 1
    assert "token budget exceeded" in reason[0]
    assert f"scribe resume {session_id}" in reason[0]
    assert _chapters_in_db(data / "scribe.db") != list(range(1, CHAPTERS + 1))

    code, _, err = _main(capsys, data, "resume", session_id)
    assert code == 0, err
    assert "Finished" in err
    assert _chapters_in_db(data / "scribe.db") == list(range(1, CHAPTERS + 1))

    async def check() -> None:
        async with open_backends(_settings(data)) as backends:
            traces = backends.tracing.store
            first, second = await traces.thread_runs(session_id)
            assert (first.status, second.status) == ("budget_exceeded", "success")
            assert first.budget.max_tokens == budget and not second.budget.limited
            assert first.stop_reason is not None and "token budget" in first.stop_reason
            spent = await traces.usage(run_id=first.run_id)
            assert spent.total_tokens >= budget
            assert second.start_checkpoint_id is not None
            # the stopped run's trace ends at the step the budget stopped, as failed
            lines = [line async for line in trace_lines(backends, first.run_id)]
            steps = [line for line in lines if line["type"] == "step"]
            assert steps[-1]["status"] == "error" and "budget" in steps[-1]["error"]
            assert steps[-1]["checkpoint_id"] == second.start_checkpoint_id
            # ... and the resumed run's trace starts with that step, done this time
            lines = [line async for line in trace_lines(backends, second.run_id)]
            resumed_steps = [line for line in lines if line["type"] == "step"]
            assert resumed_steps[0]["task_id"] == steps[-1]["task_id"]
            assert resumed_steps[0]["status"] == "done"
            for line in lines:
                _validator().validate(line)
            versions = [
                v.number
                for n in range(1, CHAPTERS + 1)
                for v in await backends.store.list_versions(session_id, n)
            ]
            assert sorted(set(versions)) == list(range(1, CHAPTERS + 1))

    asyncio.run(check())


def test_a_cost_budget_stops_the_cli_run_with_prices_from_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A price given for the offline model makes its calls cost money, so a dollar budget
    can stop a run without any network."""
    data = tmp_path / "data"
    monkeypatch.setenv("SCRIBE_WORDS_PER_CHAPTER", str(WORDS))
    monkeypatch.setenv("SCRIBE_MODEL_PRICES", '{"offline": {"input": 500.0, "output": 1500.0}}')
    code, out, err = _main(
        capsys, data, "write", "--premise", PREMISE, "--chapters", "1", "--budget-usd", "1.0"
    )
    assert code == 3, err
    session_id = out.splitlines()[0]
    assert "cost budget exceeded" in err.splitlines()[-1]
    assert f"scribe resume {session_id}" in err.splitlines()[-1]

    async def check() -> None:
        async with open_backends(_settings(data)) as backends:
            traces = backends.tracing.store
            [run] = await traces.thread_runs(session_id)
            assert run.status == "budget_exceeded" and run.budget.max_cost_usd == 1.0
            calls = await traces.calls(run.run_id)
            for call in calls:
                expected = (call.input_tokens * 500.0 + call.output_tokens * 1500.0) / 1e6
                assert call.cost_usd == pytest.approx(expected)
            usage = await traces.usage(run_id=run.run_id)
            assert usage.cost_usd >= 1.0
            # it stopped at the first call after the limit was reached
            assert usage.cost_usd - (calls[-1].cost_usd or 0.0) < 1.0

    asyncio.run(check())


def _chapters_in_db(db: Path) -> list[int]:
    with sqlite3.connect(db, timeout=5) as conn:
        return [r[0] for r in conn.execute("SELECT number FROM chapters ORDER BY number")]


# --- trace export -----------------------------------------------------------------------


def test_trace_export_follows_its_schema_and_covers_the_run(
    cli_book: Book, capsys: pytest.CaptureFixture[str]
) -> None:
    out = cli_book.data.parent / "trace.jsonl"
    exported = _scribe(cli_book.data, "trace", cli_book.run_id, "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == str(out)
    code, printed, err = _main(capsys, cli_book.data, "trace", cli_book.run_id)
    assert code == 0, err
    assert printed == out.read_text()
    lines = [json.loads(line) for line in out.read_text().splitlines()]

    validator = _validator()
    for line in lines:
        validator.validate(line)
    broken_call = dict(next(x for x in lines if x["type"] == "call"))
    del broken_call["answer"]
    assert not validator.is_valid(broken_call)
    assert not validator.is_valid({**lines[0], "type": "chapter"})
    assert not validator.is_valid({**lines[0], "sequence": "1"})
    assert not validator.is_valid({**steps_of(lines)[0], "extra": 1})

    assert [x["type"] for x in lines[:1]] == ["run"]
    assert lines[0]["run_id"] == cli_book.run_id and lines[0]["status"] == "success"
    assert all(x["type"] in ("step", "call") for x in lines[1:])
    steps = [x for x in lines if x["type"] == "step"]
    calls = [x for x in lines if x["type"] == "call"]

    async def check() -> None:
        async with open_backends(_settings(cli_book.data)) as backends:
            # every node step of the run: one per checkpoint the run's steps wrote
            produced = [
                t
                async for t in backends.checkpointer.alist(
                    {"configurable": {"thread_id": cli_book.session_id}},
                    filter={"run_id": cli_book.run_id},
                )
            ]
            loop_steps = sorted(
                t.metadata["step"]
                for t in produced
                if t.metadata["source"] == "loop" and t.metadata["step"] >= 1
            )
            assert [s["step"] for s in steps] == loop_steps
            by_id = {t.config["configurable"]["checkpoint_id"]: t for t in produced}
            for step in steps:
                assert step["status"] == "done" and step["error"] is None
                after = by_id[step["next_checkpoint_id"]]
                assert after.metadata["step"] == step["step"]
                assert after.parent_config is not None
                assert after.parent_config["configurable"]["checkpoint_id"] == step["checkpoint_id"]
            assert steps[0]["node"] == "intake" and steps[-1]["node"] == "finish"
            assert steps[-1]["update"] == {"done": True}

            stored = await backends.tracing.store.calls(cli_book.run_id)
            assert [c["call_id"] for c in calls] == [c.call_id for c in stored]
            names = {f.name for f in fields(ModelCall)}
            for line, call in zip(calls, stored, strict=True):
                assert set(line) == names | {"type"}
                assert line["messages"] == call.messages and line["answer"] == call.answer
                assert line["structured"] == call.structured
                assert (line["input_tokens"], line["output_tokens"]) == (
                    call.input_tokens,
                    call.output_tokens,
                )
                assert (line["step"], line["task_id"], line["checkpoint_id"]) == (
                    call.step,
                    call.task_id,
                    call.checkpoint_id,
                )
            usage = await backends.tracing.store.usage(run_id=cli_book.run_id)
            assert lines[0]["usage"] == usage.to_json()

    asyncio.run(check())

    # each call line follows the line of its own step
    current: dict[str, Any] | None = None
    for line in lines[1:]:
        if line["type"] == "step":
            current = line
        else:
            assert current is not None
            assert (line["step"], line["task_id"]) == (current["step"], current["task_id"])
            assert line["checkpoint_id"] == current["checkpoint_id"]


# --- replay and compare (CLI) -----------------------------------------------------------


def test_cli_replay_and_compare(cli_book: Book, capsys: pytest.CaptureFixture[str]) -> None:
    replayed = _scribe(
        cli_book.data,
        "replay",
        cli_book.run_id,
        "--live",
        "reviewer",
        SCRIBE_REVIEWER__MODEL="offline:strict",
    )
    assert replayed.returncode == 0, replayed.stderr
    session_id, run_id = replayed.stdout.split()
    assert str(uuid.UUID(session_id)) == session_id and str(uuid.UUID(run_id)) == run_id
    assert "live: reviewer" in replayed.stderr and f"as run {run_id}" in replayed.stderr

    code, compared, err = _main(capsys, cli_book.data, "compare", cli_book.run_id, run_id)
    assert code == 0, err
    code, as_json, err = _main(capsys, cli_book.data, "compare", cli_book.run_id, run_id, "--json")
    assert code == 0, err
    data = json.loads(as_json)

    async def expected() -> tuple[dict[str, Any], str]:
        async with open_backends(_settings(cli_book.data)) as backends:
            comparison = await compare_runs(backends, cli_book.run_id, run_id)
            return comparison.to_json(), render_comparison(comparison)

    in_process, text = asyncio.run(expected())
    assert data == in_process
    assert compared == text
    assert data["runs"]["b"]["replay"]["source_run_id"] == cli_book.run_id
    assert [c["number"] for c in data["chapters"]] == list(range(1, CHAPTERS + 1))
    assert any(c["verdicts"]["a"] != c["verdicts"]["b"] for c in data["chapters"])

    # the replayed session shows up with its run
    code, listed, err = _main(capsys, cli_book.data, "sessions")
    assert code == 0, err
    assert any(
        line.startswith(session_id) and f"run {run_id}" in line for line in listed.splitlines()
    )
    assert any(
        line.startswith(cli_book.session_id) and f"run {cli_book.run_id}" in line
        for line in listed.splitlines()
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trace", "not-a-run"], "is not a run id"),
        (["trace", str(uuid.UUID(int=7))], "no sessions in"),
        (["compare", str(uuid.UUID(int=7)), "nope"], "is not a run id"),
        (["replay", str(uuid.UUID(int=7)), "--live", "critic"], "unknown agent 'critic'"),
        (["replay", str(uuid.UUID(int=7)), "--recorded", "writer,poet"], "unknown agent 'poet'"),
        (["write", "--premise", "p", "--chapters", "1", "--budget-tokens", "0"], "positive"),
        (["write", "--premise", "p", "--chapters", "1", "--budget-usd", "-1"], "positive"),
        (["resume", str(uuid.UUID(int=7)), "--budget-usd", "nan"], "positive"),
        (["write", "--premise", "p", "--chapters", "1", "--budget-tokens", "x"], "invalid int"),
    ],
)
def test_bad_trace_and_budget_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    data = tmp_path / "data"
    code = main(["--data-dir", str(data), *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert out == ""
    assert not data.exists()


async def test_unknown_runs_are_not_found(cli_book: Book) -> None:
    unknown = str(uuid.uuid4())
    async with open_backends(_settings(cli_book.data)) as backends:
        with pytest.raises(NotFound):
            await anext(trace_lines(backends, unknown))
        with pytest.raises(NotFound):
            await compare_runs(backends, cli_book.run_id, unknown)
        with pytest.raises(NotFound):
            await Sessions(backends).replay(unknown)


def test_cli_unknown_run_is_one_line(cli_book: Book, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = str(uuid.uuid4())
    for argv in (["trace", unknown], ["compare", cli_book.run_id, unknown], ["replay", unknown]):
        code, out, err = _main(capsys, cli_book.data, *argv)
        assert code == 2, argv
        assert err.strip() == f"scribe: error: no recorded run {unknown}"
        assert out == ""


def test_help_documents_the_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "--help"],
        cwd=ROOT,
        env=_env(Path("unused")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "3    stopped by its budget" in result.stdout
    for command in ("trace", "compare", "replay"):
        assert command in result.stdout
    write_help = subprocess.run(
        [sys.executable, "-m", "server.cli", "write", "--help"],
        cwd=ROOT,
        env=_env(Path("unused")),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "--budget-tokens" in write_help.stdout and "code 3" in write_help.stdout
