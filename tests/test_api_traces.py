"""Traces over HTTP: ``/api/v1/runs`` (usage, JSON Lines, replay, compare) and a thread's
usage, with budgets set through the official LangGraph SDK.

One app per module runs the embedded default (SQLite, SQL world memory, local Qdrant,
offline model) in a temporary data folder, inside its lifespan and with its in-process
workers; ``httpx.ASGITransport`` carries the requests, and the official ``langgraph_sdk``
client rides on the same transport. Books are two short chapters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import UnprocessableEntityError
from langgraph_sdk.schema import RunCreateMetadata

from nodes.schemas import AGENTS
from server.services import AppServices
from tests.apps import register as register_user
from tests.apps import started_app

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

RUNS = "/api/v1/runs"
PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."
RUN_TIMEOUT_S = 120.0
BUDGET_TOKENS = 3000
ID_KEYS = frozenset({"novel_id", "draft_id"})
"""State keys that hold ids of the thread itself (a replay's own, by design)."""


@dataclass(frozen=True)
class Api:
    """The started app, a plain HTTP client of it, and a way to make SDK clients."""

    app: FastAPI
    http: httpx.AsyncClient
    transport: httpx.ASGITransport

    @property
    def services(self) -> AppServices:
        """The app's open services."""
        services: AppServices = self.app.state.services
        return services

    def sdk(self, auth: dict[str, str]) -> LangGraphClient:
        """The official SDK client for the user of ``auth``, on the app's transport."""
        client = httpx.AsyncClient(
            transport=self.transport,
            base_url="http://scribe.test",
            headers=auth,
            timeout=RUN_TIMEOUT_S,
        )
        return LangGraphClient(client)


@dataclass(frozen=True)
class User:
    """A registered user: their bearer header and SDK client."""

    auth: dict[str, str]
    sdk: LangGraphClient


@dataclass(frozen=True)
class Recorded:
    """A finished two-chapter run of one user."""

    user: User
    thread_id: str
    run_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The app on the embedded default with short chapters, started once for the module."""
    data_dir = tmp_path_factory.mktemp("traces") / "data"
    async with started_app(data_dir, timeout_s=RUN_TIMEOUT_S) as started:
        yield Api(started.app, started.http, started.transport)


async def register(api: Api, name: str) -> User:
    """Register and log in a fresh user."""
    auth = await register_user(api.http, name)
    return User(auth, api.sdk(auth))


def book(chapters: int = 2) -> dict[str, Any]:
    """A graph input for a short book."""
    return {"premise": PREMISE, "chapters": chapters, "genre": "fantasy"}


async def record(api: Api, user: User, **wait: Any) -> Recorded:
    """A new thread and one run on it through ``client.runs.wait``; waited for."""
    thread = await user.sdk.threads.create()
    created: list[RunCreateMetadata] = []
    await user.sdk.runs.wait(
        thread["thread_id"], "novel", input=book(), on_run_created=created.append, **wait
    )
    assert len(created) == 1
    return Recorded(user, thread["thread_id"], created[0]["run_id"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def alice_run(api: Api) -> Recorded:
    """Alice's finished book, recorded."""
    return await record(api, await register(api, "alice"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bob_run(api: Api) -> Recorded:
    """Bob's own finished book (so a comparison can pair his run with Alice's)."""
    return await record(api, await register(api, "bob"))


async def get_json(api: Api, auth: dict[str, str], path: str) -> Any:
    """GET ``path`` as ``auth``; its JSON after checking for a 200."""
    response = await api.http.get(path, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


async def trace(api: Api, auth: dict[str, str], run_id: str) -> list[dict[str, Any]]:
    """The run's trace, every line parsed."""
    response = await api.http.get(f"{RUNS}/{run_id}/trace", headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.text.endswith("\n")
    lines = response.text.splitlines()
    assert all(lines), "no blank lines between objects"
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


async def replay(api: Api, user: User, run_id: str, body: dict[str, Any]) -> tuple[str, str]:
    """POST a replay, check the 202, and wait for the new run; (thread_id, run_id)."""
    response = await api.http.post(f"{RUNS}/{run_id}/replay", json=body, headers=user.auth)
    assert response.status_code == 202, response.text
    answer = response.json()
    tid, rid = answer["thread_id"], answer["run_id"]
    assert response.headers["content-location"] == f"/threads/{tid}/runs/{rid}"
    await user.sdk.runs.join(tid, rid)
    run = await user.sdk.runs.get(tid, rid)
    assert run["status"] == "success", run
    return tid, rid


def values_of(state: Any) -> dict[str, Any]:
    """The values of a thread state as the SDK returns it."""
    values: dict[str, Any] = state["values"] or {}
    return values


def without_ids(values: dict[str, Any]) -> dict[str, Any]:
    """A thread's values minus the keys holding the thread's own ids."""
    return {k: v for k, v in values.items() if k not in ID_KEYS}


async def chapters(api: Api, novel_id: str) -> list[tuple[int, str, str, str]]:
    """The novel's accepted chapters from the app store: (number, title, summary, text)."""
    found = await api.services.backends.store.list_chapters(novel_id)
    return [(c.number, c.title, c.summary, c.text) for c in found]


# --- usage, trace, replay, compare ------------------------------------------------------


async def test_usage_trace_replay_and_compare(api: Api, alice_run: Recorded) -> None:
    alice, rid, tid = alice_run.user, alice_run.run_id, alice_run.thread_id
    run = await get_json(api, alice.auth, f"{RUNS}/{rid}")
    assert (run["run_id"], run["thread_id"]) == (rid, tid)
    assert (run["status"], run["source"], run["sequence"]) == ("success", "api", 1)
    assert run["stop_reason"] is None and run["replay"] is None
    assert run["budget"] == {"max_tokens": None, "max_cost_usd": None}
    assert run["finished_at"] is not None and run["finished_at"] >= run["created_at"]
    usage = run["usage"]
    assert set(usage["agents"]) == set(AGENTS), "every agent made model calls"
    for agent, totals in usage["agents"].items():
        assert totals["calls"] > 0 and totals["total_tokens"] > 0, agent
        assert totals["input_tokens"] > 0 and totals["output_tokens"] > 0, agent
    assert usage["calls"] == sum(a["calls"] for a in usage["agents"].values())
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    lines = await trace(api, alice.auth, rid)
    assert lines[0]["type"] == "run"
    assert (lines[0]["run_id"], lines[0]["thread_id"]) == (rid, tid)
    assert lines[0]["usage"] == usage
    assert {line["type"] for line in lines[1:]} == {"step", "call"}
    calls = [line for line in lines if line["type"] == "call"]
    assert len(calls) == usage["calls"]
    recorded = await api.services.backends.tracing.store.calls(rid)
    assert [c["call_id"] for c in calls] == [c.call_id for c in recorded]
    assert [c["answer"] for c in calls] == [c.answer for c in recorded]
    assert all(c["run_id"] == rid and c["thread_id"] == tid for c in calls)
    assert sum(c["input_tokens"] + c["output_tokens"] for c in calls) == usage["total_tokens"]
    for agent in AGENTS:
        mine = [c for c in calls if c["agent"] == agent]
        assert len(mine) == usage["agents"][agent]["calls"], agent
    assert all(c["messages"] and c["answer"] for c in calls)
    # Each call follows the line of the node step that made it.
    step: dict[str, Any] | None = None
    for line in lines[1:]:
        if line["type"] == "step":
            step = line
            assert line["checkpoint_id"] and line["run_id"] == rid
            continue
        assert step is not None, "a call before any step"
        assert (line["task_id"], line["node"]) == (step["task_id"], step["node"])

    # A full replay: same chapters and state on a new thread, answered from records.
    new_tid, new_rid = await replay(api, alice, rid, {})
    assert new_tid != tid
    assert await chapters(api, new_tid) == await chapters(api, tid)
    assert len(await chapters(api, tid)) == 2
    original = await alice.sdk.threads.get_state(tid)
    replayed = await alice.sdk.threads.get_state(new_tid)
    assert values_of(replayed)["novel_id"] == new_tid
    assert without_ids(values_of(replayed)) == without_ids(values_of(original))

    again = await get_json(api, alice.auth, f"{RUNS}/{new_rid}")
    assert (again["source"], again["status"], again["thread_id"]) == ("replay", "success", new_tid)
    assert again["replay"]["source_run_id"] == rid
    assert again["replay"]["recorded_agents"] == list(AGENTS)
    assert again["usage"]["cost_usd"] == 0
    assert again["usage"]["calls"] == usage["calls"]
    replay_calls = [
        line for line in await trace(api, alice.auth, new_rid) if line["type"] == "call"
    ]
    assert [c["replayed_from"] for c in replay_calls] == [c["call_id"] for c in calls]
    assert all(c["cost_usd"] == 0 for c in replay_calls)

    compared = await get_json(api, alice.auth, f"{RUNS}/compare?a={rid}&b={new_rid}")
    assert compared["runs"]["a"]["run_id"] == rid and compared["runs"]["b"]["run_id"] == new_rid
    assert compared["identical_texts"] is True and compared["differing_chapters"] == []
    assert [c["number"] for c in compared["chapters"]] == [1, 2]
    for chapter in compared["chapters"]:
        assert chapter["identical"] and chapter["diff"] == ""
        verdict = chapter["verdict"]
        assert verdict["a"]["scores"] and verdict["a"]["scores"] == verdict["b"]["scores"]
        assert verdict["b"]["replayed"] is True and verdict["a"]["replayed"] is False
    assert compared["usage"]["a"] == usage
    assert compared["usage"]["b"]["cost_usd"] == 0

    thread = await get_json(api, alice.auth, f"/api/v1/threads/{tid}/usage")
    assert thread["thread_id"] == tid
    assert thread["usage"] == usage
    assert thread["runs"] == [
        {"run_id": rid, "sequence": 1, "status": "success", "stop_reason": None, "usage": usage}
    ]


async def test_replay_with_a_live_agent(api: Api, alice_run: Recorded) -> None:
    alice, rid = alice_run.user, alice_run.run_id
    new_tid, new_rid = await replay(api, alice, rid, {"live_agents": ["reviewer"]})
    run = await get_json(api, alice.auth, f"{RUNS}/{new_rid}")
    assert run["replay"]["recorded_agents"] == ["director", "worldsmith", "writer"]
    calls = [line for line in await trace(api, alice.auth, new_rid) if line["type"] == "call"]
    reviewer = [c for c in calls if c["agent"] == "reviewer"]
    others = [c for c in calls if c["agent"] != "reviewer"]
    assert reviewer and all(c["replayed_from"] is None for c in reviewer)
    assert others and all(c["replayed_from"] is not None for c in others)
    # The offline reviewer is deterministic, so the book comes out the same.
    assert await chapters(api, new_tid) == await chapters(api, alice_run.thread_id)


# --- budgets ----------------------------------------------------------------------------


async def test_budget_stops_the_run_resumably(api: Api) -> None:
    alice = await register(api, "budget")
    stopped = await record(api, alice, context={"budget": {"max_tokens": BUDGET_TOKENS}})
    tid, rid = stopped.thread_id, stopped.run_id
    run: dict[str, Any] = dict(await alice.sdk.runs.get(tid, rid))
    assert run["status"] == "interrupted"
    assert run["kwargs"]["budget"] == {"max_tokens": BUDGET_TOKENS, "max_cost_usd": None}
    errors = [p.data async for p in alice.sdk.runs.join_stream(tid, rid) if p.event == "error"]
    assert len(errors) == 1
    assert errors[0]["error"] == "BudgetExceeded"
    assert "budget exceeded" in errors[0]["message"]

    traced = await get_json(api, alice.auth, f"{RUNS}/{rid}")
    assert traced["status"] == "budget_exceeded"
    assert "token budget exceeded" in traced["stop_reason"]
    assert traced["budget"] == {"max_tokens": BUDGET_TOKENS, "max_cost_usd": None}
    spent = traced["usage"]["total_tokens"]
    assert spent >= BUDGET_TOKENS, "it stopped only once the budget was used up"

    thread = await alice.sdk.threads.get(tid)
    assert thread["status"] == "interrupted"
    state = await alice.sdk.threads.get_state(tid)
    assert state["next"], "the thread can go on"
    assert not values_of(state).get("done")
    assert len(await chapters(api, tid)) < 2

    # Resumed without a budget (input None: continue from the last checkpoint).
    created: list[RunCreateMetadata] = []
    values = await alice.sdk.runs.wait(tid, "novel", input=None, on_run_created=created.append)
    assert isinstance(values, dict)
    assert values["done"] is True and values["accepted"] == 2
    assert [c[0] for c in await chapters(api, tid)] == [1, 2], "each chapter exactly once"
    resumed = await get_json(api, alice.auth, f"{RUNS}/{created[0]['run_id']}")
    assert (resumed["status"], resumed["sequence"]) == ("success", 2)

    usage = await get_json(api, alice.auth, f"/api/v1/threads/{tid}/usage")
    assert [(r["run_id"], r["status"]) for r in usage["runs"]] == [
        (rid, "budget_exceeded"),
        (created[0]["run_id"], "success"),
    ]
    per_run = [r["usage"]["total_tokens"] for r in usage["runs"]]
    assert usage["usage"]["total_tokens"] == sum(per_run) > BUDGET_TOKENS
    assert usage["usage"]["calls"] == sum(r["usage"]["calls"] for r in usage["runs"])


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"budget": {"max_tokens": -5}}, "budget"),
        ({"budget": {"max_tokens": "lots"}}, "budget"),
        ({"budget": {"max_cost_usd": 0}}, "budget"),
        ({"budget": {"tokens": 100}}, "budget.tokens"),
        ({"budget": 100}, "budget"),
        ({"model": "gpt-4o"}, "context.model"),
        ({"budget": {"max_tokens": 100}, "temperature": 0}, "context.temperature"),
    ],
)
async def test_bad_run_context_is_refused(api: Api, context: dict[str, Any], field: str) -> None:
    user = await register(api, "context")
    thread = await user.sdk.threads.create()
    with pytest.raises(UnprocessableEntityError) as refused:
        await user.sdk.runs.create(thread["thread_id"], "novel", input=book(), context=context)
    assert refused.value.response.status_code == 422
    assert field in str(refused.value.response.json())
    assert await user.sdk.runs.list(thread["thread_id"]) == [], "no run was queued"


# --- bad replay input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"live_agents": ["critic"]}, 422, "critic"),
        ({"recorded_agents": ["writer", "editor"]}, 422, "editor"),
        ({"live_agents": "reviewer"}, 422, "live_agents"),
        ({"agents": ["writer"]}, 422, "agents"),
        ({"from_checkpoint_id": str(uuid.uuid4())}, 404, "checkpoint"),
    ],
)
async def test_bad_replay_is_refused(
    api: Api, alice_run: Recorded, body: dict[str, Any], status: int, fragment: str
) -> None:
    alice = alice_run.user
    before = await alice.sdk.threads.search(limit=1000)
    response = await api.http.post(
        f"{RUNS}/{alice_run.run_id}/replay", json=body, headers=alice.auth
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"]
    assert len(await alice.sdk.threads.search(limit=1000)) == len(before), "no thread created"


async def test_replay_from_a_checkpoint(api: Api, alice_run: Recorded) -> None:
    alice = alice_run.user
    history = await alice.sdk.threads.get_history(alice_run.thread_id, limit=1000)
    # The oldest checkpoint after the first chapter was accepted (history is newest first).
    middle = [h for h in history if values_of(h).get("accepted") == 1 and h["next"]][-1]
    checkpoint_id = middle["checkpoint"]["checkpoint_id"]
    body = {"live_agents": ["reviewer"], "from_checkpoint_id": checkpoint_id}
    new_tid, new_rid = await replay(api, alice, alice_run.run_id, body)
    run = await get_json(api, alice.auth, f"{RUNS}/{new_rid}")
    first_live = int((middle["metadata"] or {})["step"]) + 1
    assert run["replay"]["from_checkpoint_id"] == checkpoint_id
    assert run["replay"]["live_from_step"] == first_live
    calls = [line for line in await trace(api, alice.auth, new_rid) if line["type"] == "call"]
    before = [c for c in calls if c["step"] < first_live]
    live = [c for c in calls if c["step"] >= first_live and c["agent"] == "reviewer"]
    assert before and all(c["replayed_from"] is not None for c in before)
    assert live and all(c["replayed_from"] is None for c in live)
    assert await chapters(api, new_tid) == await chapters(api, alice_run.thread_id)


# --- owner isolation --------------------------------------------------------------------

Request = Callable[[Api, dict[str, str], Recorded, Recorded], Awaitable[httpx.Response]]


async def _get_run(api: Api, auth: dict[str, str], a: Recorded, b: Recorded) -> httpx.Response:
    return await api.http.get(f"{RUNS}/{a.run_id}", headers=auth)


async def _trace(api: Api, auth: dict[str, str], a: Recorded, b: Recorded) -> httpx.Response:
    return await api.http.get(f"{RUNS}/{a.run_id}/trace", headers=auth)


async def _replay(api: Api, auth: dict[str, str], a: Recorded, b: Recorded) -> httpx.Response:
    return await api.http.post(f"{RUNS}/{a.run_id}/replay", json={}, headers=auth)


async def _mixed_replay(api: Api, auth: dict[str, str], a: Recorded, b: Recorded) -> httpx.Response:
    body = {"live_agents": ["reviewer"], "from_checkpoint_id": str(uuid.uuid4())}
    return await api.http.post(f"{RUNS}/{a.run_id}/replay", json=body, headers=auth)


async def _compare_left(api: Api, auth: dict[str, str], a: Recorded, b: Recorded) -> httpx.Response:
    return await api.http.get(
        f"{RUNS}/compare", params={"a": a.run_id, "b": b.run_id}, headers=auth
    )


async def _compare_right(
    api: Api, auth: dict[str, str], a: Recorded, b: Recorded
) -> httpx.Response:
    return await api.http.get(
        f"{RUNS}/compare", params={"a": b.run_id, "b": a.run_id}, headers=auth
    )


async def _thread_usage(api: Api, auth: dict[str, str], a: Recorded, b: Recorded) -> httpx.Response:
    return await api.http.get(f"/api/v1/threads/{a.thread_id}/usage", headers=auth)


ENDPOINTS: dict[str, Request] = {
    "get run": _get_run,
    "trace": _trace,
    "replay": _replay,
    "mixed replay": _mixed_replay,
    "compare (a)": _compare_left,
    "compare (b)": _compare_right,
    "thread usage": _thread_usage,
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_another_users_run_is_not_found(
    api: Api, alice_run: Recorded, bob_run: Recorded, endpoint: str
) -> None:
    call = ENDPOINTS[endpoint]
    bob = bob_run.user
    alice_threads = len(await alice_run.user.sdk.threads.search(limit=1000))
    bob_threads = await bob.sdk.threads.search(limit=1000)

    # Alice's run seen by Bob (the other side of a comparison is Bob's own run).
    response = await call(api, bob.auth, alice_run, bob_run)
    assert response.status_code == 404, response.text
    refused = response.json()
    assert refused["code"] == "not_found"
    # The owner check comes first: even the mixed replay's bad checkpoint is not reached.
    assert refused["kind"] == ("thread" if endpoint == "thread usage" else "run")
    assert set(refused) == {"detail", "code", "kind", "id"}, "an error, never data"
    # Nothing was created for Bob (nor for Alice) by a refused request.
    after = await bob.sdk.threads.search(limit=1000)
    assert [t["thread_id"] for t in after] == [t["thread_id"] for t in bob_threads]
    assert len(await alice_run.user.sdk.threads.search(limit=1000)) == alice_threads

    # Without credentials: 401, whoever's run it is.
    anonymous = await call(api, {}, alice_run, bob_run)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["code"] == "unauthenticated"

    # The same request made by the owner (her run on both sides) gets past the check.
    mine = await call(api, alice_run.user.auth, alice_run, alice_run)
    if endpoint == "mixed replay":
        assert mine.status_code == 404 and mine.json()["kind"] == "checkpoint", mine.text
    else:
        assert mine.status_code in (200, 202), mine.text
    if mine.status_code == 202:
        answer = mine.json()
        await alice_run.user.sdk.runs.join(answer["thread_id"], answer["run_id"])


@pytest.mark.parametrize("run_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_unknown_runs_are_not_found(api: Api, alice_run: Recorded, run_id: str) -> None:
    auth = alice_run.user.auth
    for path in (f"{RUNS}/{run_id}", f"{RUNS}/{run_id}/trace", f"/api/v1/threads/{run_id}/usage"):
        response = await api.http.get(path, headers=auth)
        assert response.status_code == 404, response.text
    replayed = await api.http.post(f"{RUNS}/{run_id}/replay", json={}, headers=auth)
    assert replayed.status_code == 404, replayed.text
    for pair in ({"a": run_id, "b": alice_run.run_id}, {"a": alice_run.run_id, "b": run_id}):
        compared = await api.http.get(f"{RUNS}/compare", params=pair, headers=auth)
        assert compared.status_code == 404, compared.text


async def test_compare_needs_both_runs(api: Api, alice_run: Recorded) -> None:
    response = await api.http.get(
        f"{RUNS}/compare", params={"a": alice_run.run_id}, headers=alice_run.user.auth
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "query.b"
