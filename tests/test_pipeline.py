"""The whole pipeline on the embedded default with the offline model."""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from errors import InvalidInput, ModelUnavailable
from memory.retrieval.chunking import split_passages
from memory.world.port import FactSpec, WorldChanges
from nodes.llm.config import RetryPolicy
from nodes.llm.gateway import ModelGateway
from nodes.llm.offline import OfflineChatModel
from nodes.llm.tasks import parse_request
from nodes.schemas import AGENTS, CLAIM_PARTS
from nodes.session import validate_request
from server.backends import Backends, open_backends
from server.sessions import Sessions, thread_config
from server.settings import load_settings

PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."

pytestmark = pytest.mark.slow


async def test_three_chapter_book(backends: Backends) -> None:
    sessions = Sessions(backends)
    events: list[dict[str, Any]] = []
    result = await sessions.start(validate_request(PREMISE, 3, "fantasy"), events.append)
    sid = result.session_id
    assert result.status == "completed"
    assert result.gate is None

    # chapters: stored once each, in order, with text, title and summary
    chapters = await backends.store.list_chapters(sid)
    assert [c.number for c in chapters] == [1, 2, 3]
    for chapter in chapters:
        assert chapter.word_count > 100
        assert chapter.title and chapter.summary
    record = await backends.store.get_novel(sid)
    assert record.status == "completed"
    assert record.title

    # world: seeded entities and facts recorded by chapters, valid from those chapters
    world = backends.context.world
    seed = await world.world_as_of(sid, 0)
    final = await world.world_as_of(sid, 3)
    kinds = {e.kind for e in seed.entities}
    assert {"character", "location"} <= kinds
    assert len(final.entities) >= len(seed.entities)
    chapter_facts = [f for f in final.facts if f.source_chapter >= 1]
    assert chapter_facts, "the worldsmith recorded nothing the chapters changed"
    assert all(f.valid_from_chapter == f.source_chapter for f in chapter_facts)
    for character in (e for e in final.entities if e.kind == "character"):
        assert "status" in final.attributes(character.key)

    # retrieval: every chapter indexed, and searching before chapter 3 sees only 1 and 2
    for chapter in chapters:
        expected = len(split_passages(chapter.text))
        assert await backends.context.passages.count(sid, chapter.number) == expected
    hits = await backends.context.passages.search(sid, chapters[0].text[:200], before_chapter=3)
    assert hits
    assert {h.passage.chapter for h in hits} <= {1, 2}
    assert hits[0].passage.chapter == 1

    # checkpoints: a history, a finished state without chapter texts in it
    config = thread_config(sid)
    history = [s async for s in backends.graph.aget_state_history(config)]
    assert len(history) > 10
    final_state = history[0].values
    assert final_state["done"] is True
    assert final_state["accepted"] == 3
    blob = pickle.dumps(final_state)
    assert all(c.text[:300] not in str(final_state) for c in chapters)
    assert len(blob) < 20_000

    # progress events name agents and chapters
    agents = {e["agent"] for e in events}
    assert agents == {"director", "worldsmith", "writer", "reviewer"}
    assert any(e["step"] == "recorded" and e["chapter"] == 3 for e in events)


async def test_revision_loop_is_bounded(backends: Backends) -> None:
    """With an unreachable bar every chapter is revised exactly max_revisions times."""
    strict = replace(
        backends,
        context=replace(
            backends.context, options=replace(backends.context.options, accept_score=10)
        ),
    )
    sessions = Sessions(strict)
    events: list[dict[str, Any]] = []
    result = await sessions.start(validate_request(PREMISE, 2), events.append)
    assert result.status == "completed"
    for number in (1, 2):
        versions = await backends.store.list_versions(result.session_id, number)
        assert [v.kind for v in versions] == ["draft"] * 3
        assert len({v.text for v in versions}) == 3, "revisions must change the draft"
        chapter = await backends.store.get_chapter(result.session_id, number)
        assert chapter.current_version_id == versions[-1].id
    decisions = [e["step"] for e in events if e["agent"] == "reviewer" and e["step"] != "reviewing"]
    assert decisions == ["revise", "revise", "accept_with_issues"] * 2


async def test_pause_edit_revise_resume(backends: Backends) -> None:
    sessions = Sessions(backends)
    request = validate_request(PREMISE, 2, "fantasy", ["outline", "chapter"])
    result = await sessions.start(request)
    sid = result.session_id
    assert result.status == "paused"
    assert result.gate is not None and result.gate.kind == "outline"
    original = result.gate.payload["outline"]
    assert len(original) == 2
    assert (await backends.store.get_novel(sid)).status == "paused"

    # revise the outline: the director plans again with the notes
    result = await sessions.resume(sid, {"action": "revise", "notes": "Give the sea a voice."})
    assert result.gate is not None and result.gate.kind == "outline"
    assert result.gate.payload["outline"] != original

    # edit the outline: the author's titles stand
    edited = [
        {"number": 1, "title": "The Key", "summary": "Ada finds the key in the lamp room."},
        {"number": 2, "title": "The Door", "summary": "Ada opens the door under the sea."},
    ]
    result = await sessions.resume(sid, {"action": "edit", "outline": edited})
    assert result.gate is not None and result.gate.kind == "chapter"
    assert result.gate.payload["chapter"] == 1
    snapshot = await backends.graph.aget_state(thread_config(sid))
    assert [c["title"] for c in snapshot.values["outline"]] == ["The Key", "The Door"]

    # a bad decision changes nothing
    with pytest.raises(InvalidInput, match="invalid resume value"):
        await sessions.resume(sid, {"action": "edit"})
    still = await sessions.gate(sid)
    assert still is not None and still.payload["chapter"] == 1

    # revise chapter 1 with notes: a new draft, and the gate comes back
    before = await backends.store.get_chapter(sid, 1)
    result = await sessions.resume(sid, {"action": "revise", "notes": "More salt spray."})
    assert result.gate is not None and result.gate.payload["chapter"] == 1
    after = await backends.store.get_chapter(sid, 1)
    assert after.current_version_id != before.current_version_id
    assert after.text != before.text

    # edit chapter 1: the author's text replaces it; index and facts are redone
    text = (
        "Ada Quill climbed the lighthouse stairs with the marmalade lantern.\n\n"
        "At the top she found the tide clock stopped at midnight, and she wound it."
    )
    result = await sessions.resume(sid, {"action": "edit", "text": text, "title": "Tide Clock"})
    assert result.gate is not None and result.gate.payload["chapter"] == 2
    chapter1 = await backends.store.get_chapter(sid, 1)
    assert chapter1.text == text
    assert chapter1.title == "Tide Clock"
    versions = await backends.store.list_versions(sid, 1)
    assert versions[-1].kind == "edit" and versions[-1].id == chapter1.current_version_id
    # The author's text was read and checked, and its findings kept: far too short.
    assert [f["kind"] for f in chapter1.findings or [] if f["severity"] == "major"] == ["length"]
    passages = backends.context.passages
    assert await passages.count(sid, 1) == len(split_passages(text))
    hits = await passages.search(sid, "marmalade lantern", before_chapter=2, limit=1)
    assert "marmalade" in hits[0].passage.text

    result = await sessions.resume(sid, {"action": "approve"})
    assert result.status == "completed"
    assert [c.number for c in await backends.store.list_chapters(sid)] == [1, 2]


async def test_checkpoints_do_not_grow_with_the_book(backends: Backends) -> None:
    """State at the end of chapter 3 and of chapter 8 is about the same size."""
    sessions = Sessions(backends)
    result = await sessions.start(validate_request(PREMISE, 8))
    config = thread_config(result.session_id)
    sizes: dict[int, int] = {}
    async for snapshot in backends.graph.aget_state_history(config):
        if snapshot.next == ("chapter_gate",):  # right after a chapter's facts are recorded
            sizes[snapshot.values["chapter"]] = len(pickle.dumps(snapshot.values))
    assert sorted(sizes) == list(range(1, 9))
    assert sizes[8] < sizes[3] * 1.25, sizes


class _UnreachableWriter(OfflineChatModel):
    """The writer's endpoint drops every connection (as a dead vLLM server would)."""

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
        raise openai.APIConnectionError(request=request)
        yield  # pragma: no cover - makes this an async generator


class _ClaimlessReviewer(OfflineChatModel):
    """A reviewer model that answers every request for claims (of the tasks in
    ``unreadable``) with a loop of prose."""

    unreadable: tuple[str, ...] = ("chapter_claims",)

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        parsed = parse_request(messages)
        if parsed is not None and parsed.task in self.unreadable:
            for _ in range(3):
                yield ChatGenerationChunk(message=AIMessageChunk(content="The claims are many. "))
            return
        async for chunk in super()._astream(messages, *args, **kwargs):
            yield chunk


async def _no_wait(_seconds: float) -> None:
    return None


async def test_a_failed_model_call_leaves_a_resumable_session(backends: Backends) -> None:
    healthy = backends.context.models
    broken_models = {a: healthy.model_for(a) for a in AGENTS} | {"writer": _UnreachableWriter()}
    broken = replace(
        backends,
        context=replace(
            backends.context,
            models=ModelGateway(broken_models, retry=RetryPolicy(attempts=2), sleep=_no_wait),
        ),
    )
    with pytest.raises(ModelUnavailable) as failure:
        await Sessions(broken).start(validate_request(PREMISE, 2))
    assert failure.value.agent == "writer"
    [record] = await backends.store.list_novels()
    assert record.status == "failed"
    assert "writer" in (record.error or "")
    assert await backends.store.list_chapters(record.id) == []

    # the same session resumes from its last checkpoint once the model is back
    result = await Sessions(backends).resume(record.id, None)
    assert result.status == "completed"
    assert [c.number for c in await backends.store.list_chapters(record.id)] == [1, 2]
    assert (await backends.store.get_novel(record.id)).error is None


async def test_a_book_goes_on_when_the_model_cannot_read_claims(backends: Backends) -> None:
    healthy = backends.context.models
    models = {a: healthy.model_for(a) for a in AGENTS} | {"reviewer": _ClaimlessReviewer()}
    claimless = replace(
        backends,
        context=replace(backends.context, models=ModelGateway(models, sleep=_no_wait)),
    )
    events: list[dict[str, Any]] = []
    result = await Sessions(claimless).start(validate_request(PREMISE, 2), events.append)
    assert result.status == "completed"
    unread = [e for e in events if e["step"] == "claims_unread"]
    reviews = [e for e in events if e["step"] == "reviewing"]
    # Every draft was checked by the text rules alone, and the author told so.
    assert [e["chapter"] for e in unread] == [e["chapter"] for e in reviews]
    assert {e["chapter"] for e in unread} == {1, 2} and all(e["error"] for e in unread)
    world = backends.context.world
    snapshot = await world.world_as_of(result.session_id, 3)
    assert {f.source_chapter for f in snapshot.facts} == {0}, "nothing recorded from prose"
    for number in (1, 2):
        chapter = await backends.store.get_chapter(result.session_id, number)
        assert chapter.summary and chapter.findings is not None


async def test_accept_a_deliberate_change_at_the_chapter_gate(backends: Backends) -> None:
    sessions = Sessions(backends)
    result = await sessions.start(validate_request(PREMISE, 2, "fantasy", ["chapter"]))
    sid = result.session_id
    assert result.gate is not None and result.gate.payload["chapter"] == 1
    # The story kills everyone in chapter 1 (as the worldsmith would record it), so
    # whoever chapter 2 brings on stage contradicts the world.
    world = backends.context.world
    cast = [e.key for e in (await world.world_as_of(sid, 1)).entities if e.kind == "character"]
    dead = tuple(FactSpec(key, "status", value="dead") for key in cast)
    await world.apply(sid, 1, WorldChanges(facts=dead))
    result = await sessions.resume(sid, {"action": "approve"})
    assert result.gate is not None and result.gate.payload["chapter"] == 2
    findings = result.gate.payload["findings"]
    life = [f for f in findings if f["kind"] == "life"]
    assert life, findings
    returned = life[0]["change"][0]["subject"]

    # A number that is not one of the findings changes nothing.
    with pytest.raises(InvalidInput, match=f"finding {len(findings) + 1} does not exist"):
        await sessions.resume(sid, {"action": "approve", "accept": [len(findings) + 1]})
    still = await sessions.gate(sid)
    assert still is not None and still.payload["chapter"] == 2

    result = await sessions.resume(sid, {"action": "approve", "accept": [life[0]["number"]]})
    assert result.status == "completed"
    chapter = await backends.store.get_chapter(sid, 2)
    assert [bool(f.get("accepted")) for f in chapter.findings or []] == [
        f is life[0] for f in findings
    ]
    status = {
        n: (await world.world_as_of(sid, n)).attributes(returned).get("status") for n in (1, 2)
    }
    assert status == {1: "dead", 2: "alive"}


async def test_claims_read_in_parts_add_up_to_the_one_call_reading(tmp_path: Path) -> None:
    """A reviewer asked for its answers in parts (``SCRIBE_SPLIT_ANSWERS``, for small
    models) reads a draft's claims in three calls; they add up to the one-call reading,
    so the same findings are reported and the same facts recorded."""
    read: dict[bool, dict[str, Any]] = {}
    for split in (False, True):
        settings = load_settings(
            data_dir=tmp_path / f"split-{split}", words_per_chapter=300, split_answers=split
        )
        async with open_backends(settings) as backends:
            result = await Sessions(backends).start(validate_request(PREMISE, 2))
            assert result.status == "completed"
            sid = result.session_id
            tasks = [
                call.task
                for run in await backends.tracing.store.thread_runs(sid)
                for call in await backends.tracing.store.calls(run.run_id)
                if call.agent == "reviewer"
            ]
            versions = [v for n in (1, 2) for v in await backends.store.list_versions(sid, n)]
            world = await backends.context.world.world_as_of(sid, 3)
            read[split] = {
                "claims": [v.claims for v in versions],
                "findings": [v.findings for v in versions],
                "facts": sorted(
                    (f.subject, f.predicate, f.value or "", f.object or "", f.source_chapter)
                    for f in world.facts
                ),
            }
        parts = [t for t in tasks if t.startswith("chapter_claims_")]
        if split:
            assert "chapter_claims" not in tasks
            assert parts == list(CLAIM_PARTS) * (len(parts) // 3) and parts, tasks
        else:
            assert not parts and "chapter_claims" in tasks
    assert read[True]["claims"] and all(read[True]["claims"])
    assert read[True] == read[False]


async def test_a_part_of_the_claims_unread_keeps_the_other_parts(backends: Backends) -> None:
    """Read in parts, a part the model cannot answer is reported and left out; what the
    other parts read is still checked and recorded."""
    healthy = backends.context.models
    reviewer = _ClaimlessReviewer(unreadable=("chapter_claims_details",))
    models = {a: healthy.model_for(a) for a in AGENTS} | {"reviewer": reviewer}
    gateway = ModelGateway(models, sleep=_no_wait, split_answers=["reviewer"])
    partial = replace(backends, context=replace(backends.context, models=gateway))
    events: list[dict[str, Any]] = []
    result = await Sessions(partial).start(validate_request(PREMISE, 2), events.append)
    assert result.status == "completed"
    unread = [e for e in events if e["step"] == "claims_unread"]
    assert unread and all("chapter_claims_details" in e["error"] for e in unread), unread
    snapshot = await backends.context.world.world_as_of(result.session_id, 3)
    assert {f.source_chapter for f in snapshot.facts} > {0}, "the readable parts are recorded"
    for version in await backends.store.list_versions(result.session_id, 1):
        assert version.claims and version.claims["present"] and not version.claims["items"]
