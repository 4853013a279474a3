"""The novels API (``/api/v1/novels``) driven through the real app.

One app per module runs the embedded default (SQLite, SQL world memory, local Qdrant,
offline model) in a temporary data folder, inside its lifespan and with its in-process
workers; ``httpx.ASGITransport`` carries the requests. Every test registers its own users,
so the tests stay independent although they share the app. Books are two short chapters,
written by the offline model in about a second.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from memory.retrieval.chunking import split_passages
from memory.text import is_cjk, text_length
from memory.world.port import FactSpec, WorldChanges
from nodes.common import stable_id
from nodes.integrity import check_claims
from nodes.schemas import ChapterClaims
from server.export import validate_epub
from server.services import AppServices
from tests.apps import register, started_app

pytestmark = pytest.mark.asyncio(loop_scope="module")

API = "/api/v1/novels"
PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Api:
    """A client of the started app and the app itself (for its backends)."""

    client: httpx.AsyncClient
    app: FastAPI

    @property
    def services(self) -> AppServices:
        """The app's open services."""
        services: AppServices = self.app.state.services
        return services


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The app on the embedded default with short chapters, started once for the module."""
    data_dir = tmp_path_factory.mktemp("novels") / "data"
    async with started_app(data_dir, timeout_s=RUN_TIMEOUT_S) as started:
        yield Api(started.http, started.app)


# --- helpers --------------------------------------------------------------------------


async def user(api: Api, name: str | None = None) -> dict[str, str]:
    """Register and log in a fresh user; the bearer header of their access token."""
    return await register(api.client, name or "user")


async def create(api: Api, auth: dict[str, str], **fields: Any) -> dict[str, Any]:
    """Create a two-chapter novel (fields override the defaults)."""
    body: dict[str, Any] = {"premise": PREMISE, "chapters": 2, "genre": "fantasy", **fields}
    response = await api.client.post(API, json=body, headers=auth)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def wait_run(api: Api, auth: dict[str, str], location: str) -> dict[str, Any]:
    """Poll the run at ``location`` until it has finished; its final JSON."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        response = await api.client.get(location, headers=auth)
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] not in ("pending", "running"):
            return run
        assert time.monotonic() < deadline, f"run {location} did not finish: {run}"
        await asyncio.sleep(0.05)


async def write(
    api: Api, auth: dict[str, str], novel_id: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """POST /write, check the 202 and its headers, wait for the run; the finished run."""
    response = await api.client.post(f"{API}/{novel_id}/write", json=body or {}, headers=auth)
    assert response.status_code == 202, response.text
    answer = response.json()
    location = f"/threads/{novel_id}/runs/{answer['run_id']}"
    assert answer["novel_id"] == answer["thread_id"] == novel_id
    assert answer["status"] == "pending"
    assert response.headers["location"] == location
    assert response.headers["content-location"] == location
    return await wait_run(api, auth, location)


async def written(api: Api, auth: dict[str, str], **fields: Any) -> str:
    """A novel written to the end; its id."""
    novel = await create(api, auth, **fields)
    run = await write(api, auth, novel["id"])
    assert run["status"] == "success", run
    return str(novel["id"])


async def get_json(api: Api, auth: dict[str, str], path: str) -> Any:
    """GET ``path`` expecting 200; the JSON body."""
    response = await api.client.get(path, headers=auth)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
    return response.json()


def assert_error(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """The response is ``status`` and its ``detail`` names every fragment."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


async def everything(api: Api, auth: dict[str, str], novel_id: str) -> dict[str, Any]:
    """Everything the owner can read about a novel (to prove nothing changed)."""
    base = f"{API}/{novel_id}"
    state: dict[str, Any] = {"novel": await get_json(api, auth, base)}
    chapters = await get_json(api, auth, f"{base}/chapters")
    state["chapters"] = chapters
    for chapter in chapters:
        n = chapter["number"]
        state[f"chapter {n}"] = await get_json(api, auth, f"{base}/chapters/{n}")
        state[f"versions {n}"] = await get_json(
            api, auth, f"{base}/chapters/{n}/versions?include_text=true"
        )
    state["world"] = await get_json(api, auth, f"{base}/world")
    state["world 0"] = await get_json(api, auth, f"{base}/world?chapter=0")
    passages = api.services.backends.context.passages
    state["passages"] = await passages.count(novel_id)
    runs = await api.client.get(f"/threads/{novel_id}/runs?limit=100", headers=auth)
    state["runs"] = [(r["run_id"], r["status"]) for r in runs.json()]
    return state


# --- create, list, get, patch, delete -------------------------------------------------


async def test_create_get_and_list(api: Api) -> None:
    auth = await user(api, "lister")
    first = await create(api, auth, title="The Brass Key", pause_after=["chapter"])
    assert first["status"] == "paused"
    assert first["started"] is False
    assert first["title"] == "The Brass Key"
    assert first["premise"] == PREMISE
    assert (first["chapters"], first["genre"]) == (2, "fantasy")
    assert first["pause_after"] == ["chapter"]
    assert first["chapters_accepted"] == 0
    assert first["gate"] is None
    assert first["thread_status"] == "idle"

    second = await create(api, auth, chapters=3, max_revisions=0)
    third = await create(api, auth, chapters=1, genre=None)
    assert third["genre"] is None
    assert second["max_revisions"] == 0

    got = await get_json(api, auth, f"{API}/{first['id']}")
    assert got == first

    # The novel is a thread of the caller's, tagged as a novel.
    thread = await get_json(api, auth, f"/threads/{first['id']}")
    assert thread["metadata"]["kind"] == "novel"
    assert thread["metadata"]["graph_id"] == "novel"

    listed = await get_json(api, auth, API)
    assert [n["id"] for n in listed] == [third["id"], second["id"], first["id"]]
    page = await get_json(api, auth, f"{API}?limit=2")
    assert [n["id"] for n in page] == [third["id"], second["id"]]
    rest = await get_json(api, auth, f"{API}?limit=2&offset=2")
    assert [n["id"] for n in rest] == [first["id"]]
    assert "text" not in listed[0]


async def test_patch_before_and_after_writing(api: Api) -> None:
    auth = await user(api, "patcher")
    novel = await create(api, auth)
    url = f"{API}/{novel['id']}"

    response = await api.client.patch(
        url,
        json={
            "premise": "A cartographer maps a city that rearranges itself every night.",
            "chapters": 1,
            "genre": None,
            "pause_after": ["outline"],
            "max_revisions": 1,
            "title": "Night Streets",
        },
        headers=auth,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["premise"].startswith("A cartographer")
    assert (patched["chapters"], patched["genre"], patched["title"]) == (1, None, "Night Streets")
    assert (patched["pause_after"], patched["max_revisions"]) == (["outline"], 1)
    assert patched["created_at"] == novel["created_at"]

    # The patched request is what the first run writes: it pauses at the outline.
    run = await write(api, auth, novel["id"])
    assert run["status"] == "interrupted"
    assert run["kwargs"]["input"]["premise"].startswith("A cartographer")
    assert run["kwargs"]["input"]["chapters"] == 1

    refused = await api.client.patch(
        url, json={"premise": "Something else entirely."}, headers=auth
    )
    assert_error(refused, 409, "has started", "title")
    unchanged = await get_json(api, auth, url)
    assert unchanged["premise"] == patched["premise"]

    retitled = await api.client.patch(url, json={"title": "Night Streets, Revised"}, headers=auth)
    assert retitled.status_code == 200, retitled.text
    assert retitled.json()["title"] == "Night Streets, Revised"


async def test_delete_removes_everything(api: Api) -> None:
    auth = await user(api, "deleter")
    novel_id = await written(api, auth)
    passages = api.services.backends.context.passages
    world = api.services.backends.context.world
    assert await passages.count(novel_id) > 0
    assert (await world.world_as_of(novel_id, 2)).entities

    response = await api.client.delete(f"{API}/{novel_id}", headers=auth)
    assert response.status_code == 204, response.text

    assert_error(await api.client.get(f"{API}/{novel_id}", headers=auth), 404, novel_id)
    assert (await api.client.get(f"/threads/{novel_id}", headers=auth)).status_code == 404
    assert novel_id not in [n["id"] for n in await get_json(api, auth, API)]
    assert await passages.count(novel_id) == 0
    assert not (await world.world_as_of(novel_id, 2)).entities
    again = await api.client.delete(f"{API}/{novel_id}", headers=auth)
    assert_error(again, 404, novel_id)


# --- writing, chapters, versions ------------------------------------------------------


async def test_write_then_read_chapters_and_versions(api: Api) -> None:
    auth = await user(api, "writer")
    novel = await create(api, auth)
    novel_id = novel["id"]
    base = f"{API}/{novel_id}"
    assert_error(await api.client.get(f"{base}/chapters/1", headers=auth), 404, "not accepted")

    run = await write(api, auth, novel_id)
    assert run["status"] == "success"
    assert run["kwargs"]["input"]["premise"] == PREMISE

    detail = await get_json(api, auth, base)
    assert detail["status"] == "completed"
    assert detail["chapters_accepted"] == 2
    assert detail["started"] is True
    assert detail["gate"] is None
    assert detail["active_run_id"] is None
    assert detail["thread_status"] == "idle"
    assert detail["title"]  # named after the story bible by the finish node

    chapters = await get_json(api, auth, f"{base}/chapters")
    assert [c["number"] for c in chapters] == [1, 2]
    store = api.services.backends.store
    for listed in chapters:
        assert "text" not in listed
        assert listed["summary"]
        stored = await store.get_chapter(novel_id, listed["number"])
        assert listed["current_version_id"] == stored.current_version_id
        assert listed["word_count"] == stored.word_count > 0
        full = await get_json(api, auth, f"{base}/chapters/{listed['number']}")
        assert full["text"] == stored.text
        assert {k: full[k] for k in listed} == listed
        # What the review found in the standing text, each quoting it.
        assert isinstance(full["findings"], list)
        assert all(f["quote"] in full["text"] for f in full["findings"])

    versions = await get_json(api, auth, f"{base}/chapters/1/versions")
    stored_versions = await store.list_versions(novel_id, 1)
    assert [v["id"] for v in versions] == [v.id for v in stored_versions]
    assert [v["version"] for v in versions] == list(range(1, len(versions) + 1))
    assert {v["kind"] for v in versions} == {"draft"}
    assert all(v["text"] is None for v in versions)
    assert [v["id"] for v in versions if v["current"]] == [chapters[0]["current_version_id"]]
    with_text = await get_json(api, auth, f"{base}/chapters/1/versions?include_text=true")
    assert [v["text"] for v in with_text] == [v.text for v in stored_versions]
    for version in with_text:  # every draft was reviewed, and its findings kept
        assert isinstance(version["findings"], list)
        assert all(f["quote"] in version["text"] for f in version["findings"])
        assert all(f["severity"] in ("major", "minor") for f in version["findings"])

    # A finished book cannot be written again.
    again = await api.client.post(f"{base}/write", json={}, headers=auth)
    assert_error(again, 409, "already completed")


async def test_write_streams_events(api: Api) -> None:
    auth = await user(api, "streamer")
    novel = await create(api, auth, chapters=1)
    response = await api.client.post(
        f"{API}/{novel['id']}/write", json={"stream": True}, headers=auth
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["content-location"].startswith(f"/threads/{novel['id']}/runs/")
    events = [
        line.removeprefix("event: ")
        for line in response.text.splitlines()
        if line.startswith("event:")
    ]
    assert events[0] == "metadata"
    assert events[-1] == "end"
    assert "custom" in events and "values" in events
    detail = await get_json(api, auth, f"{API}/{novel['id']}")
    assert (detail["status"], detail["chapters_accepted"]) == ("completed", 1)


async def test_gates_answered_through_write_and_chapter_edit(api: Api) -> None:
    auth = await user(api, "gatekeeper")
    novel = await create(api, auth, pause_after=["chapter"])
    novel_id = novel["id"]
    base = f"{API}/{novel_id}"

    run = await write(api, auth, novel_id)
    assert run["status"] == "interrupted"
    detail = await get_json(api, auth, base)
    assert detail["status"] == "paused"
    assert detail["thread_status"] == "interrupted"
    assert detail["chapters_accepted"] == 1
    gate = detail["gate"]
    assert (gate["kind"], gate["chapter"]) == ("chapter", 1)
    assert (
        gate["payload"]["version_id"]
        == (await get_json(api, auth, f"{base}/chapters"))[0]["current_version_id"]
    )

    # Waiting at a gate: a decision is required, and it must be one the gate accepts.
    assert_error(await api.client.post(f"{base}/write", json={}, headers=auth), 409, "chapter 1")
    bad = await api.client.post(
        f"{base}/write", json={"decision": {"action": "edit"}}, headers=auth
    )
    body = assert_error(bad, 422, "decision.text", "Field required")
    assert body["field"] == "decision"
    unknown = await api.client.post(
        f"{base}/write", json={"decision": {"action": "skip"}}, headers=auth
    )
    assert_error(unknown, 422, "decision.action")
    assert (await get_json(api, auth, base))["gate"] == gate  # refused answers change nothing

    run = await write(api, auth, novel_id, {"decision": {"action": "approve"}})
    assert run["status"] == "interrupted"
    assert run["kwargs"]["command"] == {"resume": {"action": "approve"}}
    detail = await get_json(api, auth, base)
    assert (detail["gate"]["kind"], detail["gate"]["chapter"]) == ("chapter", 2)

    # Chapter 1 is not the one waiting: the edit is applied directly.
    direct = await api.client.put(
        f"{base}/chapters/1", json={"text": "The harbour slept under fog."}, headers=auth
    )
    assert direct.status_code == 200, direct.text
    assert direct.json()["text"] == "The harbour slept under fog."

    # Chapter 2 waits at its gate: the edit answers the gate through a run.
    text = "Ada Quill stood at the sealed door.\n\nThe brass key turned, and the sea breathed in."
    response = await api.client.put(
        f"{base}/chapters/2", json={"text": text, "title": "The Door"}, headers=auth
    )
    assert response.status_code == 202, response.text
    answered = response.json()
    location = f"/threads/{novel_id}/runs/{answered['run_id']}"
    assert response.headers["location"] == location
    run = await wait_run(api, auth, location)
    assert run["status"] == "success"
    assert run["kwargs"]["command"]["resume"] == {
        "action": "edit",
        "text": text,
        "title": "The Door",
    }

    detail = await get_json(api, auth, base)
    assert (detail["status"], detail["gate"]) == ("completed", None)
    chapter = await get_json(api, auth, f"{base}/chapters/2")
    assert (chapter["text"], chapter["title"]) == (text, "The Door")
    versions = await get_json(api, auth, f"{base}/chapters/2/versions")
    assert versions[-1]["kind"] == "edit"
    assert versions[-1]["id"] == chapter["current_version_id"]
    assert versions[-1]["current"] is True
    assert await api.services.backends.context.passages.count(novel_id, 2) == len(
        split_passages(text)
    )


async def test_outline_gate_decision(api: Api) -> None:
    auth = await user(api, "outliner")
    novel = await create(api, auth, chapters=1, pause_after=["outline"])
    base = f"{API}/{novel['id']}"
    assert (await write(api, auth, novel["id"]))["status"] == "interrupted"
    gate = (await get_json(api, auth, base))["gate"]
    assert gate["kind"] == "outline"
    assert gate["chapter"] is None
    assert len(gate["payload"]["outline"]) == 1

    bad = await api.client.post(
        f"{base}/write", json={"decision": {"action": "edit", "outline": []}}, headers=auth
    )
    assert_error(bad, 422, "decision.outline", "at least 1 item")
    run = await write(api, auth, novel["id"], {"decision": {"action": "approve"}})
    assert run["status"] == "success"
    assert (await get_json(api, auth, base))["status"] == "completed"


async def test_busy_novel_refuses_writes_and_edits(api: Api) -> None:
    auth = await user(api, "busy")
    novel_id = await written(api, auth)
    base = f"{API}/{novel_id}"
    # A run queued for later (through the LangGraph API) keeps the novel busy meanwhile.
    queued = await api.client.post(
        f"/threads/{novel_id}/runs",
        json={"assistant_id": "novel", "after_seconds": 3600},
        headers=auth,
    )
    assert queued.status_code == 200, queued.text
    run_id = queued.json()["run_id"]
    before = await everything(api, auth, novel_id)
    assert before["novel"]["active_run_id"] == run_id

    edit = await api.client.put(f"{base}/chapters/1", json={"text": "New words."}, headers=auth)
    assert_error(edit, 409, run_id)
    again = await api.client.post(f"{base}/write", json={}, headers=auth)
    assert_error(again, 409, "busy", run_id)
    assert await everything(api, auth, novel_id) == before

    cancel = await api.client.post(f"/threads/{novel_id}/runs/{run_id}/cancel", headers=auth)
    assert cancel.status_code == 204, cancel.text
    assert (await get_json(api, auth, base))["active_run_id"] is None


# --- author edits ---------------------------------------------------------------------


async def test_edit_accepted_chapter_reindexes_and_recomputes_world(api: Api) -> None:
    auth = await user(api, "editor")
    novel_id = await written(api, auth)
    base = f"{API}/{novel_id}"
    context = api.services.backends.context

    world_before = await get_json(api, auth, f"{base}/world?chapter=1")
    recorded_before = [f for f in world_before["facts"] if f["source_chapter"] == 1]
    related_before = [r for r in world_before["relationships"] if r["source_chapter"] == 1]
    assert recorded_before or related_before, "the written chapter 1 recorded no world facts"
    chapter_before = await get_json(api, auth, f"{base}/chapters/1")
    versions_before = await get_json(api, auth, f"{base}/chapters/1/versions")

    # A text that names nobody: the facts chapter 1 recorded about its characters go.
    text = "The fog rolled in over the quiet harbour.\n\nNo bell rang, and nobody came that night."
    response = await api.client.put(f"{base}/chapters/1", json={"text": text}, headers=auth)
    assert response.status_code == 200, response.text
    edited = response.json()
    expected_id = stable_id(novel_id, "chapter", 1, "edit", text)
    assert edited["text"] == text
    assert edited["current_version_id"] == expected_id
    assert edited["title"] == chapter_before["title"]
    assert edited["word_count"] == len(text.replace(",", "").replace(".", "").split())
    assert await get_json(api, auth, f"{base}/chapters/1") == edited
    # The author's text was read and checked like a draft: far too short for the target.
    assert [f["kind"] for f in edited["findings"] if f["severity"] == "major"] == ["length"]
    assert all(f["quote"] in text for f in edited["findings"])

    versions = await get_json(api, auth, f"{base}/chapters/1/versions")
    assert len(versions) == len(versions_before) + 1
    assert (versions[-1]["id"], versions[-1]["kind"]) == (expected_id, "edit")
    assert [v["id"] for v in versions if v["current"]] == [expected_id]

    hits = await context.passages.search(novel_id, "fog rolled quiet harbour", before_chapter=2)
    assert hits and hits[0].passage.chapter == 1
    assert "fog rolled in over the quiet harbour" in hits[0].passage.text
    assert await context.passages.count(novel_id, 1) == len(split_passages(text))

    world_after = await get_json(api, auth, f"{base}/world?chapter=1")
    assert [f for f in world_after["facts"] if f["source_chapter"] == 1] == []
    assert [r for r in world_after["relationships"] if r["source_chapter"] == 1] == []
    # The seed (chapter 0) is untouched by an edit of chapter 1.
    seed_facts = [f for f in world_before["facts"] if f["source_chapter"] == 0]
    assert [f for f in world_after["facts"] if f["source_chapter"] == 0] == seed_facts

    # The same request again is idempotent: no new version, the same standing text.
    retried = await api.client.put(f"{base}/chapters/1", json={"text": text}, headers=auth)
    assert retried.status_code == 200, retried.text
    assert retried.json()["current_version_id"] == expected_id
    assert len(await get_json(api, auth, f"{base}/chapters/1/versions")) == len(versions)

    # Naming the characters of a fact chapter 1 had recorded brings that fact back.
    names = {e["key"]: e["name"] for e in world_before["entities"]}
    if related_before:
        relation = related_before[0]
        people = [names[relation["subject"]], names[relation["object"]]]
    else:
        relation = recorded_before[0]
        people = [names[relation["subject"]]]
    named = f"{' and '.join(people)} met by the pier.\n\nThey talked until the tide turned."
    again = await api.client.put(
        f"{base}/chapters/1", json={"text": named, "title": "The Pier"}, headers=auth
    )
    assert again.status_code == 200, again.text
    assert again.json()["title"] == "The Pier"
    world_named = await get_json(api, auth, f"{base}/world?chapter=1")
    restored = world_named["relationships"] + world_named["facts"]
    assert relation in [f for f in restored if f["source_chapter"] == 1]


async def test_author_accepts_a_deliberate_change(api: Api) -> None:
    auth = await user(api, "resurrector")
    novel_id = await written(api, auth)
    base = f"{API}/{novel_id}"
    context = api.services.backends.context
    chapter_two = await context.store.get_chapter(novel_id, 2)
    claims = (await context.store.get_version(chapter_two.current_version_id)).claims
    assert claims and claims["present"], "chapter 2's review found nobody present"
    world = await get_json(api, auth, f"{base}/world?chapter=1")
    keys = {e["name"]: e["key"] for e in world["entities"]}
    name = claims["present"][0]["character"]
    key = keys[name]
    # The story so far killed this character in chapter 1 (recorded as the worldsmith
    # would), so chapter 2, where they are present, now contradicts the world.
    await context.world.apply(
        novel_id, 1, WorldChanges(facts=(FactSpec(key, "status", value="dead"),))
    )
    text = (await get_json(api, auth, f"{base}/chapters/2"))["text"]
    checked = await api.client.put(f"{base}/chapters/2", json={"text": text}, headers=auth)
    assert checked.status_code == 200, checked.text
    findings = checked.json()["findings"]
    life = [f for f in findings if f["kind"] == "life"]
    assert life and life[0]["severity"] == "major" and not life[0]["accepted"]
    assert life[0]["on_accept"] == [f"{key} status alive"]
    assert [f["number"] for f in findings] == list(range(1, len(findings) + 1))

    before = await everything(api, auth, novel_id)
    wrong = await api.client.post(
        f"{base}/chapters/2/findings/accept", json={"findings": [len(findings) + 1]}, headers=auth
    )
    assert_error(wrong, 422, f"finding {len(findings) + 1} does not exist")
    assert await everything(api, auth, novel_id) == before

    # The author says the return is deliberate: the world has them alive from chapter 2.
    accepted = await api.client.post(
        f"{base}/chapters/2/findings/accept", json={"findings": [life[0]["number"]]}, headers=auth
    )
    assert accepted.status_code == 200, accepted.text
    marked = accepted.json()["findings"]
    assert [f["accepted"] for f in marked] == [f is life[0] for f in findings]
    assert accepted.json()["text"] == text

    def status(world: dict[str, Any]) -> list[str]:
        return [
            f["value"] for f in world["facts"] if f["subject"] == key and f["attribute"] == "status"
        ]

    assert status(await get_json(api, auth, f"{base}/world?chapter=1")) == ["dead"]
    assert status(await get_json(api, auth, f"{base}/world?chapter=2")) == ["alive"]
    # The same claims checked against the world now find no contradiction of life.
    snapshot = await context.world.world_as_of(novel_id, 3)
    stored = ChapterClaims.model_validate(claims)
    assert not [f for f in check_claims(text, stored, snapshot, 3) if f.kind == "life"]


async def test_a_novel_in_another_language(api: Api) -> None:
    auth = await user(api, "zh-writer")
    # An English premise, a Chinese book: the language asked for wins over the script.
    novel_id = await written(api, auth, language="zh")
    base = f"{API}/{novel_id}"
    chapter = await get_json(api, auth, f"{base}/chapters/1")
    assert is_cjk(chapter["text"]) and chapter["word_count"] == text_length(chapter["text"])
    assert all(f["quote"] in chapter["text"] for f in chapter["findings"])
    world = await get_json(api, auth, f"{base}/world?chapter=0")
    people = [e["name"] for e in world["entities"] if e["kind"] == "character"]
    assert people and all(is_cjk(name) for name in people)


# --- world and export -----------------------------------------------------------------


async def test_world_as_of_chapters(api: Api) -> None:
    auth = await user(api, "worlder")
    novel_id = await written(api, auth)
    base = f"{API}/{novel_id}"
    world = api.services.backends.context.world

    seed = await get_json(api, auth, f"{base}/world?chapter=0")
    assert seed["chapter"] == 0
    assert seed["entities"]
    assert all(e["introduced_chapter"] == 0 for e in seed["entities"])
    kinds = {e["kind"] for e in seed["entities"]}
    assert {"character", "location"} <= kinds
    assert all(f["source_chapter"] == 0 for f in seed["facts"] + seed["relationships"])

    latest = await get_json(api, auth, f"{base}/world")
    assert latest["chapter"] == 2
    snapshot = await world.world_as_of(novel_id, 2)
    assert {e["key"] for e in latest["entities"]} == {e.key for e in snapshot.entities}
    for entity in latest["entities"]:
        assert entity["attributes"] == snapshot.attributes(entity["key"])
    assert {s["key"] for s in latest["open_setups"]} == {s.key for s in snapshot.open_setups()}
    assert len(latest["facts"]) + len(latest["relationships"]) == len(snapshot.facts)

    one = await get_json(api, auth, f"{base}/world?chapter=1")
    assert one["chapter"] == 1
    assert all(f["valid_from_chapter"] <= 1 for f in one["facts"] + one["relationships"])
    # Each chapter's world comes with what the review found in that chapter's text.
    assert seed["findings"] is None
    chapter_one = await get_json(api, auth, f"{base}/chapters/1")
    assert one["findings"] == chapter_one["findings"] and isinstance(one["findings"], list)

    assert_error(
        await api.client.get(f"{base}/world?chapter=3", headers=auth), 422, "between 0 and 2"
    )
    assert_error(await api.client.get(f"{base}/world?chapter=-1", headers=auth), 422, "chapter")
    assert_error(await api.client.get(f"{base}/world?chapter=two", headers=auth), 422, "chapter")


async def test_export_markdown_and_epub(api: Api, tmp_path: Path) -> None:
    auth = await user(api, "exporter")
    empty = await create(api, auth)
    refused = await api.client.get(f"{API}/{empty['id']}/export", headers=auth)
    assert_error(refused, 409, "no accepted chapter")

    novel_id = await written(api, auth, title="The Brass Key")
    base = f"{API}/{novel_id}"
    chapters = [await get_json(api, auth, f"{base}/chapters/{n}") for n in (1, 2)]

    markdown = await api.client.get(f"{base}/export?format=markdown", headers=auth)
    assert markdown.status_code == 200, markdown.text
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.headers["content-disposition"] == 'attachment; filename="the-brass-key.md"'
    assert markdown.text.startswith("# The Brass Key\n")
    for chapter in chapters:
        assert f"## Chapter {chapter['number']}: {chapter['title']}" in markdown.text
        first_paragraph = " ".join(chapter["text"].split("\n\n")[0].split())
        assert first_paragraph in markdown.text
    default = await api.client.get(f"{base}/export", headers=auth)
    assert default.text == markdown.text

    epub = await api.client.get(f"{base}/export?format=epub", headers=auth)
    assert epub.status_code == 200, epub.text
    assert epub.headers["content-type"] == "application/epub+zip"
    assert epub.headers["content-disposition"] == 'attachment; filename="the-brass-key.epub"'
    path = tmp_path / "book.epub"
    path.write_bytes(epub.content)
    assert validate_epub(path) == []

    unknown = await api.client.get(f"{base}/export?format=pdf", headers=auth)
    assert_error(unknown, 422, "format")


# --- bad input ------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def creator(api: Api) -> dict[str, str]:
    """A user whose every create is refused (so their list stays empty)."""
    return await user(api, "bad-create")


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"chapters": 2}, ("premise", "required")),
        ({"premise": "   ", "chapters": 2}, ("premise", "at least 1 character")),
        ({"premise": "x" * 4001, "chapters": 2}, ("premise", "4000")),
        ({"premise": PREMISE}, ("chapters", "required")),
        ({"premise": PREMISE, "chapters": 0}, ("chapters", "greater than or equal to 1")),
        ({"premise": PREMISE, "chapters": 101}, ("chapters", "less than or equal to 100")),
        ({"premise": PREMISE, "chapters": "2"}, ("chapters", "valid integer")),
        ({"premise": PREMISE, "chapters": True}, ("chapters", "valid integer")),
        ({"premise": PREMISE, "chapters": 2, "genre": "g" * 81}, ("genre", "80")),
        ({"premise": PREMISE, "chapters": 2, "title": ""}, ("title", "at least 1")),
        ({"premise": PREMISE, "chapters": 2, "pause_after": ["middle"]}, ("pause_after.0",)),
        ({"premise": PREMISE, "chapters": 2, "max_revisions": -1}, ("max_revisions",)),
        ({"premise": PREMISE, "chapters": 2, "language": "Chinese!"}, ("language",)),
        ({"premise": PREMISE, "chapters": 2, "colour": "red"}, ("colour", "not permitted")),
    ],
)
async def test_create_rejects_bad_input(
    api: Api, creator: dict[str, str], body: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    auth = creator
    response = await api.client.post(API, json=body, headers=auth)
    assert_error(response, 422, *fragments)
    assert await get_json(api, auth, API) == []


async def test_bad_requests_on_a_novel(api: Api) -> None:
    auth = await user(api, "bad-input")
    novel = await create(api, auth)
    base = f"{API}/{novel['id']}"
    cases: list[tuple[str, str, dict[str, Any] | None, int, tuple[str, ...]]] = [
        ("PATCH", base, {}, 422, ("at least one field",)),
        ("PATCH", base, {"title": None}, 422, ("title cannot be null",)),
        ("PATCH", base, {"chapters": 0}, 422, ("chapters",)),
        ("PATCH", base, {"owner": "me"}, 422, ("owner", "not permitted")),
        ("POST", f"{base}/write", {"multitask_strategy": "rollback"}, 422, ("multitask_strategy",)),
        ("POST", f"{base}/write", {"decision": {"action": "approve"}}, 409, ("not waiting",)),
        ("POST", f"{base}/write", {"stream": "maybe"}, 422, ("stream",)),
        ("GET", f"{base}/chapters/0", None, 422, ("number", "greater than or equal to 1")),
        ("GET", f"{base}/chapters/3", None, 422, ("between 1 and 2",)),
        ("GET", f"{base}/chapters/1", None, 404, ("chapter 1", "not accepted")),
        ("GET", f"{base}/chapters/x/versions", None, 422, ("number",)),
        ("PUT", f"{base}/chapters/1", {"text": ""}, 422, ("text", "at least 1")),
        ("PUT", f"{base}/chapters/1", {"title": "T"}, 422, ("text", "required")),
        ("PUT", f"{base}/chapters/1", {"text": "Words."}, 404, ("not accepted",)),
        ("PUT", f"{base}/chapters/9", {"text": "Words."}, 422, ("between 1 and 2",)),
        ("GET", f"{base}/world?chapter=5", None, 422, ("between 0 and 2",)),
        ("GET", f"{base}/export?format=docx", None, 422, ("format",)),
        ("GET", f"{API}?limit=0", None, 422, ("limit",)),
        ("GET", f"{API}?offset=-1", None, 422, ("offset",)),
        ("GET", f"{API}/not-a-uuid", None, 404, ("not-a-uuid",)),
        ("GET", f"{API}/{uuid.uuid4()}", None, 404, ("not found",)),
    ]
    before = await get_json(api, auth, base)
    for method, path, body, status, fragments in cases:
        response = await api.client.request(method, path, json=body, headers=auth)
        assert response.status_code == status, (method, path, response.text)
        detail = response.json()["detail"]
        for fragment in fragments:
            assert fragment in detail, (method, path, detail)
    assert await get_json(api, auth, base) == before

    # A LangGraph thread that never ran is not a novel.
    thread = await api.client.post("/threads", json={}, headers=auth)
    assert thread.status_code == 200, thread.text
    thread_id = thread.json()["thread_id"]
    assert_error(await api.client.get(f"{API}/{thread_id}", headers=auth), 404, thread_id)


# --- owner isolation ------------------------------------------------------------------

_TEXT = {"text": "Bob was here."}
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("PATCH", "", {"title": "Stolen"}),
    ("PATCH", "", {"premise": "Bob's premise."}),
    ("DELETE", "", None),
    ("POST", "/write", {}),
    ("POST", "/write", {"decision": {"action": "approve"}}),
    ("POST", "/write", {"stream": True, "multitask_strategy": "enqueue"}),
    ("GET", "/chapters", None),
    ("GET", "/chapters/1", None),
    ("PUT", "/chapters/1", _TEXT),
    ("PUT", "/chapters/2", {"text": "Bob's chapter.", "title": "Mine"}),
    ("GET", "/chapters/1/versions", None),
    ("GET", "/chapters/1/versions?include_text=true", None),
    ("GET", "/world", None),
    ("GET", "/world?chapter=1", None),
    ("GET", "/export", None),
    ("GET", "/export?format=epub", None),
]


@dataclass(frozen=True)
class Tenants:
    """Alice's written novel, and Bob."""

    alice: dict[str, str]
    bob: dict[str, str]
    novel_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tenants(api: Api) -> Tenants:
    """Alice writes a book once for the module's isolation tests."""
    alice = await user(api, "alice")
    bob = await user(api, "bob")
    return Tenants(alice, bob, await written(api, alice, title="Alice's Book"))


@pytest.mark.parametrize(
    ("method", "suffix", "body"), ENDPOINTS, ids=[f"{m} {s or '/'} {b}" for m, s, b in ENDPOINTS]
)
async def test_another_user_gets_404_and_changes_nothing(
    api: Api, tenants: Tenants, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    novel_id = tenants.novel_id
    before = await everything(api, tenants.alice, novel_id)
    response = await api.client.request(
        method, f"{API}/{novel_id}{suffix}", json=body, headers=tenants.bob
    )
    answer = assert_error(response, 404, f"novel {novel_id} not found")
    assert set(answer) == {"detail", "code", "kind", "id"}  # nothing of Alice's novel leaks
    assert await everything(api, tenants.alice, novel_id) == before
    assert novel_id not in [n["id"] for n in await get_json(api, tenants.bob, API)]


@pytest.mark.parametrize(
    ("method", "suffix", "body"), ENDPOINTS, ids=[f"{m} {s or '/'} {b}" for m, s, b in ENDPOINTS]
)
async def test_unauthenticated_requests_get_401(
    api: Api, tenants: Tenants, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    response = await api.client.request(method, f"{API}/{tenants.novel_id}{suffix}", json=body)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    forged = {"Authorization": "Bearer not-a-token"}
    response = await api.client.request(
        method, f"{API}/{tenants.novel_id}{suffix}", json=body, headers=forged
    )
    assert response.status_code == 401, response.text


async def test_unauthenticated_list_and_create_get_401(api: Api) -> None:
    assert (await api.client.get(API)).status_code == 401
    response = await api.client.post(API, json={"premise": PREMISE, "chapters": 1})
    assert response.status_code == 401, response.text


async def test_alice_sees_her_novel_unchanged(api: Api, tenants: Tenants) -> None:
    detail = await get_json(api, tenants.alice, f"{API}/{tenants.novel_id}")
    assert detail["title"] == "Alice's Book"
    assert detail["status"] == "completed"
    chapters = await get_json(api, tenants.alice, f"{API}/{tenants.novel_id}/chapters")
    assert len(chapters) == 2
    runs = await api.client.get(f"/threads/{tenants.novel_id}/runs", headers=tenants.alice)
    assert [r["status"] for r in runs.json()] == ["success"]
