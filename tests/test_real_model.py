"""Books written by a real language model: SmolLM2-135M-Instruct served by llama.cpp.

The offline stand-in always answers schema-valid JSON and template prose; a real model
does not. These tests run the product's own entry points (the ``scribe`` CLI and ``scribe
serve`` driven by the official ``langgraph-sdk``) against ``llama-server`` on loopback
(``tests/services/llama.py``), and check what a user would: the run completes, the
chapters are stored, the traces name the real model with the endpoint's token counts,
the book's text is the model's, and every structured answer the pipeline used passed
validation. Kept few and short: the smallest model, short chapters, few revisions.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from pydantic import BaseModel, ValidationError

from memory.text import is_cjk, text_length
from memory.traces.port import ModelCall
from nodes.llm.answers import closed_prefixes, unlooped
from nodes.llm.gateway import extract_json_object
from nodes.llm.tasks import TASKS
from server.backends import open_backends
from server.cli import main
from server.settings import Settings, load_settings
from tests.apps import served
from tests.conftest import UseService
from tests.services import llama
from tests.services.base import Running
from tests.services.llama import WRITER_EXTRA_BODY

pytestmark = pytest.mark.slow

PREMISE = "A lighthouse keeper named Ada finds a brass key that opens a door under the sea."
WORDS = 100
"""Short chapters: the point is the pipeline's handling of real output, not length."""
MAX_TOKENS = 500
"""A 135M model rambles inside JSON strings until its limit; a low one keeps each call
short (the gateway keeps the complete part of a cut-off answer)."""
OFFLINE_MARKERS = ("Offline", "offline model")
# How the CLI's progress says a chapter was planned from the outline (server/progress.py).
FALLBACK = "planned from the outline"
MODEL_SEED = 1000


def context_window(llm: Running) -> int:
    """The endpoint's context window (a local server's own; 8192 for a given URL)."""
    return int(llm.extra.get("context_window") or 8192)


def model_env(llm: Running) -> dict[str, str]:
    """The settings a user would export to write with the test's llama-server."""
    return {
        "SCRIBE_MODEL": str(llm.extra["model"]),
        "SCRIBE_BASE_URL": llm.url,
        "SCRIBE_API_KEY": str(llm.extra.get("api_key") or "no-key"),
        "SCRIBE_CONTEXT_WINDOW": str(context_window(llm)),
        "SCRIBE_MAX_TOKENS": str(MAX_TOKENS),
        "SCRIBE_TEMPERATURE": "0.4",
        "SCRIBE_WORDS_PER_CHAPTER": str(WORDS),
        "SCRIBE_MAX_REVISIONS": "0",
        "SCRIBE_MODEL_TIMEOUT_S": "300",
        "SCRIBE_WRITER__EXTRA_BODY": json.dumps(WRITER_EXTRA_BODY),
        # Seeded sampling: the same code meets the same answers on every run.
        "SCRIBE_MODEL_SEED": str(MODEL_SEED),
    }


def settings_for(data: Path, llm: Running) -> Settings:
    """The same settings, for opening the stores the CLI wrote."""
    return load_settings(
        data_dir=data,
        model=str(llm.extra["model"]),
        base_url=llm.url,
        api_key=str(llm.extra.get("api_key") or "no-key"),
        context_window=context_window(llm),
        max_tokens=MAX_TOKENS,
        temperature=0.4,
        words_per_chapter=WORDS,
        max_revisions=0,
        model_timeout_s=300.0,
        model_seed=MODEL_SEED,
        writer={"extra_body": WRITER_EXTRA_BODY},
    )


@pytest.fixture
def real_model_env(llm_server: Running, monkeypatch: pytest.MonkeyPatch) -> Running:
    """The model settings in the environment, as the CLI reads them."""
    for name, value in model_env(llm_server).items():
        monkeypatch.setenv(name, value)
    return llm_server


def scribe(capsys: pytest.CaptureFixture[str], data: Path, *argv: str) -> tuple[int, str, str]:
    """The ``scribe`` command, in this process."""
    code = main(["--data-dir", str(data), *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def check_run(
    settings: Settings, session_id: str, llm: Running, chapters: int, fallbacks: int
) -> None:
    """What a finished real-model book must show in its stores and traces.

    ``fallbacks`` is how many chapters the run said it planned from the outline because
    the model gave no usable plan (the progress step ``beats_from_outline``).
    """
    async with open_backends(settings) as backends:
        stored = [await backends.store.get_chapter(session_id, n) for n in range(1, chapters + 1)]
        runs = await backends.tracing.store.thread_runs(session_id)
        calls = [c for run in runs for c in await backends.tracing.store.calls(run.run_id)]
    assert runs and runs[-1].status == "success"
    assert all(c.model.startswith(f"{llm.extra['model']} @ {llm.url}") for c in calls)
    assert not [c for c in calls if c.error], "no model call ended in an error"
    # Usage comes with the endpoint's last chunk; a stream stopped in a loop has none.
    finished = [c for c in calls if c.settings.get("finish_reason") != "loop"]
    assert all(c.input_tokens > 0 and c.output_tokens > 0 for c in finished), "usage"
    drafts = [c.answer for c in calls if c.task == "chapter_draft"]
    for chapter in stored:
        assert chapter.text.strip() and chapter.summary
        assert not any(marker in chapter.text for marker in OFFLINE_MARKERS)
        # The stored chapter is the model's own text (cleaned of headings and notes), in
        # one answer or in several (a draft continued after a loop or a short ending).
        paragraphs = [p.strip() for p in chapter.text.split("\n\n") if p.strip()]
        assert all(any(p[:40] in answer for answer in drafts) for p in paragraphs)
    assert_structured_answers_valid(calls, fallbacks)


def _validates(output: type[BaseModel], text: str) -> bool:
    try:
        output.model_validate(unlooped(extract_json_object(text)))
    except (ValueError, ValidationError):
        return False
    return True


def assert_structured_answers_valid(calls: list[ModelCall], fallbacks: int) -> None:
    """The answer each structured node step ended with validates against its schema.

    The one exception is a chapter plan the model never got right: the director then
    plans from the outline and says so, ``fallbacks`` times; no other task may end on an
    invalid answer.
    """
    last: dict[tuple[str, str | None, int, str], ModelCall] = {}
    for call in calls:
        spec = TASKS[call.task]
        if spec.output is None:
            continue
        key = (call.run_id, call.task_id, call.step, call.task)
        if key not in last or call.index > last[key].index:
            last[key] = call
    assert last
    by_task: dict[str, int] = defaultdict(int)
    unplanned: list[str] = []
    for call in last.values():
        output = TASKS[call.task].output
        assert output is not None
        by_task[call.task] += 1
        # The answer, or for one cut off at the token limit the complete part the
        # gateway kept, validates.
        candidates = [call.answer, *closed_prefixes(call.answer)]
        if any(_validates(output, text) for text in candidates):
            continue
        assert call.task == "chapter_beats", call.answer[:300]
        unplanned.append(call.answer[:300])
    assert len(unplanned) == fallbacks, unplanned
    assert {"story_plan", "world_places", "world_cast", "chapter_beats", "chapter_review"} <= set(
        by_task
    )


def test_cli_writes_a_book_with_a_real_model(
    real_model_env: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out_file = tmp_path / "data", tmp_path / "book.md"
    code, out, err = scribe(
        capsys, data, "write", "--premise", PREMISE, "--chapters", "2", "--out", str(out_file)
    )
    assert code == 0, err
    assert "offline model" not in err
    session_id = out.splitlines()[0]
    book = out_file.read_text()
    assert book.count("\n## ") == 2
    settings = settings_for(data, real_model_env)
    asyncio.run(check_run(settings, session_id, real_model_env, 2, err.count(FALLBACK)))


PREMISE_ZH = "灯塔看守人阿达在灯室里找到一把黄铜钥匙，它能打开海底的一扇门。"
CHINESE_MODEL = "qwen05"
"""SmolLM2 writes no Chinese; Qwen2.5 does, and its 0.5B model keeps the test short."""


@pytest.fixture
def chinese_model_env(use_service: UseService, monkeypatch: pytest.MonkeyPatch) -> Running:
    """A model that writes Chinese (the given endpoint's, or a local Qwen-0.5B), in the
    environment as the CLI reads it."""
    server = use_service("llm-zh", lambda workdir: llama.start(workdir, CHINESE_MODEL))
    for name, value in model_env(server).items():
        monkeypatch.setenv(name, value)
    return server


def test_cli_writes_a_chinese_book_with_a_real_model(
    chinese_model_env: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out_file = tmp_path / "data", tmp_path / "book.md"
    argv = ["--premise", PREMISE_ZH, "--language", "zh", "--chapters", "1", "--out", str(out_file)]
    code, out, err = scribe(capsys, data, "write", *argv)
    assert code == 0, err
    session_id = out.splitlines()[0]
    assert out_file.read_text().count("\n## ") == 1
    settings = settings_for(data, chinese_model_env)
    asyncio.run(check_run(settings, session_id, chinese_model_env, 1, err.count(FALLBACK)))
    asyncio.run(check_chinese_chapter(settings, session_id))


async def check_chinese_chapter(settings: Settings, session_id: str) -> None:
    """The chapter is Chinese, counted in characters, indexed and checked."""
    async with open_backends(settings) as backends:
        chapter = await backends.store.get_chapter(session_id, 1)
        version = await backends.store.get_version(chapter.current_version_id)
        passages = backends.context.passages
        sentence = next(p for p in chapter.text.split("\n\n") if is_cjk(p))[:30]
        hits = await passages.search(session_id, sentence, before_chapter=2, limit=3)
    assert is_cjk(chapter.text), chapter.text[:200]
    assert chapter.word_count == text_length(chapter.text)
    # The reviewer read claims from the Chinese draft and the rules checked them.
    assert version.claims is not None and version.findings is not None
    assert all(f["quote"] in chapter.text for f in version.findings)
    assert hits and hits[0].passage.chapter == 1 and sentence[:10] in hits[0].passage.text


def test_pause_at_the_outline_and_resume_with_a_real_model(
    real_model_env: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code, out, err = scribe(
        capsys, data, "write", "--premise", PREMISE, "--chapters", "1", "--pause", "outline"
    )
    assert code == 0, err
    session_id = out.splitlines()[0]
    outline = data / "sessions" / session_id / "outline.md"
    assert outline.is_file() and "## " in outline.read_text()
    code, _, err = scribe(capsys, data, "sessions")
    assert code == 0

    fallbacks = err.count(FALLBACK)
    code, out, err = scribe(capsys, data, "resume", session_id, "--approve")
    assert code == 0, err
    fallbacks += err.count(FALLBACK)
    settings = settings_for(data, real_model_env)
    asyncio.run(check_run(settings, session_id, real_model_env, 1, fallbacks))


def test_sdk_run_through_scribe_serve_with_a_real_model(
    llm_server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("SCRIBE_", "OPENAI_")) and not name.startswith("SCRIBE_TEST_"):
            monkeypatch.delenv(name, raising=False)
    settings = settings_for(tmp_path / "data", llm_server).model_copy(
        update={"worker_concurrency": 1}
    )
    with served(settings) as url:
        tid, tokens, updates, steps = asyncio.run(stream_a_book(url))
    assert "writer" in updates and "reviewer" in updates
    assert len(tokens) > 20, "the model's tokens stream to the client"
    assert "finished" in steps, "progress reaches the client on the custom stream"
    asyncio.run(check_run(settings, tid, llm_server, 1, steps.count("beats_from_outline")))


async def stream_a_book(url: str) -> tuple[str, list[str], list[str], list[str]]:
    """Register, then stream one 1-chapter run with the official SDK client."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        credentials = {"email": "author@example.com", "password": "correct horse battery"}
        assert (await http.post("/api/v1/auth/register", json=credentials)).status_code == 201
        login = await http.post("/api/v1/auth/login", json=credentials)
        token = login.json()["access_token"]
    client = get_client(url=url, headers={"Authorization": f"Bearer {token}"}, api_key=None)
    try:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        tokens: list[str] = []
        updates: list[str] = []
        steps: list[str] = []
        async for part in client.runs.stream(
            tid,
            "novel",
            input={"premise": PREMISE, "chapters": 1},
            stream_mode=["updates", "messages-tuple", "custom"],
        ):
            if part.event == "messages":
                message: Any = part.data[0]
                if message.get("content"):
                    tokens.append(str(message["content"]))
            elif part.event == "updates":
                updates.extend(part.data)
            elif part.event == "custom" and isinstance(part.data, dict):
                steps.append(str(part.data.get("step")))
            assert part.event != "error", part.data
        runs = await client.runs.list(tid)
        assert runs[0]["status"] == "success"
        state = await client.threads.get_state(tid)
        values: Any = state["values"]
        assert values["done"] is True
    finally:
        await client.aclose()
    return tid, tokens, updates, steps
