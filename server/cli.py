"""The ``scribe`` command line.

Heavy libraries (LangGraph, SQLAlchemy, Qdrant) are imported inside the commands, so
``scribe --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from errors import ConfigurationError, Conflict, InvalidInput, NotFound, ScribeError

if TYPE_CHECKING:
    from memory.traces.port import Budget, TracedRun, TraceStore
    from server.sessions import Gate, RunResult, Sessions
    from server.settings import Settings

MAX_EDIT_BYTES = 1_000_000
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_BUDGET = 3
GRACEFUL_SHUTDOWN_S = 10


class _Parser(argparse.ArgumentParser):
    """argparse with one readable error line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``scribe`` argument parser."""
    parser = _Parser(
        prog="scribe",
        description="InfiniteScribe: four AI agents (director, worldsmith, writer, reviewer) "
        "write a novel.",
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where sessions are stored (env SCRIBE_DATA_DIR, default ./.scribe)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    write = sub.add_parser("write", help="write a new book", description="Write a new book.")
    write.add_argument("--premise", required=True, help="what the book is about")
    write.add_argument("--chapters", required=True, type=int, help="how many chapters (1-100)")
    write.add_argument("--genre", help="genre, e.g. 'fantasy' (default: the director chooses)")
    write.add_argument(
        "--language",
        help="the book's language as a tag, e.g. 'en', 'zh', 'fr' (default: the premise's)",
    )
    write.add_argument(
        "--pause",
        default="",
        help="pause for the author after: outline, chapter, or both (comma-separated)",
    )
    write.add_argument("--out", type=Path, help="Markdown file for the finished book")
    _add_budget(write)

    sub.add_parser(
        "sessions",
        help="list sessions and their status",
        description="List sessions: status, chapters, last change, last run id, title.",
    )

    resume = sub.add_parser(
        "resume",
        help="continue a paused or interrupted session",
        description="Continue a session: answer the author gate it waits at, "
        "or carry on after a crash.",
    )
    resume.add_argument("session", help="session id")
    decision = resume.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="approve the outline or chapter")
    decision.add_argument(
        "--edit", type=Path, metavar="FILE", help="replace it with FILE (Markdown or JSON)"
    )
    decision.add_argument("--revise", metavar="NOTES", help="send it back with these notes")
    resume.add_argument(
        "--accept",
        metavar="N[,N...]",
        help="with --approve at a chapter: findings (by number) that are deliberate changes; "
        "the world takes the chapter's version from then on",
    )
    resume.add_argument("--out", type=Path, help="Markdown file for the finished book")
    _add_budget(resume)

    export = sub.add_parser("export", help="export a book", description="Export a session's book.")
    export.add_argument("session", help="session id")
    export.add_argument("--format", choices=("md", "epub"), default="md")
    export.add_argument("--out", type=Path, required=True)

    serve = sub.add_parser(
        "serve",
        help="serve the HTTP API (LangGraph-compatible) with in-process workers",
        description="Serve the HTTP API; SCRIBE_WORKER_CONCURRENCY runs execute in-process.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8123, help="port (default 8123)")

    worker = sub.add_parser(
        "worker",
        help="execute queued runs (no HTTP); for more capacity next to 'scribe serve'",
        description="Execute queued runs until stopped (SIGINT/SIGTERM hand runs back).",
    )
    worker.add_argument(
        "--concurrency", type=int, help="runs at once (default SCRIBE_WORKER_CONCURRENCY or 1)"
    )
    _add_trace_commands(sub)
    return parser


_EXIT_CODES = """exit codes:
  0    done, or paused for the author
  1    failed (e.g. a model error, or a replay that needs a call never recorded)
  2    bad input (unknown session or run, invalid option)
  3    stopped by its budget (--budget-tokens/--budget-usd): continue with scribe resume
  130  interrupted (Ctrl-C): continue with scribe resume"""

_BUDGET_HELP = """budget: once a limit is reached the run stops cleanly before its next model call,
prints one line saying why and exits with code 3; the session stays resumable with
'scribe resume SESSION' (with a new budget, or none). Costs use SCRIBE_MODEL_PRICES."""


def _add_budget(command: argparse.ArgumentParser) -> None:
    """The budget options of a command that runs the graph."""
    command.epilog = _BUDGET_HELP
    command.formatter_class = argparse.RawDescriptionHelpFormatter
    command.add_argument(
        "--budget-tokens",
        type=int,
        metavar="N",
        help="stop this run once it used N model tokens (input + output); exit code 3",
    )
    command.add_argument(
        "--budget-usd",
        type=float,
        metavar="X",
        help="stop this run once its estimated model cost reaches X US dollars; exit code 3",
    )


def _add_trace_commands(sub: Any) -> None:
    """``trace``, ``compare`` and ``replay``: what evaluators use."""
    trace = sub.add_parser(
        "trace",
        help="export a run's trace as JSON Lines",
        description="Export a run as JSON Lines: a run line, then per node step a step line "
        "(checkpoint id and state update) followed by its model-call lines (messages, "
        "answer, tokens, cost). Run ids are shown by 'scribe sessions' and the API.",
    )
    trace.add_argument("run", help="run id")
    trace.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )

    compare = sub.add_parser(
        "compare",
        help="compare two runs chapter by chapter",
        description="Compare two runs: per chapter the text diff and the reviewer's scores "
        "and issues side by side; per agent the tokens, cost, calls and model time.",
    )
    compare.add_argument("run_a", metavar="RUN_A", help="run id")
    compare.add_argument("run_b", metavar="RUN_B", help="run id")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")

    replay = sub.add_parser(
        "replay",
        help="re-execute a recorded run on a new session",
        description="Re-execute a run on a new session, answering model calls from its "
        "records (no network, deterministic). Agents named with --live use their configured "
        "model instead, e.g. a new reviewer judged against the same drafts. A replay that "
        "needs a call the run never recorded stops with an error naming the agent and call.",
        epilog="examples:\n"
        "  scribe replay RUN\n"
        "  SCRIBE_REVIEWER__MODEL=gpt-4o-mini scribe replay RUN --live reviewer\n"
        "  scribe replay RUN --live reviewer --from-checkpoint CHECKPOINT_ID",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("run", help="run id")
    replay.add_argument(
        "--live",
        nargs="+",
        action="extend",
        default=[],
        metavar="AGENT",
        help="agents that use their configured model (director, worldsmith, writer, reviewer)",
    )
    replay.add_argument(
        "--recorded",
        nargs="+",
        action="extend",
        default=[],
        metavar="AGENT",
        help="agents answered from the records (default: every agent not --live)",
    )
    replay.add_argument(
        "--from-checkpoint",
        metavar="ID",
        help="a checkpoint of the source session (see 'scribe trace'): steps up to it are "
        "answered from the records, live agents take over after it",
    )


# --- edit files -----------------------------------------------------------------------

_OUTLINE_HEADING = re.compile(
    r"^##\s+(?:chapter\s+)?(?P<num>\d+)?\s*[.:)\-]?\s*(?P<title>.*?)\s*$", re.I
)


def outline_markdown(payload: dict[str, Any]) -> str:
    """The outline at a gate as editable Markdown."""
    bible = payload.get("bible", {})
    lines = [f"# {bible.get('title', 'Untitled')}", "", bible.get("logline", ""), ""]
    for chapter in payload.get("outline", []):
        lines += [f"## {chapter['number']}. {chapter['title']}", "", chapter["summary"], ""]
    return "\n".join(lines)


def parse_outline_file(text: str) -> list[dict[str, Any]]:
    """An edited outline from JSON (a list, or ``{"outline": [...]}``) or Markdown
    (``## 1. Title`` headings, each followed by its summary)."""
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"edit file is not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from exc
        items = data.get("outline") if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise InvalidInput("a JSON outline must be a list of {title, summary} objects")
        return [
            {"number": n, **{k: v for k, v in i.items() if k != "number"}}
            for n, i in enumerate(items, 1)
        ]
    chapters: list[dict[str, Any]] = []
    for line in stripped.splitlines():
        match = _OUTLINE_HEADING.match(line)
        if line.startswith("## ") and match:
            chapters.append(
                {
                    "number": len(chapters) + 1,
                    "title": match["title"] or f"Chapter {len(chapters) + 1}",
                    "summary": "",
                }
            )
        elif chapters:
            chapters[-1]["summary"] = (chapters[-1]["summary"] + "\n" + line).strip()
    if not chapters:
        raise InvalidInput(
            "edit file has no chapters: use '## 1. Title' headings followed by summaries"
        )
    return chapters


def chapter_markdown(chapter: int, title: str, text: str) -> str:
    """A chapter at a gate as editable Markdown."""
    return f"# Chapter {chapter}: {title}\n\n{text.strip()}\n"


def parse_chapter_file(text: str) -> dict[str, Any]:
    """An edited chapter: an optional ``# Chapter N: Title`` first line, then the prose."""
    lines = text.strip().splitlines()
    title: str | None = None
    if lines and lines[0].startswith("# "):
        title = (
            re.sub(r"^#\s+(chapter\s+\d+\s*[:.\-]\s*)?", "", lines[0], flags=re.I).strip() or None
        )
        lines = lines[1:]
    body = "\n".join(lines).strip()
    if not body:
        raise InvalidInput("edit file has no chapter text")
    return {"action": "edit", "text": body, **({"title": title} if title else {})}


def read_edit_file(path: Path) -> str:
    """The edit file's text; InvalidInput for a missing, oversized or undecodable file."""
    try:
        if path.stat().st_size > MAX_EDIT_BYTES:
            raise InvalidInput(f"edit file {path} is larger than {MAX_EDIT_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read edit file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"edit file {path} is not UTF-8 text") from exc


def _publish(tmp: Path, path: Path) -> None:
    """Give a finished temporary file the usual permissions and move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)  # mkstemp creates 0600; books are ordinary files
    os.replace(tmp, path)


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, so a failure leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        _publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- commands -------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    from server.settings import load_settings

    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    return load_settings(**overrides)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _announce_models(settings: Settings, agents: Sequence[str] | None = None) -> None:
    """Say which agents (of ``agents``, default all) use the offline model."""
    from nodes.schemas import AGENTS

    offline = [a for a in AGENTS if a in (agents or AGENTS) and settings.model_for(a) is None]
    if offline:
        who = "all agents" if len(offline) == len(AGENTS) else ", ".join(offline)
        _say(
            f"Using the offline model for {who}: no network or API key, placeholder prose built "
            "from the plan. For a real model set SCRIBE_MODEL (with SCRIBE_API_KEY and, for "
            "any OpenAI-compatible server, SCRIBE_BASE_URL)."
        )


def _require_store(settings: Settings) -> None:
    """Fail before touching anything when the embedded store does not exist yet."""
    if settings.database_url is None and not (settings.data_dir / "scribe.db").exists():
        raise NotFound("session", "-", f"no sessions in {settings.data_dir} (nothing written yet)")


def _book_path(settings: Settings, session_id: str, out: Path | None) -> Path:
    return out or settings.data_dir / "books" / f"{session_id}.md"


async def _finish(
    sessions: Sessions, settings: Settings, result: RunResult, out: Path | None
) -> None:
    from memory.text import is_cjk
    from server.export import book_to_markdown

    if result.gate is not None:
        _show_gate(sessions, settings, result.session_id, result.gate)
        await _write_gate_file(sessions, settings, result.session_id, result.gate)
        return
    record, bible, chapters = await sessions.book(result.session_id)
    path = _book_path(settings, result.session_id, out)
    markdown = book_to_markdown(record.title or "Untitled", chapters, logline=bible.get("logline"))
    write_atomically(path, markdown.encode())
    words = sum(c.word_count for c in chapters)
    # Lengths are counted in characters for Chinese, Japanese and Korean (memory/text.py).
    unit = "characters" if is_cjk(" ".join(c.text[:500] for c in chapters)) else "words"
    _say(f"Finished “{record.title}”: {len(chapters)} chapters, {words} {unit}.")
    print(path)


def _gate_file(settings: Settings, session_id: str, gate: Gate) -> Path:
    folder = settings.data_dir / "sessions" / session_id
    if gate.kind == "outline":
        return folder / "outline.md"
    return folder / f"chapter-{int(gate.payload['chapter']):02d}.md"


def _finding_numbers(text: str) -> list[int]:
    """``--accept 1,3`` as numbers; InvalidInput for anything else."""
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers:
        raise InvalidInput(f"--accept takes finding numbers such as 1,3, got {text!r}")
    return numbers


def _show_gate(_sessions: Sessions, settings: Settings, session_id: str, gate: Gate) -> None:
    from server.progress import clipped

    where = "the outline" if gate.kind == "outline" else f"chapter {gate.payload['chapter']}"
    path = _gate_file(settings, session_id, gate)
    findings = gate.payload.get("findings") or [] if gate.kind == "chapter" else []
    found = "".join(
        f"\n  {f['number']}. {f['severity']} {f['kind']}: {f['problem']}\n"
        f"     “{clipped(str(f['quote']), 100)}”"
        for f in findings
    )
    accept = (
        f"\n  scribe resume {session_id} --approve --accept 1,2  "
        "(these findings are deliberate changes)"
        if findings
        else ""
    )
    _say(
        f"Paused for the author after {where}."
        + (f" The checks found:{found}\n" if found else " ")
        + f"Read or edit {path}, then run one of:\n"
        f"  scribe resume {session_id} --approve{accept}\n"
        f"  scribe resume {session_id} --edit {path}\n"
        f'  scribe resume {session_id} --revise "your notes"'
    )


async def _write_gate_file(
    sessions: Sessions, settings: Settings, session_id: str, gate: Gate
) -> None:
    if gate.kind == "outline":
        text = outline_markdown(gate.payload)
    else:
        _, _, chapters = await sessions.book(session_id)
        number = int(gate.payload["chapter"])
        chapter = next(c for c in chapters if c.number == number)
        text = chapter_markdown(number, chapter.title, chapter.text)
    write_atomically(_gate_file(settings, session_id, gate), text.encode())


def _budget(args: argparse.Namespace) -> Budget | None:
    """The run's budget from ``--budget-tokens``/``--budget-usd``; InvalidInput if bad."""
    from memory.traces.port import Budget

    tokens: int | None = args.budget_tokens
    usd: float | None = args.budget_usd
    if tokens is not None and tokens < 1:
        raise InvalidInput(f"--budget-tokens must be a positive number of tokens, got {tokens}")
    if usd is not None and not (usd > 0 and math.isfinite(usd)):
        raise InvalidInput(f"--budget-usd must be a positive amount of dollars, got {usd}")
    if tokens is None and usd is None:
        return None
    return Budget(max_tokens=tokens, max_cost_usd=usd)


def _stopped(result: RunResult) -> int:
    """Say in one line why the budget stopped the run and how to go on."""
    _say(
        f"scribe: stopped: {result.stop_reason or 'budget exceeded'}; the session is saved, "
        f"continue with: scribe resume {result.session_id} (with a larger budget, or none)"
    )
    return EXIT_BUDGET


async def _cmd_write(args: argparse.Namespace) -> int:
    from nodes.session import validate_request

    pauses = [p.strip() for p in args.pause.split(",") if p.strip()]
    request = validate_request(args.premise, args.chapters, args.genre, pauses, args.language)
    budget = _budget(args)
    settings = _settings(args)
    if args.out is not None and args.out.is_dir():
        raise InvalidInput(f"--out {args.out} is a folder; give a file name")
    _announce_models(settings)

    from server.backends import open_backends
    from server.progress import ProgressView
    from server.sessions import Sessions

    async with open_backends(settings) as backends:
        sessions = Sessions(backends)
        session_id = sessions.new_id()
        print(session_id, flush=True)
        _say(f"session {session_id}: writing {request.chapters} chapter(s)")
        with ProgressView(request.chapters) as view:
            result = await sessions.start(request, view, session_id=session_id, budget=budget)
        if result.status == "stopped":
            return _stopped(result)
        await _finish(sessions, settings, result, args.out)
    return 0


async def _cmd_resume(args: argparse.Namespace) -> int:
    from server.sessions import parse_session_id

    session_id = parse_session_id(args.session)
    budget = _budget(args)
    settings = _settings(args)
    if args.accept is not None and not args.approve:
        raise InvalidInput("--accept goes with --approve (approve the chapter and its findings)")
    accept = _finding_numbers(args.accept) if args.accept is not None else None
    _require_store(settings)
    edit_text = read_edit_file(args.edit) if args.edit is not None else None

    from server.backends import open_backends
    from server.progress import ProgressView
    from server.sessions import Sessions

    async with open_backends(settings) as backends:
        sessions = Sessions(backends)
        record = await sessions.require(session_id)
        decision: dict[str, Any] | None = None
        if args.approve:
            decision = {"action": "approve"}
            if accept is not None:
                decision["accept"] = accept
        elif args.revise is not None:
            decision = {"action": "revise", "notes": args.revise}
        elif edit_text is not None:
            gate = await sessions.gate(session_id)
            if gate is None:
                raise Conflict(f"session {session_id} is not paused at a gate; nothing to edit")
            if gate.kind == "outline":
                decision = {"action": "edit", "outline": parse_outline_file(edit_text)}
            else:
                decision = parse_chapter_file(edit_text)
        _announce_models(settings)
        done = len(await backends.store.list_chapters(session_id))
        with ProgressView(record.chapters, done=done) as view:
            result = await sessions.resume(session_id, decision, view, budget=budget)
        if result.status == "stopped":
            return _stopped(result)
        await _finish(sessions, settings, result, args.out)
    return 0


async def _cmd_sessions(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.database_url is None and not (settings.data_dir / "scribe.db").exists():
        _say(f"no sessions in {settings.data_dir}")
        return 0
    from server.backends import open_backends

    async with open_backends(settings) as backends:
        novels = await backends.store.list_novels()
        if not novels:
            _say(f"no sessions in {settings.data_dir}")
        for novel in novels:
            chapters = await backends.store.list_chapters(novel.id)
            runs = await backends.tracing.store.thread_runs(novel.id)
            last_run = f"run {runs[-1].run_id}" if runs else f"run {'-':<36}"
            title = novel.title or novel.premise[:40]
            print(
                f"{novel.id}  {novel.status:<9}  {len(chapters)}/{novel.chapters} ch  "
                f"{novel.updated_at:%Y-%m-%d %H:%M}  {last_run}  {title}"
            )
    return 0


async def _cmd_export(args: argparse.Namespace) -> int:
    from server.sessions import parse_session_id

    session_id = parse_session_id(args.session)
    settings = _settings(args)
    _require_store(settings)
    if args.out.is_dir():
        raise InvalidInput(f"--out {args.out} is a folder; give a file name")

    from server.backends import open_backends
    from server.export import book_to_epub, book_to_markdown
    from server.sessions import Sessions

    async with open_backends(settings) as backends:
        sessions = Sessions(backends)
        await sessions.require(session_id)
        record, bible, chapters = await sessions.book(session_id)
        if not chapters:
            raise Conflict(f"session {session_id} has no accepted chapter to export yet")
        title = record.title or "Untitled"
        if args.format == "md":
            write_atomically(
                args.out, book_to_markdown(title, chapters, logline=bible.get("logline")).encode()
            )
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                dir=args.out.parent, prefix=f".{args.out.name}.", suffix=".epub"
            )
            os.close(fd)
            try:
                book_to_epub(
                    title, chapters, Path(tmp), logline=bible.get("logline"), identifier=session_id
                )
                _publish(Path(tmp), args.out)
            finally:
                Path(tmp).unlink(missing_ok=True)  # noqa: ASYNC240 - a tiny local cleanup
    print(args.out)
    return 0


async def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port must be 1-65535, got {args.port}")
    settings = _settings(args)
    _announce_models(settings)
    # Open streams may outlive Ctrl-C by this much; then workers stop and hand runs back.
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    await uvicorn.Server(config).serve()
    return 0


async def _cmd_worker(args: argparse.Namespace) -> int:
    import signal
    from contextlib import AsyncExitStack

    from memory.redis import RedisService
    from server.backends import open_backends
    from server.runs.service import RunService

    settings = _settings(args)
    concurrency = args.concurrency or settings.worker_concurrency or 1
    if concurrency < 1:
        raise InvalidInput(f"--concurrency must be at least 1, got {concurrency}")
    _announce_models(settings)
    async with AsyncExitStack() as stack:
        backends = await stack.enter_async_context(open_backends(settings))
        redis: RedisService | None = None
        if settings.redis_url:
            redis = RedisService.from_url(settings.redis_url)
            stack.push_async_callback(redis.close)
            await redis.start()
        else:
            _say("No REDIS_URL: run events stay in this process (clients still see state).")
        runs = await RunService.open(settings, backends, redis, stack)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        worker = await runs.start_workers(stack, concurrency)
        if worker is not None:
            _say(f"worker {worker.worker_id}: up to {concurrency} run(s) at once; Ctrl-C stops")
        await stopped.wait()
    return 0


async def _cmd_trace(args: argparse.Namespace) -> int:
    from server.sessions import parse_run_id

    run_id = parse_run_id(args.run)
    if args.output is not None and args.output.is_dir():
        raise InvalidInput(f"--output {args.output} is a folder; give a file name")
    output: Path | None = args.output
    settings = _settings(args)
    _require_store(settings)

    from server.backends import open_backends
    from server.runs.serde import dumps
    from server.trace_export import trace_lines

    async with open_backends(settings) as backends:
        lines = trace_lines(backends, run_id)
        try:
            if output is None:
                async for line in lines:
                    sys.stdout.write(dumps(line) + "\n")
                sys.stdout.flush()
                return 0
            text = "".join([dumps(line) + "\n" async for line in lines])
        except NotFound as exc:
            raise NotFound("run", run_id, f"no recorded run {run_id}") from exc
        except BrokenPipeError:
            # The reader (e.g. ``| head``) has seen enough; that is not a failure.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    write_atomically(output, text.encode())
    print(output)
    return 0


async def _cmd_compare(args: argparse.Namespace) -> int:
    from server.sessions import parse_run_id

    run_a, run_b = parse_run_id(args.run_a), parse_run_id(args.run_b)
    settings = _settings(args)
    _require_store(settings)

    from server.backends import open_backends
    from server.trace_export import compare_runs, render_comparison

    async with open_backends(settings) as backends:
        for run_id in (run_a, run_b):
            await _require_run(backends.tracing.store, run_id)
        comparison = await compare_runs(backends, run_a, run_b)
    if args.json:
        print(json.dumps(comparison.to_json(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(render_comparison(comparison))
    return 0


async def _require_run(store: TraceStore, run_id: str) -> TracedRun:
    try:
        return await store.get_run(run_id)
    except NotFound as exc:
        raise NotFound("run", run_id, f"no recorded run {run_id}") from exc


async def _cmd_replay(args: argparse.Namespace) -> int:
    from nodes.schemas import AGENTS
    from server.runs.tracing import replay_agents
    from server.sessions import parse_run_id

    run_id = parse_run_id(args.run)
    recorded: list[str] = [a.strip() for item in args.recorded for a in item.split(",")]
    live: list[str] = [a.strip() for item in args.live for a in item.split(",")]
    chosen = replay_agents([a for a in recorded if a] or None, [a for a in live if a])
    settings = _settings(args)
    _require_store(settings)

    from server.backends import open_backends
    from server.progress import ProgressView
    from server.sessions import Sessions

    async with open_backends(settings) as backends:
        source = await _require_run(backends.tracing.store, run_id)
        try:
            chapters = (await backends.store.get_novel(source.thread_id)).chapters
        except NotFound:
            raw = source.input.get("chapters") if isinstance(source.input, dict) else None
            chapters = raw if isinstance(raw, int) else 0
        live_agents = [a for a in AGENTS if a not in chosen]
        if live_agents:
            _announce_models(settings, live_agents)
        sessions = Sessions(backends)
        session_id = sessions.new_id()
        print(session_id, flush=True)
        how = "every agent from the records"
        if live_agents:
            how = f"{', '.join(chosen) or 'no agent'} from the records; "
            how += f"live: {', '.join(live_agents)}"
        _say(f"session {session_id}: replaying run {run_id} ({how})")
        with ProgressView(chapters) as view:
            result = await sessions.replay(
                run_id,
                recorded=chosen,
                from_checkpoint_id=args.from_checkpoint,
                on_progress=view,
                session_id=session_id,
            )
        print(result.run_id, flush=True)
        done = len(await backends.store.list_chapters(session_id))
    if result.gate is not None:
        where = "the outline" if result.gate.kind == "outline" else "a chapter"
        _say(
            f"Replay run {result.run_id} paused at {where}, as the source did; continue with "
            f"scribe resume {session_id} --approve (or --edit/--revise)"
        )
    elif result.status == "stopped":
        return _stopped(result)
    else:
        _say(f"Replayed run {run_id} as run {result.run_id}: {done} chapter(s), {result.status}.")
    return 0


_COMMANDS = {
    "write": _cmd_write,
    "resume": _cmd_resume,
    "sessions": _cmd_sessions,
    "export": _cmd_export,
    "serve": _cmd_serve,
    "worker": _cmd_worker,
    "trace": _cmd_trace,
    "compare": _cmd_compare,
    "replay": _cmd_replay,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scribe`` console script."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return asyncio.run(_COMMANDS[args.command](args))
    except (InvalidInput, NotFound, Conflict, ConfigurationError) as exc:
        _say(f"scribe: error: {exc}")
        return EXIT_USAGE
    except ScribeError as exc:
        _say(f"scribe: error: {exc}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        if args.command in ("serve", "worker"):
            # The server stopped cleanly; its unfinished runs went back to the queue.
            _say("scribe: stopped")
            return 0
        _say("scribe: interrupted; continue later with: scribe resume SESSION")
        return 130


if __name__ == "__main__":
    sys.exit(main())
