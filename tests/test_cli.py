"""The ``scribe`` command line: happy paths, bad input, and a crash in the middle of a book."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.cli import main, parse_chapter_file, parse_outline_file

ROOT = Path(__file__).resolve().parent.parent
PREMISE = "Two rival clockmakers in a drowned city race to rebuild the tide engine."


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_write_sessions_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    book = tmp_path / "book.md"
    code, out, err = _run(
        capsys,
        "--data-dir",
        data,
        "write",
        "--premise",
        PREMISE,
        "--chapters",
        "2",
        "--out",
        str(book),
    )
    assert code == 0, err
    session_id = out.splitlines()[0]
    assert str(uuid.UUID(session_id)) == session_id
    assert "offline model" in err
    text = book.read_text()
    assert text.startswith("# ")
    assert text.count("\n## ") == 2

    code, out, _ = _run(capsys, "--data-dir", data, "sessions")
    assert code == 0
    assert session_id in out and "completed" in out and "2/2" in out

    epub = tmp_path / "book.epub"
    code, _, err = _run(
        capsys, "--data-dir", data, "export", session_id, "--format", "epub", "--out", str(epub)
    )
    assert code == 0, err
    with zipfile.ZipFile(epub) as archive:
        assert archive.namelist()[0] == "mimetype"
        assert archive.read("mimetype") == b"application/epub+zip"

    code, _, err = _run(capsys, "--data-dir", data, "resume", session_id)
    assert code == 2
    assert "already completed" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["write", "--premise", "   ", "--chapters", "3"], "premise must be a non-empty text"),
        (["write", "--premise", "x" * 5000, "--chapters", "3"], "the limit is 4000"),
        (["write", "--premise", "p", "--chapters", "0"], "chapters must be between 1 and 100"),
        (["write", "--premise", "p", "--chapters", "101"], "chapters must be between 1 and 100"),
        (["write", "--premise", "p", "--chapters", "two"], "invalid int value"),
        (
            ["write", "--premise", "p", "--chapters", "2", "--pause", "epilogue"],
            "unknown pause point",
        ),
        (["resume", "not-a-uuid"], "is not a session id"),
        (["resume", str(uuid.UUID(int=1))], "no sessions in"),
        (["export", str(uuid.UUID(int=1)), "--out", "x.md"], "no sessions in"),
    ],
)
def test_bad_input_one_line_nonzero_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    data = tmp_path / "data"
    code, out, err = _run(capsys, "--data-dir", str(data), *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""
    assert not data.exists(), "bad input must write nothing"


@pytest.mark.slow
def test_unknown_session_and_unreadable_edit_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code, out, err = _run(
        capsys,
        "--data-dir",
        str(data),
        "write",
        "--premise",
        PREMISE,
        "--chapters",
        "1",
        "--pause",
        "outline",
    )
    assert code == 0, err
    session_id = out.splitlines()[0]
    assert "Paused for the author after the outline" in err
    outline_file = data / "sessions" / session_id / "outline.md"
    assert outline_file.exists()
    before = _snapshot(data)

    code, _, err = _run(capsys, "--data-dir", str(data), "resume", str(uuid.uuid4()), "--approve")
    assert code == 2 and "no session" in err
    code, _, err = _run(
        capsys,
        "--data-dir",
        str(data),
        "resume",
        session_id,
        "--edit",
        str(tmp_path / "missing.md"),
    )
    assert code == 2 and "cannot read edit file" in err
    bad = tmp_path / "bad.md"
    bad.write_text("no headings here")
    code, _, err = _run(capsys, "--data-dir", str(data), "resume", session_id, "--edit", str(bad))
    assert code == 2 and "has no chapters" in err
    code, _, err = _run(capsys, "--data-dir", str(data), "resume", session_id)
    assert code == 2 and "paused at the outline" in err
    after = _snapshot(data)
    changed = {k for k in before if before[k] != after.get(k) and not k.endswith(("-wal", "-shm"))}
    assert not {k for k in changed if not k.endswith(".db")}, changed

    # and the session is still resumable: edit the outline file as an author would
    outline_file.write_text(outline_file.read_text().replace("## 1. ", "## 1. Edited: "))
    code, _, err = _run(
        capsys, "--data-dir", str(data), "resume", session_id, "--edit", str(outline_file)
    )
    assert code == 0, err
    assert "Finished" in err


def test_edit_file_parsers() -> None:
    outline = parse_outline_file(
        "# Book\n\nlogline\n\n## 1. Start\nIt begins.\n\n## Chapter 2: End\nIt ends.\n"
    )
    assert outline == [
        {"number": 1, "title": "Start", "summary": "It begins."},
        {"number": 2, "title": "End", "summary": "It ends."},
    ]
    assert parse_outline_file('[{"title": "A", "summary": "a"}]') == [
        {"number": 1, "title": "A", "summary": "a"}
    ]
    chapter = parse_chapter_file("# Chapter 3: The Door\n\nShe opened it.\n")
    assert chapter == {"action": "edit", "text": "She opened it.", "title": "The Door"}


def _chapters_in_db(db: Path) -> list[int]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return [r[0] for r in conn.execute("SELECT number FROM chapters ORDER BY number")]
    except sqlite3.OperationalError:
        return []


@dataclass(frozen=True)
class Writing:
    """``scribe write`` running in a child process, past its first chapter."""

    proc: subprocess.Popen[str]
    session_id: str
    data: Path
    env: dict[str, str]
    cmd: list[str]

    def parts(self) -> tuple[subprocess.Popen[str], str, Path, dict[str, str], list[str]]:
        return self.proc, self.session_id, self.data, self.env, self.cmd


def _write_until_chapter_one(tmp_path: Path, chapters: int) -> Writing:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIBE_", "OPENAI_"))}
    env.update({"SCRIBE_DATA_DIR": str(data), "SCRIBE_OFFLINE_TOKENS_PER_SECOND": "400"})
    cmd = [sys.executable, "-m", "server.cli"]
    proc = subprocess.Popen(
        [*cmd, "write", "--premise", PREMISE, "--chapters", str(chapters), "--genre", "fantasy"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background of a shell inherits SIGINT ignored, and so
        # would the CLI: give it the default a user's terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    session_id = proc.stdout.readline().strip() if proc.stdout else ""
    deadline = time.monotonic() + 120
    while _chapters_in_db(data / "scribe.db") != [1]:
        assert proc.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline, "chapter 1 was never accepted"
        time.sleep(0.05)
    return Writing(proc, session_id, data, env, cmd)


@pytest.mark.slow
def test_killed_mid_chapter_then_resume_finishes_the_book(tmp_path: Path) -> None:
    writing = _write_until_chapter_one(tmp_path, 3)
    proc, session_id, data, env, cmd = writing.parts()
    time.sleep(1.0)  # chapter 2 is being planned or drafted now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _chapters_in_db(data / "scribe.db") == [1], "killed too late: not mid-chapter 2"
    with sqlite3.connect(data / "scribe.db") as conn:
        chapter1_before = conn.execute(
            "SELECT current_version_id FROM chapters WHERE number = 1"
        ).fetchone()

    done = subprocess.run(
        [*cmd, "resume", session_id], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Finished" in done.stderr
    with sqlite3.connect(data / "scribe.db") as conn:
        rows = conn.execute(
            "SELECT number, current_version_id FROM chapters ORDER BY number"
        ).fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        assert rows[0][1] == chapter1_before[0], "chapter 1 was redone after the crash"
        status = conn.execute("SELECT status FROM novels WHERE id = ?", (session_id,)).fetchone()[0]
    assert status == "completed"
    book = Path(done.stdout.strip().splitlines()[-1]).read_text()
    assert book.count("\n## ") == 3


@pytest.mark.slow
def test_ctrl_c_hands_the_run_back_and_resume_goes_on_at_once(tmp_path: Path) -> None:
    """Ctrl-C stops the run where it is and gives it back to the queue, so ``scribe
    resume`` takes the same run up again at once (no lease to wait out)."""
    writing = _write_until_chapter_one(tmp_path, 2)
    proc, session_id, data, env, cmd = writing.parts()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "scribe resume SESSION" in stderr
    with sqlite3.connect(data / "scribe.db") as conn:
        (run_id, status, attempts) = conn.execute(
            "SELECT run_id, status, attempts FROM runs WHERE thread_id = ?", (session_id,)
        ).fetchone()
    assert status == "pending", "handed back to the queue"
    assert attempts == 0, "a run handed back does not count as a crashed attempt"

    started = time.monotonic()
    done = subprocess.run(
        [*cmd, "resume", session_id], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(data / "scribe.db") as conn:
        runs = conn.execute(
            "SELECT run_id, status FROM runs WHERE thread_id = ?", (session_id,)
        ).fetchall()
        numbers = [r[0] for r in conn.execute("SELECT number FROM chapters ORDER BY number")]
    assert runs == [(run_id, "success")], "the same run went on, no second one"
    assert numbers == [1, 2]
    assert time.monotonic() - started < 120


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"seed": 3}', "may not set seed: scribe sets those itself"),
        ("[1, 2]", "invalid setting writer.extra_body: Input should be a valid dictionary"),
        ("{not json", "extra_body"),
    ],
)
def test_extra_request_fields_are_checked_once_at_the_start(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv("SCRIBE_WRITER__EXTRA_BODY", value)
    data = tmp_path / "data"
    code, _, err = _run(capsys, "--data-dir", str(data), "sessions")
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not data.exists()


def test_extra_request_fields_per_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.settings import load_settings

    monkeypatch.setenv("SCRIBE_MODEL", "qwen15")
    monkeypatch.setenv("SCRIBE_EXTRA_BODY", '{"top_k": 40}')
    monkeypatch.setenv("SCRIBE_WRITER__EXTRA_BODY", '{"repeat_penalty": 1.15}')
    settings = load_settings()
    writer, reviewer = settings.model_for("writer"), settings.model_for("reviewer")
    assert writer is not None and reviewer is not None
    assert writer.extra_body == {"repeat_penalty": 1.15}  # the agent's own replaces the shared
    assert reviewer.extra_body == {"top_k": 40}


def test_progress_on_a_pipe_shows_milestones_and_a_plan_from_the_outline() -> None:
    import io

    from server.progress import ProgressView

    out = io.StringIO()
    with ProgressView(2, stream=out) as view:
        view({"agent": "director", "step": "beats", "chapter": 1})
        view({"agent": "director", "step": "beats_from_outline", "chapter": 1, "error": "x"})
        view({"agent": "writer", "step": "drafting", "chapter": 1})
        view({"agent": "worldsmith", "step": "recorded", "chapter": 1})
    lines = out.getvalue().splitlines()
    # Routine steps stay quiet on a pipe; a chapter planned without the model is said.
    assert lines == [
        "[0/2] director   ch 1 planned from the outline (the model gave no usable plan)",
        "[1/2] worldsmith ch 1 world updated",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accept", "1"], "--accept goes with --approve"),
        (["--approve", "--accept", "one"], "--accept takes finding numbers such as 1,3"),
    ],
)
def test_resume_accept_needs_approve_and_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    session = str(uuid.uuid4())
    code, out, err = _run(capsys, "--data-dir", str(tmp_path), "resume", session, *argv)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"scribe: error: {message}"), err


def test_a_chapter_gate_lists_its_findings_by_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import _show_gate
    from server.sessions import Gate
    from server.settings import load_settings

    finding = {
        "number": 1,
        "kind": "life",
        "severity": "major",
        "quote": "Ada laughed at the door.",
        "problem": "Ada died before this chapter, but here Ada is present and acting now.",
    }
    gate = Gate("chapter", {"chapter": 2, "findings": [finding]})
    _show_gate(None, load_settings(data_dir=tmp_path), "s-1", gate)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "1. major life: Ada died before this chapter" in err
    assert "“Ada laughed at the door.”" in err
    assert "scribe resume s-1 --approve --accept 1,2" in err


def test_serve_refuses_a_topology_whose_runs_would_wait_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No in-process workers on the embedded default: separate workers could not open its
    vector store, so serve refuses at start instead of accepting runs nobody executes."""
    monkeypatch.setenv("SCRIBE_WORKER_CONCURRENCY", "0")
    code = main(["--data-dir", str(tmp_path / "data"), "serve", "--port", "8123"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("scribe: error:")]
    assert len(lines) == 1 and "SCRIBE_WORKER_CONCURRENCY=0" in lines[0]
    assert "QDRANT_URL" in lines[0]
    assert not (tmp_path / "data" / "scribe.db").exists(), "nothing was opened"
