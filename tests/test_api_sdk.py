"""The LangGraph-compatible API driven by the official ``langgraph_sdk`` client.

A real server (uvicorn on a free loopback port, in a background thread) runs the
embedded default in a temporary data folder, with its in-process workers. Two users
register and log in through ``/api/v1/auth``; every call carries a bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
)
from langgraph_sdk.schema import RunCreateMetadata, StreamPart

from server.runs.service import ASSISTANT_ID
from server.settings import load_settings
from tests.apps import served
from tests.services import postgres, redis
from tests.services.base import Running

pytestmark = pytest.mark.slow

PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."
PASSWORD = "correct horse battery staple"
_APP_ENV_PREFIXES = ("SCRIBE_", "OPENAI_", "LANGGRAPH_", "LANGSMITH_", "LANGCHAIN_")
_APP_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "QDRANT_URL", "NEO4J_URL")


def book(chapters: int = 1, **extra: Any) -> dict[str, Any]:
    """A graph input for a short book."""
    return {"premise": PREMISE, "chapters": chapters, "genre": "fantasy", **extra}


@dataclass(frozen=True)
class LiveServer:
    """A running server and the bearer tokens of its two users."""

    url: str
    alice: str
    bob: str


def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SCRIBE_TEST_"):
            continue
        if name.startswith(_APP_ENV_PREFIXES) or name in _APP_ENV_NAMES:
            monkeypatch.delenv(name, raising=False)


def _token(url: str, email: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:
        registered = http.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        login = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token: str = login.json()["access_token"]
        return token


@contextmanager
def _stack(request: pytest.FixtureRequest, kind: str) -> Iterator[dict[str, Any]]:
    """Settings naming the services of ``kind``: nothing (embedded), or Postgres and Redis."""
    if kind == "embedded":
        yield {}
        return
    postgres_server: Running = request.getfixturevalue("postgres_server")
    redis_server: Running = request.getfixturevalue("redis_server")
    database = postgres.create_database(postgres_server.url)
    redis.flush_database(redis_server.url)
    try:
        yield {
            "database_url": database,
            "redis_url": redis_server.url,
            "jwt_secret": secrets.token_urlsafe(48),
        }
    finally:
        redis.flush_database(redis_server.url)
        postgres.drop_database(postgres_server.url, postgres.database_name(database))


@pytest.fixture(scope="module", params=["embedded", "postgres-redis"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The server, started once for this module on each stack."""
    with _stack(request, request.param) as services, pytest.MonkeyPatch.context() as patch:
        _hermetic(patch)
        settings = load_settings(
            data_dir=tmp_path_factory.mktemp("server") / "data",
            words_per_chapter=150,
            # uvloop rounds sub-millisecond sleeps to nothing: stay at 1 ms or more per token.
            offline_tokens_per_second=500.0,
            sse_heartbeat_s=0.5,
            worker_concurrency=4,
            lease_s=10.0,
            heartbeat_s=0.5,
            auth_rate_limit=10_000,
            **services,
        )
        with served(settings) as url:
            yield LiveServer(url, _token(url, "alice@example.com"), _token(url, "bob@example.com"))


def _client(live: LiveServer, token: str) -> LangGraphClient:
    return get_client(url=live.url, headers={"Authorization": f"Bearer {token}"}, api_key=None)


@pytest.fixture
async def alice(live: LiveServer) -> AsyncIterator[LangGraphClient]:
    """Alice's SDK client."""
    client = _client(live, live.alice)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def bob(live: LiveServer) -> AsyncIterator[LangGraphClient]:
    """Bob's SDK client."""
    client = _client(live, live.bob)
    try:
        yield client
    finally:
        await client.aclose()


def _values(state: Any) -> dict[str, Any]:
    values: dict[str, Any] = state["values"] or {}
    return values


async def _until_running(client: LangGraphClient, thread_id: str, run_id: str) -> None:
    # Polling the API is the point: this is what a client can observe.
    async with asyncio.timeout(60):
        while (await client.runs.get(thread_id, run_id))["status"] != "running":  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def _until_chapter(client: LangGraphClient, thread_id: str) -> None:
    """Poll the thread's state until the writer has drafted its first chapter."""
    async with asyncio.timeout(60):
        while not _values(await client.threads.get_state(thread_id)).get("drafts"):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


# --- assistants ---------------------------------------------------------------------------


async def test_assistants(alice: LangGraphClient) -> None:
    found = await alice.assistants.search()
    assert [a["graph_id"] for a in found] == ["novel"]
    assert found[0]["assistant_id"] == ASSISTANT_ID
    assert await alice.assistants.search(graph_id="other") == []
    by_graph = await alice.assistants.get("novel")
    by_id = await alice.assistants.get(ASSISTANT_ID)
    assert by_graph == by_id == found[0]
    with pytest.raises(NotFoundError):
        await alice.assistants.get(str(uuid.uuid4()))
    graph = await alice.assistants.get_graph("novel")
    node_ids = {n["id"] for n in graph["nodes"]}
    assert {"intake", "writer", "reviewer", "outline_gate"} <= node_ids
    schemas: Any = await alice.assistants.get_schemas("novel")
    assert schemas["graph_id"] == "novel"
    assert set(schemas["input_schema"]["required"]) == {"premise", "chapters"}


# --- streaming --------------------------------------------------------------------------


async def test_stream_values_updates_and_tokens(alice: LangGraphClient) -> None:
    thread = await alice.threads.create(metadata={"shelf": "sea"})
    assert thread["status"] == "idle"
    created: list[RunCreateMetadata] = []
    parts: list[tuple[float, StreamPart]] = []
    async for part in alice.runs.stream(
        thread["thread_id"],
        "novel",
        input=book(1),
        stream_mode=["values", "updates", "messages-tuple", "custom"],
        on_run_created=created.append,
    ):
        parts.append((time.monotonic(), part))
    events = [p.event for _, p in parts]
    assert events[0] == "metadata"
    assert events[-1] == "end"
    assert {"values", "updates", "messages", "custom"} <= set(events)
    run_id = parts[0][1].data["run_id"]
    assert created == [{"run_id": run_id, "thread_id": thread["thread_id"]}]
    assert all(p.id for _, p in parts[:-1]), "every event carries an id"

    final = [p.data for _, p in parts if p.event == "values"][-1]
    assert final["accepted"] == 1 and final["done"] is True
    assert final["novel_id"] == thread["thread_id"]

    # messages-tuple: [message chunk, metadata], tokens streamed while the writer works.
    writer = [
        (at, p.data)
        for at, p in parts
        if p.event == "messages" and p.data[1].get("langgraph_node") == "writer"
    ]
    assert len(writer) > 50
    assert all(d[0]["type"] == "AIMessageChunk" for _, d in writer)
    drafted = next(at for at, p in parts if p.event == "updates" and "writer" in (p.data or {}))
    assert writer[-1][0] - writer[0][0] > 0.05, "tokens arrive over time, not at once"
    assert writer[0][0] < drafted - 0.05, "the first token arrives before the draft is done"
    text = "".join(d[0]["content"] for _, d in writer)
    assert len(text.split()) > 100

    run: Any = await alice.runs.get(thread["thread_id"], run_id)
    assert run["status"] == "success"
    assert run["kwargs"]["stream_mode"] == ["values", "updates", "messages-tuple", "custom"]
    got: Any = await alice.threads.get(thread["thread_id"])
    assert got["status"] == "idle"
    assert got["metadata"] == {"graph_id": "novel", "shelf": "sea"}
    assert got["values"]["accepted"] == 1


async def test_wait_create_join_and_list(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    values = await alice.runs.wait(tid, "novel", input=book(1))
    assert isinstance(values, dict)
    assert values["done"] is True and values["accepted"] == 1

    created: list[RunCreateMetadata] = []
    run = await alice.runs.create(
        tid, ASSISTANT_ID, input=book(1), metadata={"try": 2}, on_run_created=created.append
    )
    assert run["status"] == "pending"
    assert run["metadata"] == {"try": 2}
    assert created == [{"run_id": run["run_id"], "thread_id": tid}]
    joined = await alice.runs.join(tid, run["run_id"])
    assert joined["done"] is True
    assert (await alice.runs.get(tid, run["run_id"]))["status"] == "success"
    listed = await alice.runs.list(tid)
    assert listed[0]["run_id"] == run["run_id"]
    assert len(listed) == 2
    assert [r["status"] for r in await alice.runs.list(tid, status="success")] == [
        "success",
        "success",
    ]


async def test_join_stream_resumes_after_last_event_id(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    run = await alice.runs.create(
        tid, "novel", input=book(1), stream_mode=["values", "updates", "custom"]
    )
    first: list[StreamPart] = []
    async for part in alice.runs.join_stream(tid, run["run_id"]):
        first.append(part)
        if len(first) == 10:
            break  # the client goes away mid-run
    assert first[0].event == "metadata"
    last_id = first[-1].id
    assert last_id is not None
    rest = [p async for p in alice.runs.join_stream(tid, run["run_id"], last_event_id=last_id)]
    assert rest[-1].event == "end"
    assert (await alice.runs.get(tid, run["run_id"]))["status"] == "success"

    # The finished run replays whole, and in two parts that fit together.
    whole = [p async for p in alice.runs.join_stream(tid, run["run_id"])]
    assert [p.id for p in whole[:10]] == [p.id for p in first]
    assert [(p.event, p.id) for p in whole[10:]] == [(p.event, p.id) for p in rest]
    only_updates = [
        p async for p in alice.runs.join_stream(tid, run["run_id"], stream_mode="updates")
    ]
    assert {p.event for p in only_updates} == {"metadata", "updates", "end"}


# --- state, history, forks ----------------------------------------------------------------


async def test_state_history_update_and_fork(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    await alice.runs.wait(tid, "novel", input=book(1))
    state: Any = await alice.threads.get_state(tid)
    assert state["values"]["done"] is True
    assert state["next"] == []
    assert state["checkpoint"]["thread_id"] == tid
    assert state["parent_checkpoint"] is not None

    history = await alice.threads.get_history(tid, limit=100)
    assert history[0]["checkpoint"] == state["checkpoint"]
    assert len(history) > 10
    # The point where the plan is set and the first beats are next.
    past = next(s for s in history if s["next"] == ["director_beats"])
    older = await alice.threads.get_state(tid, checkpoint_id=past["checkpoint"]["checkpoint_id"])
    assert older["values"] == past["values"]
    same = await alice.threads.get_state(tid, checkpoint=past["checkpoint"])
    assert same["checkpoint"] == past["checkpoint"]
    limited = await alice.threads.get_history(tid, limit=2, before=past["checkpoint"])
    assert [h["checkpoint"]["checkpoint_id"] for h in limited] == [
        h["checkpoint"]["checkpoint_id"] for h in history[history.index(past) + 1 :][:2]
    ]

    # Edit the present.
    edited = await alice.threads.update_state(tid, {"plan_notes": "keep it short"})
    now: Any = await alice.threads.get_state(tid)
    assert now["checkpoint"]["checkpoint_id"] == edited["checkpoint"]["checkpoint_id"]
    assert now["values"]["plan_notes"] == "keep it short"

    # Fork from the past and let a run continue from the fork.
    fork = await alice.threads.update_state(
        tid,
        {"plan_notes": "the fork"},
        as_node="worldsmith_seed",
        checkpoint_id=past["checkpoint"]["checkpoint_id"],
    )
    forked: Any = await alice.threads.get_state(tid)
    assert forked["checkpoint"]["checkpoint_id"] == fork["checkpoint"]["checkpoint_id"]
    assert forked["parent_checkpoint"]["checkpoint_id"] == past["checkpoint"]["checkpoint_id"]
    assert forked["next"] == ["director_beats"]
    values: Any = await alice.runs.wait(tid, "novel")
    assert values["done"] is True
    assert values["plan_notes"] == "the fork"

    # A run may also start from a past checkpoint directly.
    again: Any = await alice.runs.wait(
        tid, "novel", checkpoint_id=past["checkpoint"]["checkpoint_id"]
    )
    assert again["done"] is True
    head: Any = await alice.threads.get_state(tid)
    assert head["values"].get("plan_notes") != "the fork"

    with pytest.raises(UnprocessableEntityError):
        await alice.threads.update_state(tid, {"plan_notes": "x"}, as_node="nowhere")
    with pytest.raises(NotFoundError):
        await alice.threads.get_state(tid, checkpoint_id=str(uuid.uuid4()))


async def test_interrupt_and_resume(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    streamed = [
        p
        async for p in alice.runs.stream(
            tid, "novel", input=book(1, pause_after=["outline"]), stream_mode="values"
        )
    ]
    paused = [p.data for p in streamed if p.event == "values" and "__interrupt__" in p.data]
    assert paused, "the interrupt shows in the values stream"
    interrupt = paused[-1]["__interrupt__"][0]
    assert interrupt["value"]["gate"] == "outline"
    assert interrupt["id"]

    got = await alice.threads.get(tid)
    assert got["status"] == "interrupted"
    assert [i["id"] for items in got["interrupts"].values() for i in items] == [interrupt["id"]]
    state = await alice.threads.get_state(tid)
    assert state["next"] == ["outline_gate"]
    assert state["interrupts"][0]["value"]["gate"] == "outline"
    runs = await alice.runs.list(tid)
    assert runs[0]["status"] == "interrupted"
    assert [t["thread_id"] for t in await alice.threads.search(status="interrupted")].count(
        tid
    ) == 1

    with pytest.raises(ConflictError):
        await alice.threads.create(thread_id=tid)
    assert (await alice.threads.create(thread_id=tid, if_exists="do_nothing"))["thread_id"] == tid

    # A bad answer is refused up front (422 naming the field) and changes nothing.
    with pytest.raises(httpx.HTTPStatusError) as refused:
        await alice.runs.wait(tid, "novel", command={"resume": {"action": "dance"}})
    assert refused.value.response.status_code == 422
    assert refused.value.response.json()["field"] == "command.resume"
    assert (await alice.threads.get(tid))["status"] == "interrupted"
    assert (await alice.threads.get_state(tid))["interrupts"][0]["id"] == interrupt["id"]

    values: Any = await alice.runs.wait(tid, "novel", command={"resume": {"action": "approve"}})
    assert values["done"] is True and "__interrupt__" not in values
    assert (await alice.threads.get(tid))["status"] == "idle"


async def test_breakpoints_and_other_stream_modes(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    parts = [
        p
        async for p in alice.runs.stream(
            tid,
            "novel",
            input=book(1),
            interrupt_after=["director_plan"],
            stream_mode=["debug", "checkpoints", "tasks"],
        )
    ]
    assert {"metadata", "debug", "checkpoints", "tasks", "end"} <= {p.event for p in parts}
    debug_types = {p.data["type"] for p in parts if p.event == "debug"}
    assert {"checkpoint", "task", "task_result"} <= debug_types
    state = await alice.threads.get_state(tid)
    assert state["next"] == ["outline_gate"]
    assert (await alice.threads.get(tid))["status"] == "interrupted"
    assert (await alice.runs.list(tid))[0]["status"] == "interrupted"
    # No input: carry on from the breakpoint.
    values: Any = await alice.runs.wait(tid, "novel")
    assert values["done"] is True


async def test_disconnecting_cancels_when_asked(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    stream: Any = alice.runs.stream(
        tid, "novel", input=book(2), stream_mode="custom", on_disconnect="cancel"
    )
    run_id = ""
    async with contextlib.aclosing(stream):
        async for part in stream:
            if part.event == "metadata":
                run_id = part.data["run_id"]
            if part.event == "custom" and part.data.get("agent") == "writer":
                break  # the client hangs up mid-run
    assert run_id
    async with asyncio.timeout(30):
        while (await alice.runs.get(tid, run_id))["status"] != "interrupted":  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    # A plain join_stream may come and go; the run carries on.
    run = await alice.runs.create(tid, "novel", stream_mode="custom")
    joined: Any = alice.runs.join_stream(tid, run["run_id"])
    async with contextlib.aclosing(joined):
        async for _ in joined:
            break
    assert (await alice.runs.join(tid, run["run_id"]))["done"] is True
    assert (await alice.runs.get(tid, run["run_id"]))["status"] == "success"


# --- cancellation and multitasking --------------------------------------------------------


async def test_cancel_interrupt_and_rollback(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    run = await alice.runs.create(tid, "novel", input=book(3))
    await _until_chapter(alice, tid)
    await alice.runs.cancel(tid, run["run_id"], wait=True)
    assert (await alice.runs.get(tid, run["run_id"]))["status"] == "interrupted"
    parts = [p async for p in alice.runs.join_stream(tid, run["run_id"])]
    assert parts[-1].event == "end"
    with pytest.raises(ConflictError):
        await alice.runs.cancel(tid, run["run_id"])

    before = await alice.threads.get_state(tid)
    rolled = await alice.runs.create(tid, "novel")
    await _until_running(alice, tid, rolled["run_id"])
    await asyncio.sleep(0.3)
    await alice.runs.cancel(tid, rolled["run_id"], wait=True, action="rollback")
    with pytest.raises(NotFoundError):
        await alice.runs.get(tid, rolled["run_id"])
    after = await alice.threads.get_state(tid)
    assert after["checkpoint"] == before["checkpoint"]
    assert after["values"] == before["values"]


async def test_multitask_strategies(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    first = await alice.runs.create(tid, "novel", input=book(2))
    await _until_running(alice, tid, first["run_id"])

    with pytest.raises(ConflictError):
        await alice.runs.create(tid, "novel", multitask_strategy="reject")

    queued = await alice.runs.create(tid, "novel", multitask_strategy="enqueue")
    assert queued["status"] == "pending"
    interrupting = await alice.runs.create(
        tid, "novel", input=book(1), multitask_strategy="interrupt"
    )
    # The running run stops (kept as interrupted); the queued one is interrupted at once.
    await alice.runs.join(tid, interrupting["run_id"])
    assert (await alice.runs.get(tid, first["run_id"]))["status"] == "interrupted"
    assert (await alice.runs.get(tid, queued["run_id"]))["status"] == "interrupted"
    assert (await alice.runs.get(tid, interrupting["run_id"]))["status"] == "success"

    before = await alice.threads.get_state(tid)
    doomed = await alice.runs.create(tid, "novel", input=book(2))
    await _until_running(alice, tid, doomed["run_id"])
    await asyncio.sleep(0.3)
    rolling = await alice.runs.create(tid, "novel", input=book(1), multitask_strategy="rollback")
    values = await alice.runs.join(tid, rolling["run_id"])
    assert values["done"] is True
    with pytest.raises(NotFoundError):
        await alice.runs.get(tid, doomed["run_id"])
    history = await alice.threads.get_history(tid, limit=1000)
    run_ids = {(h["metadata"] or {}).get("run_id") for h in history}
    assert doomed["run_id"] not in run_ids
    assert rolling["run_id"] in run_ids
    assert before["checkpoint"]["checkpoint_id"] in {
        h["checkpoint"]["checkpoint_id"] for h in history
    }

    later = await alice.runs.create(tid, "novel", input=book(1))
    assert (await alice.runs.join(tid, later["run_id"]))["done"] is True
    statuses = {r["run_id"]: r["status"] for r in await alice.runs.list(tid, limit=100)}
    assert statuses[later["run_id"]] == "success"


# --- ownership, auth, refused fields ------------------------------------------------------


async def test_another_user_gets_404(
    alice: LangGraphClient, bob: LangGraphClient, live: LiveServer
) -> None:
    thread = await alice.threads.create(metadata={"owner": "alice"})
    tid = thread["thread_id"]
    run = await alice.runs.create(tid, "novel", input=book(1, pause_after=["outline"]))
    await alice.runs.join(tid, run["run_id"])
    state = await alice.threads.get_state(tid)
    checkpoint_id = state["checkpoint"]["checkpoint_id"]

    calls = [
        bob.threads.get(tid),
        bob.threads.update(tid, metadata={"x": 1}),
        bob.threads.get_state(tid),
        bob.threads.get_state(tid, checkpoint_id=checkpoint_id),
        bob.threads.get_history(tid),
        bob.threads.update_state(tid, {"plan_notes": "mine"}),
        bob.threads.delete(tid),
        bob.runs.get(tid, run["run_id"]),
        bob.runs.list(tid),
        bob.runs.join(tid, run["run_id"]),
        bob.runs.cancel(tid, run["run_id"]),
        bob.runs.create(tid, "novel", command={"resume": {"action": "approve"}}),
        bob.runs.wait(tid, "novel", input=book(1)),
    ]
    for call in calls:
        # wait/join answer through httpx directly: the SDK raises plain HTTPStatusError there.
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await call
        assert caught.value.response.status_code == 404, call
    with pytest.raises(NotFoundError):
        async for _ in bob.runs.stream(tid, "novel", input=book(1)):
            pass
    with pytest.raises(NotFoundError):
        async for _ in bob.runs.join_stream(tid, run["run_id"]):
            pass
    assert tid not in {t["thread_id"] for t in await bob.threads.search(limit=1000)}
    assert tid in {t["thread_id"] for t in await alice.threads.search(metadata={"owner": "alice"})}
    # Bob cannot take the id either.
    with pytest.raises(ConflictError):
        await bob.threads.create(thread_id=tid)
    assert (await alice.threads.get(tid))["status"] == "interrupted"

    anonymous = get_client(url=live.url, api_key=None)
    try:
        with pytest.raises(AuthenticationError):
            await anonymous.threads.search()
    finally:
        await anonymous.aclose()


async def test_api_key_client(live: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        made = await http.post(
            "/api/v1/api-keys",
            json={"name": "sdk"},
            headers={"Authorization": f"Bearer {live.alice}"},
        )
        assert made.status_code == 201, made.text
        key = made.json()["key"]
    client = get_client(url=live.url, api_key=key)
    try:
        thread = await client.threads.create()
        values: Any = await client.runs.wait(thread["thread_id"], "novel", input=book(1))
        assert values["done"] is True
    finally:
        await client.aclose()
    alice = _client(live, live.alice)
    try:
        assert (await alice.threads.get(thread["thread_id"]))["status"] == "idle"
    finally:
        await alice.aclose()


async def test_fields_the_server_cannot_honour(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    refused: list[tuple[dict[str, Any], str]] = [
        ({"webhook": "https://example.com/hook"}, "webhook"),
        ({"feedback_keys": ["stars"]}, "feedback_keys"),
        ({"stream_mode": "events"}, "stream_mode"),
        ({"context": {"model": "x"}}, "context"),
        ({"interrupt_before": ["nowhere"]}, "interrupt_before"),
        ({"durability": "exit"}, "durability"),
        ({"input": {"premise": PREMISE, "chapters": 0}}, "chapters"),
    ]
    for extra, field in refused:
        payload: dict[str, Any] = {"assistant_id": "novel", "input": book(1), **extra}
        # Through the SDK's own HTTP client: runs.create does not pass every field.
        with pytest.raises(UnprocessableEntityError) as caught:
            await alice.http.post(f"/threads/{tid}/runs", json=payload)
        assert field in str(caught.value), (field, str(caught.value))
    with pytest.raises(NotFoundError):
        await alice.runs.create(tid, "other-graph", input=book(1))
    with pytest.raises(NotFoundError):
        await alice.runs.create(str(uuid.uuid4()), "novel", input=book(1))
    created = await alice.runs.create(
        str(uuid.uuid4()), "novel", input=book(1), if_not_exists="create"
    )
    assert (await alice.runs.join(created["thread_id"], created["run_id"]))["done"] is True
    assert (await alice.runs.list(tid)) == []


async def test_delete_thread(alice: LangGraphClient) -> None:
    thread = await alice.threads.create()
    tid = thread["thread_id"]
    run = await alice.runs.create(tid, "novel", input=book(2))
    await _until_running(alice, tid, run["run_id"])
    await alice.threads.delete(tid)
    with pytest.raises(NotFoundError):
        await alice.threads.get(tid)
    with pytest.raises(NotFoundError):
        await alice.runs.get(tid, run["run_id"])
    with pytest.raises(NotFoundError):
        await alice.threads.get_state(tid)
    # The id is free again, with no state left behind.
    again = await alice.threads.create(thread_id=tid)
    assert again["values"] is None
    assert (await alice.threads.get_history(tid)) == []


# --- the wire format ------------------------------------------------------------------------


async def test_wire_format(live: LiveServer) -> None:
    auth = {"Authorization": f"Bearer {live.alice}"}
    async with httpx.AsyncClient(base_url=live.url, headers=auth, timeout=60) as http:
        tid = (await http.post("/threads", json={})).json()["thread_id"]
        created = await http.post(
            f"/threads/{tid}/runs",
            json={"assistant_id": "novel", "input": book(1), "after_seconds": 1.5},
        )
        assert created.status_code == 200
        rid = created.json()["run_id"]
        assert created.headers["content-location"] == f"/threads/{tid}/runs/{rid}"

        lines: list[str] = []
        async with http.stream("GET", f"/threads/{tid}/runs/{rid}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["location"] == f"/threads/{tid}/runs/{rid}/stream"
            async for line in response.aiter_lines():
                lines.append(line)
        assert lines[:2] == ["event: metadata", f'data: {{"run_id":"{rid}","attempt":1}}']
        assert lines[2].startswith("id: ") and len(lines[2]) > 4
        assert lines[3] == ""
        assert ": heartbeat" in lines, "silence while the run waits is filled"
        assert lines[-4:] == ["event: end", "data: null", lines[-2], ""]
        assert lines[-2].startswith("id: ")
        frames = "\n".join(lines).split("\n\n")
        assert all(f.startswith(("event: ", ": heartbeat")) for f in frames if f)

        bad = await http.get(
            f"/threads/{tid}/runs/{rid}/stream", headers={"Last-Event-ID": "not-an-id"}
        )
        assert bad.status_code == 422
        assert "Last-Event-ID" in bad.json()["detail"] or bad.json().get("field")

        # Waiting sends whitespace while the run is delayed, then the values.
        async with http.stream(
            "POST",
            f"/threads/{tid}/runs/wait",
            json={"assistant_id": "novel", "input": book(1), "after_seconds": 1.2},
        ) as response:
            assert response.headers["content-location"].startswith(f"/threads/{tid}/runs/")
            assert response.headers["location"].endswith("/join")
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert body.startswith(b"\n")
        assert json.loads(body)["done"] is True

        anonymous = await http.get(f"/threads/{tid}", headers={"Authorization": ""})
        assert anonymous.status_code == 401
