"""The model gateway against a real OpenAI-compatible HTTP server on loopback.

The server below speaks just enough HTTP/1.1 to serve ``POST /v1/chat/completions``
with streamed (SSE) answers or error statuses, following a script of replies per test,
and records every request it receives so tests can count attempts and read what the
gateway sent (e.g. the repair message).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from errors import (
    ConfigurationError,
    ContextOverflow,
    InvalidInput,
    ModelError,
    ModelOutputError,
    ModelRefused,
    ModelUnavailable,
)
from nodes.llm.answers import (
    LoopGuard,
    echo_start,
    fresh_part,
    loop_start,
    strip_wrapping,
    unlooped,
    word_count,
)
from nodes.llm.budget import prompt_tokens
from nodes.llm.config import ModelConfig, RetryPolicy
from nodes.llm.factory import build_chat_model, build_gateway
from nodes.llm.gateway import (
    ModelGateway,
    classify_failure,
    model_settings,
    retry_after_seconds,
)
from nodes.schemas import (
    Agent,
    Beat,
    ChapterBeats,
    DraftInput,
    RetrievedPassage,
    ReviewInput,
    StoryBible,
    Verdict,
    WorldBrief,
)

# --- a scripted OpenAI-compatible server -----------------------------------------------


@dataclass
class Reply:
    """One scripted answer of the fake server."""

    text: str = ""
    """Streamed answer content (status 200)."""
    status: int = 200
    error: str = ""
    """Error message in the JSON body (status >= 400)."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before sending anything (to provoke client timeouts)."""
    stall: float = 0.0
    """Seconds to go silent after the first content chunk (mid-stream timeout)."""
    drop: bool = False
    """Close the connection right after the first content chunk."""
    chunk_size: int = 7
    finish: str = "stop"
    """The ``finish_reason`` of the last chunk (``"length"``: cut off at max_tokens)."""


class FakeOpenAI:
    """A minimal OpenAI-compatible chat-completions server on 127.0.0.1."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.received = asyncio.Event()
        """Set once the first chat request has been read."""

    @property
    def base_url(self) -> str:
        """The ``/v1`` root to configure clients with."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies, served one per request in order."""
        self.replies.extend(replies)

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening; wake handlers still pausing on abandoned requests and await them."""
        self._closing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Waking rather than cancelling: 3.11's stream protocol logs cancelled handlers.
        await asyncio.gather(*self._handlers)

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; ``False`` when the server closed meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
        return not self._closing.is_set()

    def messages(self, index: int) -> list[dict[str, Any]]:
        """The chat messages of the ``index``-th request."""
        result: list[dict[str, Any]] = self.requests[index]["messages"]
        return result

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            method, path, _ = request_line.split(" ", 2)
            if method != "POST" or path != "/v1/chat/completions":
                await self._send_error(writer, Reply(status=404, error=f"no route {path}"))
                return
            payload = json.loads(body)
            self.requests.append(payload)
            self.received.set()
            reply = (
                self.replies.popleft()
                if self.replies
                else Reply(status=400, error="the test server has no scripted reply left")
            )
            if reply.delay and not await self._pause(reply.delay):
                return
            if reply.status >= 400:
                await self._send_error(writer, reply)
            else:
                await self._send_stream(writer, reply, payload)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up (timeout test); nothing to answer
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _send_error(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        body = json.dumps(
            {"error": {"message": reply.error, "type": "test_error", "code": reply.status}}
        ).encode()
        head = [
            f"HTTP/1.1 {reply.status} Scripted",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in reply.headers.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    async def _send_stream(
        self, writer: asyncio.StreamWriter, reply: Reply, payload: dict[str, Any]
    ) -> None:
        # Chunked like real servers, so a connection dropped early is detectably incomplete.
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())
        model = payload.get("model", "test-model")

        def send(data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            body = f"data: {text}\n\n".encode()
            writer.write(f"{len(body):x}\r\n".encode() + body + b"\r\n")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        send(chunk({"role": "assistant", "content": ""}))
        size = reply.chunk_size
        pieces = [reply.text[i : i + size] for i in range(0, len(reply.text), size)]
        for number, piece in enumerate(pieces):
            send(chunk({"content": piece}))
            await writer.drain()
            if number == 0 and reply.drop:
                return  # close without the terminating chunk: a dropped connection
            if number == 0 and reply.stall and not await self._pause(reply.stall):
                return
        send(chunk({}, reply.finish))
        if payload.get("stream_options", {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            send({**chunk({}), "choices": [], "usage": usage})
        send("[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    """A started fake server, closed after the test."""
    fake = FakeOpenAI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


class SleepRecorder:
    """Stands in for ``asyncio.sleep``: records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


RETRY = RetryPolicy(attempts=3, base_delay_s=0.5, max_delay_s=8.0)


def config(server: FakeOpenAI, **overrides: Any) -> ModelConfig:
    """A model config pointing at the fake server."""
    values: dict[str, Any] = {
        "model": "test-model",
        "base_url": server.base_url,
        "api_key": "sk-test",
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return ModelConfig(**values)


def gateway(
    server: FakeOpenAI,
    sleep: SleepRecorder,
    *,
    retry: RetryPolicy = RETRY,
    **overrides: Any,
) -> ModelGateway:
    """A gateway whose four agents all talk to the fake server."""
    model = build_chat_model(config(server, **overrides))
    agents: tuple[Agent, ...] = ("director", "worldsmith", "writer", "reviewer")
    return ModelGateway(dict.fromkeys(agents, model), retry=retry, sleep=sleep)


# --- task inputs and answers ---------------------------------------------------------

DRAFT = (
    "Mara pressed her palm to the cold brass of the lighthouse door. "
    "Behind her, Tobin was still arguing with the ferryman about the fare."
)


def beats() -> ChapterBeats:
    """A small valid chapter plan."""
    return ChapterBeats(
        chapter=1,
        title="The Lamp Room",
        pov="Mara",
        location="The Lighthouse",
        characters=["Mara", "Tobin"],
        beats=[Beat(summary="Mara reaches the lighthouse.", characters=["Mara"])],
    )


def review_input() -> ReviewInput:
    """Reviewer input for :data:`DRAFT`."""
    return ReviewInput(
        chapter=1, beats=beats(), draft=DRAFT, world=WorldBrief(chapter=1), revision=0
    )


def draft_input() -> DraftInput:
    """Writer input for chapter 1."""
    bible = StoryBible(
        title="The Last Lamp",
        logline="A keeper's daughter must relight the lamp.",
        genre="fantasy",
        tone="quiet",
        point_of_view="close third, past tense",
        themes=["duty"],
    )
    return DraftInput(
        chapter=1, title="The Lamp Room", bible=bible, beats=beats(), world=WorldBrief(chapter=1)
    )


def verdict_json(*, prose: int = 7, quote: str = "cold brass", summary: str = "Solid.") -> str:
    """A reviewer answer as the model would write it."""
    return json.dumps(
        {
            "scores": {
                "prose": prose,
                "coherence": 8,
                "pacing": 6,
                "character": 7,
                "consistency": 9,
            },
            "issues": [
                {
                    "severity": "minor",
                    "category": "prose",
                    "quote": quote,
                    "problem": "Generic image.",
                    "suggestion": "Be specific.",
                }
            ],
            "summary": summary,
        }
    )


def quotes_in_draft(verdict: Verdict) -> list[str]:
    """The reviewer's domain check: every quote must occur verbatim in the draft."""
    return [
        f"issues[{i}].quote does not occur verbatim in the draft: {issue.quote!r}"
        for i, issue in enumerate(verdict.issues)
        if issue.quote not in DRAFT
    ]


# --- structured answers --------------------------------------------------------------


async def test_structured_success_sends_task_and_schema(server: FakeOpenAI) -> None:
    server.script(Reply(text=verdict_json(prose=4)))
    sleep = SleepRecorder()

    verdict = await gateway(server, sleep).structured("chapter_review", review_input(), Verdict)

    assert verdict.scores.prose == 4
    assert verdict.scores.lowest() == 4
    assert verdict.issues[0].quote == "cold brass"
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["model"] == "test-model"
    assert request["stream"] is True
    assert "response_format" not in request
    system, human = server.messages(0)
    assert system["role"] == "system"
    assert "reviewer" in system["content"]
    assert '"scores"' in system["content"]  # the answer schema is appended
    assert human["content"].startswith("Task: chapter_review")
    assert DRAFT in human["content"]
    assert sleep.delays == []


async def test_structured_tolerates_fences_and_surrounding_prose(server: FakeOpenAI) -> None:
    answer = (
        "<think>The draft is fine {mostly}.</think>Here is my review:\n```json\n"
        + verdict_json(summary="Fenced.")
        + "\n```\nLet me know if you need more {details}."
    )
    server.script(Reply(text=answer))

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict
    )

    assert verdict.summary == "Fenced."
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("bad_answer", "expected_error"),
    [
        (verdict_json(prose=11), "scores.prose: Input should be less than or equal to 10"),
        (verdict_json()[:-20], "invalid JSON"),
        ("I think the chapter is lovely.", "no JSON object"),
        ('{"scores": {"prose": 7}}', "scores.coherence: Field required"),
    ],
)
async def test_malformed_answer_is_repaired_once(
    server: FakeOpenAI, bad_answer: str, expected_error: str
) -> None:
    server.script(Reply(text=bad_answer), Reply(text=verdict_json(summary="Repaired.")))

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict
    )

    assert verdict.summary == "Repaired."
    assert len(server.requests) == 2
    repair = server.messages(1)
    assert repair[:2] == server.messages(0)  # the original request is repeated as is
    assert repair[2] == {"role": "assistant", "content": bad_answer}
    assert repair[3]["role"] == "user"
    assert expected_error in repair[3]["content"]
    assert "only the corrected JSON object" in repair[3]["content"]


async def test_malformed_thrice_raises_model_output_error(server: FakeOpenAI) -> None:
    server.script(
        Reply(text=verdict_json(prose=11)),
        Reply(text=verdict_json(prose=12)),
        Reply(text=verdict_json(prose=12)),
    )

    with pytest.raises(ModelOutputError) as caught:
        await gateway(server, SleepRecorder()).structured("chapter_review", review_input(), Verdict)

    error = caught.value
    assert str(error).startswith("reviewer returned an invalid chapter_review answer after 3")
    assert "scores.prose: Input should be less than or equal to 10" in str(error)
    assert error.agent == "reviewer"
    assert error.data["task"] == "chapter_review"
    assert error.data["errors"] == ["scores.prose: Input should be less than or equal to 10"]
    assert len(server.requests) == 3


async def test_check_problem_triggers_repair(server: FakeOpenAI) -> None:
    invented = "a quote the draft never contains"
    server.script(
        Reply(text=verdict_json(quote=invented)),
        Reply(text=verdict_json(quote="arguing with the ferryman")),
    )

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict, check=quotes_in_draft
    )

    assert verdict.issues[0].quote == "arguing with the ferryman"
    assert len(server.requests) == 2
    repair_text = server.messages(1)[-1]["content"]
    assert f"issues[0].quote does not occur verbatim in the draft: {invented!r}" in repair_text


async def test_check_problem_persisting_raises(server: FakeOpenAI) -> None:
    server.script(
        Reply(text=verdict_json(quote="nope")),
        Reply(text=verdict_json(quote="nah")),
        Reply(text=verdict_json(quote="nah")),
    )

    with pytest.raises(ModelOutputError) as caught:
        await gateway(server, SleepRecorder()).structured(
            "chapter_review", review_input(), Verdict, check=quotes_in_draft
        )

    assert "'nah'" in str(caught.value)
    assert caught.value.data["errors"] == quotes_in_draft(
        Verdict.model_validate_json(verdict_json(quote="nah"))
    )


# --- transient failures ---------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "expected_delay"), [("2", 2.0), ("60", 8.0)])
async def test_rate_limit_honours_retry_after(
    server: FakeOpenAI, retry_after: str, expected_delay: float
) -> None:
    server.script(
        Reply(status=429, error="slow down", headers={"Retry-After": retry_after}),
        Reply(text=verdict_json()),
    )
    sleep = SleepRecorder()

    verdict = await gateway(server, sleep).structured("chapter_review", review_input(), Verdict)

    assert verdict.scores.consistency == 9
    assert len(server.requests) == 2
    assert sleep.delays == [expected_delay]  # capped at max_delay_s


async def test_server_errors_are_retried_with_backoff(server: FakeOpenAI) -> None:
    server.script(
        Reply(status=500, error="boom"),
        Reply(status=502, error="bad gateway"),
        Reply(text=verdict_json()),
    )
    sleep = SleepRecorder()

    await gateway(server, sleep).structured("chapter_review", review_input(), Verdict)

    assert len(server.requests) == 3
    assert len(sleep.delays) == 2
    # Full jitter: each wait lies in [0, base * 2**(attempt-1)].
    assert 0.0 <= sleep.delays[0] <= 0.5
    assert 0.0 <= sleep.delays[1] <= 1.0


async def test_persistent_unavailability_raises_after_all_attempts(server: FakeOpenAI) -> None:
    server.script(*(Reply(status=503, error="overloaded") for _ in range(6)))
    sleep = SleepRecorder()

    with pytest.raises(ModelUnavailable) as caught:
        await gateway(server, sleep).prose("chapter_draft", draft_input())

    error = caught.value
    assert len(server.requests) == 3  # RETRY.attempts, no more
    assert len(server.replies) == 3
    assert len(sleep.delays) == 2
    assert error.agent == "writer"
    assert error.data["attempts"] == 3
    assert "writer" in str(error)
    assert "after 3 attempts" in str(error)
    assert "503" in str(error)
    assert "overloaded" in str(error)


async def test_timeout_before_headers_is_retried(server: FakeOpenAI) -> None:
    server.script(Reply(text="too late", delay=2.0), Reply(text="In time."))
    sleep = SleepRecorder()

    text = await gateway(server, sleep, timeout_s=0.3).prose("chapter_draft", draft_input())

    assert text == "In time."
    assert len(server.requests) == 2
    assert len(sleep.delays) == 1


async def test_stalled_stream_is_retried(server: FakeOpenAI) -> None:
    server.script(Reply(text="A stream that stops.", stall=2.0), Reply(text="A whole answer."))
    sleep = SleepRecorder()

    text = await gateway(server, sleep, timeout_s=0.3).prose("chapter_draft", draft_input())

    assert text == "A whole answer."
    assert len(server.requests) == 2


async def test_dropped_connection_is_retried_without_leaking_partial_text(
    server: FakeOpenAI,
) -> None:
    server.script(Reply(text="PARTIAL answer that breaks", drop=True), Reply(text="Complete."))
    sleep = SleepRecorder()

    text = await gateway(server, sleep).prose("chapter_draft", draft_input())

    assert text == "Complete."
    assert len(server.requests) == 2
    assert len(sleep.delays) == 1


async def test_timeouts_exhausting_attempts_raise_unavailable(server: FakeOpenAI) -> None:
    server.script(Reply(delay=2.0), Reply(delay=2.0))
    sleep = SleepRecorder()
    retry = RetryPolicy(attempts=2, base_delay_s=0.1, max_delay_s=1.0)

    with pytest.raises(ModelUnavailable, match="after 2 attempts"):
        await gateway(server, sleep, retry=retry, timeout_s=0.2).prose(
            "chapter_draft", draft_input()
        )

    assert len(server.requests) == 2


@pytest.mark.parametrize("module_name", ["httpx", "httpx2"])
def test_raw_transport_errors_are_classified(module_name: str) -> None:
    httpx = pytest.importorskip(module_name)
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")

    assert classify_failure(httpx.ReadTimeout("slow", request=request)) == "transient"
    assert classify_failure(httpx.RemoteProtocolError("peer closed", request=request)) == (
        "transient"
    )
    assert classify_failure(httpx.ConnectError("refused", request=request)) == "transient"
    assert classify_failure(httpx.UnsupportedProtocol("ftp://")) == "permanent"
    assert classify_failure(asyncio.TimeoutError())  # noqa: UP041 - the alias is the point == "transient"
    assert classify_failure(ValueError("a bug")) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], expected: float | None) -> None:
    httpx = pytest.importorskip("httpx")
    response = httpx.Response(429, headers=headers)

    assert retry_after_seconds(_WithResponse(response)) == expected


def test_retry_after_http_date_in_the_future() -> None:
    httpx = pytest.importorskip("httpx")
    when = email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30), usegmt=True
    )

    delay = retry_after_seconds(_WithResponse(httpx.Response(429, headers={"retry-after": when})))

    assert delay is not None
    assert 25.0 <= delay <= 30.0


class _WithResponse(Exception):
    """An error carrying an HTTP response, as openai's status errors do."""

    def __init__(self, response: Any) -> None:
        super().__init__("status error")
        self.response = response


# --- permanent failures --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "check the API key for reviewer"),
        (403, "not allowed to use this model"),
        (404, "check the model name and base URL for reviewer"),
        (400, "bad request detail"),
    ],
)
async def test_client_errors_fail_immediately(server: FakeOpenAI, status: int, hint: str) -> None:
    server.script(Reply(status=status, error="bad request detail"), Reply(text=verdict_json()))
    sleep = SleepRecorder()

    with pytest.raises(ModelError) as caught:
        await gateway(server, sleep).structured("chapter_review", review_input(), Verdict)

    error = caught.value
    assert type(error) is ModelError
    assert hint in str(error)
    assert error.agent == "reviewer"
    assert error.data["status"] == status
    assert len(server.requests) == 1
    assert sleep.delays == []


async def test_cancellation_propagates_untouched(server: FakeOpenAI) -> None:
    server.script(Reply(text="never", delay=5.0))
    sleep = SleepRecorder()
    call = asyncio.create_task(gateway(server, sleep).prose("chapter_draft", draft_input()))
    await server.received.wait()

    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call
    assert sleep.delays == []
    assert len(server.requests) == 1


# --- prose ---------------------------------------------------------------------------


async def test_prose_streams_the_full_text(server: FakeOpenAI) -> None:
    text = (
        "The lamp had been dark for nine winters.\n\nMara climbed anyway, counting the "
        "steps aloud the way her father had. At the top the glass was furred with salt."
    )
    server.script(Reply(text=text, chunk_size=3))

    answer = await gateway(server, SleepRecorder()).prose("chapter_draft", draft_input())

    assert answer == text.strip()
    system, human = server.messages(0)
    assert "writer" in system["content"]
    assert "JSON schema" not in system["content"]
    assert human["content"].startswith("Task: chapter_draft")


async def test_empty_prose_is_repaired_then_rejected(server: FakeOpenAI) -> None:
    server.script(Reply(text="   \n"), Reply(text="Now with words."))
    gw = gateway(server, SleepRecorder())

    assert await gw.prose("chapter_draft", draft_input()) == "Now with words."
    assert "seed" not in server.requests[0]
    assert isinstance(server.requests[1]["seed"], int)  # asked again with another seed

    server.script(Reply(text=""), Reply(text="<think>hmm</think>\n"), Reply(text=" "))
    with pytest.raises(ModelRefused, match="writer gave no usable chapter_draft answer after 3"):
        await gw.prose("chapter_draft", draft_input())
    assert len(server.requests) == 5


async def test_wrong_task_kind_or_input_is_rejected(server: FakeOpenAI) -> None:
    gw = gateway(server, SleepRecorder())

    with pytest.raises(InvalidInput, match="prose"):
        await gw.structured("chapter_draft", draft_input(), Verdict)
    with pytest.raises(InvalidInput, match="ReviewInput"):
        await gw.structured("chapter_review", draft_input(), Verdict)
    with pytest.raises(InvalidInput, match="unknown model task"):
        await gw.prose("chapter_poem", draft_input())
    assert server.requests == []


# --- LangGraph streaming ---------------------------------------------------------------


class _State(TypedDict):
    text: str


async def test_tokens_reach_langgraph_messages_stream(server: FakeOpenAI) -> None:
    text = "Salt wind. A door. A key that did not fit."
    server.script(Reply(text=text, chunk_size=5))
    gw = gateway(server, SleepRecorder())

    async def write(state: _State) -> _State:
        return {"text": await gw.prose("chapter_draft", draft_input())}

    builder = StateGraph(_State)
    builder.add_node("write", write)
    builder.add_edge(START, "write")
    builder.add_edge("write", END)
    graph = builder.compile()

    tokens: list[str] = []
    metadata: list[dict[str, Any]] = []
    async for message, meta in graph.astream({"text": ""}, stream_mode="messages"):
        assert isinstance(message, AIMessageChunk)
        tokens.append(message.text)
        assert isinstance(meta, dict)
        metadata.append(meta)

    assert "".join(tokens) == text
    assert len([t for t in tokens if t]) == 9  # streamed piece by piece, not all at once
    assert all(m["langgraph_node"] == "write" for m in metadata)
    assert all(m["agent"] == "writer" and m["task"] == "chapter_draft" for m in metadata)
    assert all("agent:writer" in m["tags"] for m in metadata)


# --- factory, labels, JSON mode -------------------------------------------------------


def test_build_chat_model_settings(server: FakeOpenAI) -> None:
    model = build_chat_model(
        ModelConfig(
            model="m1",
            base_url=server.base_url,
            api_key="sk-1",
            temperature=0.2,
            max_tokens=321,
            timeout_s=9.0,
        )
    )

    assert model._llm_type == "openai-chat"
    dumped = {
        "model_name": getattr(model, "model_name", None),
        "temperature": getattr(model, "temperature", None),
        "max_tokens": getattr(model, "max_tokens", None),
        "request_timeout": getattr(model, "request_timeout", None),
        "max_retries": getattr(model, "max_retries", None),
        "streaming": getattr(model, "streaming", None),
        "stream_usage": getattr(model, "stream_usage", None),
    }
    assert dumped == {
        "model_name": "m1",
        "temperature": 0.2,
        "max_tokens": 321,
        "request_timeout": 9.0,
        "max_retries": 0,
        "streaming": True,
        "stream_usage": True,
    }


def test_describe_labels_each_agent(server: FakeOpenAI) -> None:
    configs: dict[Agent, ModelConfig | None] = {
        "director": ModelConfig(model="gpt-4o-mini", api_key="sk-x"),
        "worldsmith": config(server, model="local-llama"),
        "writer": config(server, model="writer-model", base_url=server.base_url + "/"),
        "reviewer": config(server, model="judge", api_key=None),
    }

    gw = build_gateway(configs, RETRY)

    assert gw.describe() == {
        "director": "gpt-4o-mini @ https://api.openai.com/v1",
        "worldsmith": f"local-llama @ {server.base_url}",
        "writer": f"writer-model @ {server.base_url}",
        "reviewer": f"judge @ {server.base_url}",
    }
    assert gw.offline_agents == []
    assert gw.model_for("writer") is not gw.model_for("reviewer")


class _OfflineStandIn(BaseChatModel):
    """A tiny local model reporting the offline model's type."""

    @property
    def _llm_type(self) -> str:
        return "offline"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        task_line = str(messages[-1].content).splitlines()[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(f"Offline: {task_line}"))])


async def test_offline_agents_and_non_openai_models(server: FakeOpenAI) -> None:
    online = build_chat_model(config(server, model="judge"))
    gw = ModelGateway(
        {"reviewer": online, "writer": _OfflineStandIn(), "director": _OfflineStandIn()},
        retry=RETRY,
        sleep=SleepRecorder(),
    )

    assert gw.describe() == {
        "director": "offline",
        "writer": "offline",
        "reviewer": f"judge @ {server.base_url}",
    }
    assert gw.offline_agents == ["director", "writer"]
    assert await gw.prose("chapter_draft", draft_input()) == "Offline: Task: chapter_draft"
    with pytest.raises(ConfigurationError, match="no model is configured for the worldsmith"):
        gw.model_for("worldsmith")
    assert server.requests == []


async def test_structured_modes_bind_response_format_to_structured_calls_only(
    server: FakeOpenAI,
) -> None:
    for mode, expected in (("json_object", "json_object"), ("json_schema", "json_schema")):
        gw = build_gateway(
            dict.fromkeys(
                ("director", "worldsmith", "writer", "reviewer"),
                config(server, structured_output=mode),
            ),
            RETRY,
        )
        server.requests.clear()
        server.script(Reply(text=verdict_json(summary="JSON.")), Reply(text="Prose stays free."))

        verdict = await gw.structured("chapter_review", review_input(), Verdict)
        prose = await gw.prose("chapter_draft", draft_input())

        assert verdict.summary == "JSON."
        assert prose == "Prose stays free."
        sent = server.requests[0]["response_format"]
        assert sent["type"] == expected
        assert "response_format" not in server.requests[1]
    schema = sent["json_schema"]["schema"]
    assert schema["properties"]["scores"]["properties"]["prose"] == {
        "maximum": 10,
        "minimum": 1,
        "type": "integer",
    }
    assert schema["additionalProperties"] is False
    assert sent["json_schema"]["strict"] is True


async def test_extra_request_fields_go_with_every_request(server: FakeOpenAI) -> None:
    """A server's own sampling fields (here llama.cpp's repetition penalty) are sent with
    structured and prose requests alike, beside the answer format, and traced."""
    extra = {"repeat_penalty": 1.15, "repeat_last_n": 4096}
    gw = build_gateway(
        dict.fromkeys(
            ("director", "worldsmith", "writer", "reviewer"),
            config(server, structured_output="json_schema", extra_body=extra),
        ),
        RETRY,
    )
    server.script(Reply(text=verdict_json(summary="JSON.")), Reply(text="Prose."))

    await gw.structured("chapter_review", review_input(), Verdict)
    await gw.prose("chapter_draft", draft_input())

    structured, prose = server.requests
    assert structured["response_format"]["type"] == "json_schema"
    assert {k: structured[k] for k in extra} == extra
    assert {k: prose[k] for k in extra} == extra
    assert model_settings(gw.model_for("writer"))["extra_body"] == extra


# --- what real models do -------------------------------------------------------------


def distinct_prose(words: int, *, paragraph_every: int = 5, start: int = 0) -> str:
    """Prose of about ``words`` words in which no sentence or long word run repeats (nor
    between calls with ``start`` values ``words // 8 + 1`` or more apart)."""
    sentences = []
    for i in range(start, start + words // 8 + 1):
        sentences.append(f"Wave {i} broke on stone number {i * 7 + 3} near the lamp.")
        if i % paragraph_every == paragraph_every - 1:
            sentences.append("\n\n")
    return " ".join(sentences).replace(" \n\n ", "\n\n").strip()


async def test_refused_json_schema_steps_down_once(server: FakeOpenAI) -> None:
    gw = build_gateway(
        dict.fromkeys(
            ("director", "worldsmith", "writer", "reviewer"),
            config(server, structured_output="json_schema"),
        ),
        RETRY,
    )
    server.script(
        Reply(status=400, error="'response_format' of type 'json_schema' is not supported"),
        Reply(text=verdict_json(summary="Fell back.")),
        Reply(text=verdict_json(summary="Stayed back.")),
    )

    first = await gw.structured("chapter_review", review_input(), Verdict)
    second = await gw.with_tracing().structured("chapter_review", review_input(), Verdict)

    assert (first.summary, second.summary) == ("Fell back.", "Stayed back.")
    assert [r["response_format"]["type"] for r in server.requests] == [
        "json_schema",
        "json_object",
        "json_object",
    ]
    assert gw.mode_for("reviewer") == "json_object"
    assert gw.mode_for("writer") == "json_schema"  # only the agent that was refused


async def test_structured_answer_cut_off_is_asked_again_briefly(server: FakeOpenAI) -> None:
    server.script(
        Reply(text='{"scores": {"prose": 7, "coherence"', finish="length"),
        Reply(text=verdict_json(summary="Short now.")),
    )

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict
    )

    assert verdict.summary == "Short now."
    assert len(server.messages(1)) == 2  # asked afresh, not a repair conversation
    assert "cut off at the length limit" in server.messages(1)[-1]["content"]


async def test_refusal_is_asked_again_then_reported(server: FakeOpenAI) -> None:
    story = distinct_prose(60)
    server.script(Reply(text="I will not reproduce copyrighted material."), Reply(text=story))
    gw = gateway(server, SleepRecorder())

    assert await gw.prose("chapter_draft", draft_input()) == story
    assert "original fiction" in server.messages(1)[-1]["content"]

    server.script(*(Reply(text="I'm sorry, but I can't help with that.") for _ in range(3)))
    with pytest.raises(ModelRefused) as caught:
        await gw.structured("chapter_review", review_input(), Verdict)
    assert caught.value.data["task"] == "chapter_review"
    assert "refused or left empty every chapter_review answer" in str(caught.value)


LOOP = " The keeper climbed the stairs again and found the same locked door waiting."


async def test_repetition_loop_is_stopped_and_continued(server: FakeOpenAI) -> None:
    opening = distinct_prose(40)
    rest = distinct_prose(80, start=100)
    server.script(Reply(text=opening + LOOP * 60, chunk_size=40), Reply(text=rest))

    answer = await gateway(server, SleepRecorder()).prose(
        "chapter_draft", draft_input(), target_words=120
    )

    # The text before the loop (its first sentence included), then the continuation.
    assert answer == f"{opening}{LOOP}\n\n{rest}"
    retry = server.requests[1]
    assert retry["frequency_penalty"] > 0
    assert retry["presence_penalty"] > 0
    assert isinstance(retry["seed"], int)
    said = server.messages(1)
    assert said[-2] == {"role": "assistant", "content": f"{opening}{LOOP}"}
    assert "Continue it from exactly where it stops" in said[-1]["content"]
    assert "It has 73 words of about 120" in said[-1]["content"]
    # The continuation's budget is what the chapter has left.
    assert retry["max_completion_tokens"] < server.requests[0]["max_completion_tokens"]


async def test_loop_that_persists_keeps_the_text_before_it(server: FakeOpenAI) -> None:
    opening = distinct_prose(40)
    # Every continuation starts the chapter over: nothing new comes of it.
    server.script(*(Reply(text=opening + LOOP * 40, chunk_size=60) for _ in range(4)))

    answer = await gateway(server, SleepRecorder()).prose(
        "chapter_draft", draft_input(), target_words=100
    )

    assert answer == opening + LOOP
    assert len(server.requests) == 4  # one answer, then three that added nothing


async def test_continuation_is_cut_where_it_goes_back_over_its_text(server: FakeOpenAI) -> None:
    opening, new = distinct_prose(40), distinct_prose(20, start=100)
    more = distinct_prose(60, start=200)
    server.script(
        Reply(text=opening),  # ends cleanly, far too short
        Reply(text=f"{new} {opening}"),  # a little new text, then the chapter again
        Reply(text=more),
    )

    answer = await gateway(server, SleepRecorder()).prose(
        "chapter_draft", draft_input(), target_words=160
    )

    assert answer == f"{opening}\n\n{new}\n\n{more}"
    assert [r.get("frequency_penalty") for r in server.requests] == [None, None, 0.4]


async def test_a_continuation_that_restates_its_text_keeps_what_it_adds(
    server: FakeOpenAI,
) -> None:
    opening, new = distinct_prose(30), distinct_prose(90, start=100)
    # Small models open a continuation by retelling the text so far, then go on.
    server.script(Reply(text=opening), Reply(text=f"{opening} {new}"))

    answer = await gateway(server, SleepRecorder()).prose(
        "chapter_draft", draft_input(), target_words=160
    )

    assert answer == f"{opening}\n\n{new}"
    assert fresh_part(opening, f"{opening} {new}") == new
    assert fresh_part(opening, opening) == ""


async def test_refusals_and_a_stub_that_only_repeats_end_in_a_fresh_draft(
    server: FakeOpenAI,
) -> None:
    refusal = "I'm sorry, but I can't assist with that request."
    stub, story = distinct_prose(20), distinct_prose(150, start=300)
    server.script(
        Reply(text=refusal),
        Reply(text=refusal),
        Reply(text=stub),  # far too short: continued
        Reply(text=stub),  # the continuation only repeats it: start afresh
        Reply(text=story),
    )

    answer = await gateway(server, SleepRecorder()).prose(
        "chapter_draft", draft_input(), target_words=200
    )

    assert answer == story
    assert len(server.requests) == 5
    # The fresh draft is asked without the stub, with another seed.
    assert all(m["content"] != stub for m in server.messages(4))
    assert server.requests[4]["seed"] != server.requests[3].get("seed")


async def test_prose_length_is_held_to_the_target(server: FakeOpenAI) -> None:
    gw = gateway(server, SleepRecorder())
    server.script(Reply(text=distinct_prose(400)))
    long = await gw.prose("chapter_draft", draft_input(), target_words=100)
    assert 60 <= word_count(long) <= 130
    assert long.endswith(".")

    # Far too short: continued, not asked for again from scratch.
    short, more = distinct_prose(20), distinct_prose(70, start=100)
    server.script(Reply(text=short), Reply(text=more))
    assert await gw.prose("chapter_draft", draft_input(), target_words=100) == (
        f"{short}\n\n{more}"
    )
    assert "It has 30 words of about 100" in server.messages(-1)[-1]["content"]

    # Continuations that add nothing (each stub is dropped and asked for afresh): three
    # failed attempts within the six requests allowed, and too little to keep.
    server.script(*(Reply(text=distinct_prose(10)) for _ in range(6)))
    with pytest.raises(ModelOutputError, match="gave no usable chapter_draft answer"):
        await gw.prose("chapter_draft", draft_input(), target_words=100)
    assert len(server.requests) == 6 + 3


async def test_prose_cut_off_at_the_limit_loses_its_unfinished_sentence(
    server: FakeOpenAI,
) -> None:
    text = distinct_prose(100) + " And then the door began to"
    server.script(Reply(text=text, finish="length"))

    answer = await gateway(server, SleepRecorder()).prose(
        "chapter_draft", draft_input(), target_words=100
    )

    assert answer == distinct_prose(100)


async def test_prompt_is_cut_to_the_context_window(server: FakeOpenAI) -> None:
    model = build_chat_model(config(server, max_tokens=1024))
    gw = ModelGateway(
        {"writer": model}, retry=RETRY, sleep=SleepRecorder(), context_windows={"writer": 4000}
    )
    passages = [
        RetrievedPassage(chapter=1, text=f"Passage {i}: " + distinct_prose(150)) for i in range(12)
    ]
    inputs = draft_input().model_copy(update={"passages": passages})
    server.script(Reply(text=distinct_prose(90)))

    await gw.prose("chapter_draft", inputs)

    sent = server.messages(0)[-1]["content"]
    kept = [i for i in range(12) if f"Passage {i}:" in sent]
    assert kept == list(range(len(kept)))  # the most relevant (first) passages stay
    assert 0 < len(kept) < 12
    budget = server.requests[0]["max_completion_tokens"]
    assert 256 <= budget <= 1024
    assert prompt_tokens([HumanMessage(m["content"]) for m in server.messages(0)]) + budget <= 4000

    tiny = ModelGateway(
        {"writer": model}, retry=RETRY, sleep=SleepRecorder(), context_windows={"writer": 600}
    )
    with pytest.raises(ContextOverflow, match="writer's chapter_draft prompt needs about"):
        await tiny.prose("chapter_draft", inputs)
    assert len(server.requests) == 1


async def test_answer_cut_off_keeps_its_complete_items(server: FakeOpenAI) -> None:
    whole = json.loads(verdict_json(quote="cold brass"))
    issue = json.dumps(whole["issues"][0])
    other = json.dumps(dict(whole["issues"][0], problem="Flat."))
    scores = json.dumps(whole["scores"])
    # Cut inside the third issue (a model rambling in a string until max_tokens).
    cut = (
        f'{{"scores": {scores}, "summary": "Solid.", "issues": [{issue}, {other}, '
        '{"severity": "minor", "category": "prose", "quote": "cold brass cold brass cold'
    )
    server.script(Reply(text=cut, finish="length"))

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict
    )

    assert len(server.requests) == 1  # nothing asked again
    assert [i.problem for i in verdict.issues] == ["Generic image.", "Flat."]
    assert verdict.summary == "Solid."


@pytest.mark.parametrize(
    ("answer", "prose"),
    [
        ("# Chapter 1: The Key\n\nThe sand was cold.", "The sand was cold."),
        ("**The Key**\n\nThe sand was cold.\n\nWord count: 4", "The sand was cold."),
        (
            "I'd be happy to help you rewrite your chapter. Here's a revised version:\n\n"
            "The sand was cold.",
            "The sand was cold.",
        ),
        ("Sure! Here is the chapter.\n\nThe sand was cold.", "The sand was cold."),
        # Prose that merely opens like a preamble stays.
        (
            "Here is what she saw when the tide went out.\n\nThe sand was cold.",
            "Here is what she saw when the tide went out.\n\nThe sand was cold.",
        ),
        ("第一章 钥匙\n\n沙子很冷。", "沙子很冷。"),
        (
            "* * *\n\nThe sand was cold.\n\n* * *\nThis chapter contains approximately 400 "
            "words and follows the beats provided. It showcases the journey.",
            "The sand was cold.",
        ),
        # Prose about a chapter of someone's life is prose.
        (
            "The sand was cold.\n\nThis chapter of her life was over.",
            "The sand was cold.\n\nThis chapter of her life was over.",
        ),
    ],
)
def test_what_models_wrap_around_prose_is_stripped(answer: str, prose: str) -> None:
    assert strip_wrapping(answer) == prose


def test_loops_are_found_and_cut_out_of_json_strings() -> None:
    looping = "She is a brave one. " * 10
    assert loop_start("A keeper lived by the sea. " + looping) is not None
    assert loop_start("He nodded. He nodded. He nodded. Then he left.") is None
    data = unlooped({"description": "Ada keeps the light. " + looping, "themes": ["a", "a"]})
    assert data == {"description": "Ada keeps the light. She is a brave one.", "themes": ["a"]}
    beat = {"summary": "Ada climbs.", "characters": ["Ada"]}
    assert unlooped({"beats": [beat, dict(beat), {**beat, "summary": "Ada rests."}]}) == {
        "beats": [beat, {**beat, "summary": "Ada rests."}]
    }
    assert word_count("灯塔守护者找到了钥匙。 The key") == 12


def test_a_continuation_that_repeats_its_text_is_caught() -> None:
    earlier = distinct_prose(40)
    fresh = distinct_prose(30, start=100)
    assert echo_start(earlier, fresh) is None
    # One repeated sentence, or one repeated 12-word run, is where it went back.
    assert echo_start(earlier, f"{fresh} {earlier}") == len(fresh) + 1
    run = " ".join(earlier.split()[3:15])
    assert echo_start(earlier, f"{fresh} And {run}") == len(fresh) + 5
    # Short refrains are prose, not echoes.
    assert echo_start("He nodded. The sea was calm.", "He nodded. Then he left.") is None

    guard = LoopGuard(every_chars=1, prefix=earlier)
    assert not guard.looping(fresh)
    assert guard.looping(f"{fresh} {earlier[:120]}")


async def test_structured_answer_in_a_loop_is_stopped_and_its_complete_part_kept(
    server: FakeOpenAI,
) -> None:
    whole = json.loads(verdict_json(quote="cold brass"))
    issue = dict(
        whole["issues"][0], problem="The keeper climbs the same stairs to the same locked door."
    )
    looping = {"scores": whole["scores"], "summary": "Solid.", "issues": [issue] * 40}
    server.script(Reply(text=json.dumps(looping), chunk_size=30))

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict
    )

    # Stopped soon after the third repeat (the whole list would not even validate: too
    # many issues), closed after its last complete item, repeats dropped: nothing asked
    # again.
    assert len(server.requests) == 1
    assert len(verdict.issues) == 1
    assert verdict.summary == "Solid."


async def test_a_structured_answer_may_repeat_itself_a_little(server: FakeOpenAI) -> None:
    """Three issues with the same long complaint are still an answer (a small model gives
    three chapters one summary): JSON is stopped only at the fifth repeat."""
    whole = json.loads(verdict_json())
    problem = "The keeper climbs the same stairs to the same locked door again."
    issues = [dict(whole["issues"][0], quote=q, problem=problem) for q in ("a", "b", "c")]
    answer = {"scores": whole["scores"], "summary": "Solid.", "issues": issues}
    server.script(Reply(text=json.dumps(answer), chunk_size=20))

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict
    )

    assert [i.quote for i in verdict.issues] == ["a", "b", "c"]
    assert len(server.requests) == 1


async def test_structured_answer_looping_before_it_is_whole_is_asked_again(
    server: FakeOpenAI,
) -> None:
    whole = json.loads(verdict_json())
    looping = json.dumps({"scores": whole["scores"], "summary": LOOP.strip() * 40})
    server.script(Reply(text=looping, chunk_size=30), Reply(text=verdict_json(summary="Fine.")))

    verdict = await gateway(server, SleepRecorder()).structured(
        "chapter_review", review_input(), Verdict
    )

    assert verdict.summary == "Fine."
    retry = server.requests[1]
    assert retry["frequency_penalty"] > 0 and isinstance(retry["seed"], int)
    assert "every list item must be different" in server.messages(1)[-1]["content"]
