"""SqlAppStore against real SQLite files and real PostgreSQL databases, migrated by Alembic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from errors import Conflict, InvalidInput, NotFound
from memory.app.port import NovelStatus, status_move
from memory.app.sql import SqlAppStore, count_words
from memory.app.tables import ChapterRow, ChapterVersionRow
from memory.db import make_engine
from server.runs.worker import record_novel_status
from server.settings import to_sqlalchemy_url

NOVEL = "00000000-0000-4000-8000-000000000001"
OTHER = "00000000-0000-4000-8000-000000000002"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each SQL dialect: a SQLite file, or a PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("fresh_postgres_url")
        return to_sqlalchemy_url(url)
    return f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the fresh database."""
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[SqlAppStore]:
    """A migrated store sharing ``engine``."""
    store = SqlAppStore(engine)
    await store.setup()
    yield store
    await store.close()


async def _count(engine: AsyncEngine, table: type[ChapterRow] | type[ChapterVersionRow]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


# --- novels ---------------------------------------------------------------------------


async def test_create_and_get_novel(store: SqlAppStore) -> None:
    created = await store.create_novel(NOVEL, "A lighthouse keeper hears the sea.", 5, "gothic")
    assert created.status == "running"
    assert (created.premise, created.chapters, created.genre) == (
        "A lighthouse keeper hears the sea.",
        5,
        "gothic",
    )
    assert created.title is None
    assert created.error is None
    assert created.created_at.tzinfo is not None
    assert created.created_at.utcoffset() == timedelta(0)

    fetched = await store.get_novel(NOVEL)
    assert fetched == created
    assert fetched.created_at.tzinfo == UTC


async def test_create_duplicate_is_conflict(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    with pytest.raises(Conflict):
        await store.create_novel(NOVEL, "another premise", 4, None)
    assert (await store.get_novel(NOVEL)).premise == "premise"


async def test_create_rejects_bad_input(store: SqlAppStore) -> None:
    with pytest.raises(InvalidInput):
        await store.create_novel(NOVEL, "premise", 0, None)
    with pytest.raises(InvalidInput):
        await store.create_novel(NOVEL, "   ", 3, None)
    with pytest.raises(InvalidInput):
        await store.create_novel("x" * 37, "premise", 3, None)
    assert await store.list_novels() == []


async def test_unknown_novel_is_not_found(store: SqlAppStore) -> None:
    with pytest.raises(NotFound):
        await store.get_novel(NOVEL)
    with pytest.raises(NotFound):
        await store.update_novel(NOVEL, status="paused")
    with pytest.raises(NotFound):
        await store.delete_novel(NOVEL)


async def test_list_novels_newest_first(store: SqlAppStore) -> None:
    ids = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(1, 4)]
    for novel_id in ids:
        await store.create_novel(novel_id, f"premise {novel_id}", 2, None)
        # Distinct creation instants make the order meaningful on coarse clocks too.
        await asyncio.sleep(0.002)
    listed = await store.list_novels()
    assert [novel.id for novel in listed] == list(reversed(ids))
    assert all(a.created_at >= b.created_at for a, b in pairwise(listed))


async def test_update_novel_status_title_and_error(store: SqlAppStore) -> None:
    created = await store.create_novel(NOVEL, "premise", 3, None)

    titled = await store.update_novel(NOVEL, title="The Drowned Lamp")
    assert titled.title == "The Drowned Lamp"
    assert titled.status == "running"
    assert titled.updated_at >= created.updated_at

    failed = await store.update_novel(NOVEL, status="failed", error="model unavailable")
    assert (failed.status, failed.error) == ("failed", "model unavailable")
    assert failed.title == "The Drowned Lamp"

    # Changing only the title keeps a failed session's error.
    retitled = await store.update_novel(NOVEL, title="The Lamp")
    assert retitled.error == "model unavailable"

    resumed = await store.update_novel(NOVEL, status="running")
    assert (resumed.status, resumed.error) == ("running", None)

    # An error is meaningless outside ``failed`` and is not stored.
    paused = await store.update_novel(NOVEL, status="paused", error="ignored")
    assert (paused.status, paused.error) == ("paused", None)
    assert await store.get_novel(NOVEL) == paused


async def test_update_novel_rejects_unknown_status(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    with pytest.raises(InvalidInput):
        await store.update_novel(NOVEL, status="archived")  # type: ignore[arg-type]
    assert (await store.get_novel(NOVEL)).status == "running"


# --- versions -------------------------------------------------------------------------


async def test_versions_count_up_per_chapter(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    first = await store.save_version("v1", NOVEL, 1, "draft", "Dawn", "The sea was calm.")
    second = await store.save_version("v2", NOVEL, 1, "edit", "Dawn", "The sea was very calm.")
    other_chapter = await store.save_version("v3", NOVEL, 2, "draft", "Noon", "Gulls cried.")
    third = await store.save_version("v4", NOVEL, 1, "draft", "Dawn", "The sea slept.")

    assert [first.version, second.version, third.version] == [1, 2, 3]
    assert other_chapter.version == 1
    assert second.kind == "edit"
    assert first.created_at.tzinfo == UTC

    listed = await store.list_versions(NOVEL, 1)
    assert [v.id for v in listed] == ["v1", "v2", "v4"]
    assert listed[1] == second
    assert await store.get_version("v3") == other_chapter
    assert await store.list_versions(NOVEL, 3) == []


async def test_save_version_is_idempotent(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    stored = await store.save_version("draft-1-a", NOVEL, 1, "draft", "Dawn", "First text.")
    # A crash-replayed node saves the same id with a regenerated text.
    replayed = await store.save_version("draft-1-a", NOVEL, 1, "draft", "Dawn!", "Other text.")
    assert replayed == stored
    assert replayed.text == "First text."
    assert len(await store.list_versions(NOVEL, 1)) == 1
    nxt = await store.save_version("draft-1-b", NOVEL, 1, "draft", "Dawn", "Second text.")
    assert nxt.version == 2


async def test_save_version_id_of_another_chapter_is_conflict(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    await store.save_version("v1", NOVEL, 1, "draft", "Dawn", "Text.")
    with pytest.raises(Conflict):
        await store.save_version("v1", NOVEL, 2, "draft", "Noon", "Text.")


async def test_save_version_errors(store: SqlAppStore) -> None:
    with pytest.raises(NotFound):
        await store.save_version("v1", NOVEL, 1, "draft", "Dawn", "Text.")
    await store.create_novel(NOVEL, "premise", 3, None)
    with pytest.raises(InvalidInput):
        await store.save_version("v1", NOVEL, 0, "draft", "Dawn", "Text.")
    with pytest.raises(InvalidInput):
        await store.save_version("v1", NOVEL, 1, "rewrite", "Dawn", "Text.")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await store.save_version("", NOVEL, 1, "draft", "Dawn", "Text.")
    with pytest.raises(NotFound):
        await store.get_version("v1")


async def test_concurrent_saves_get_distinct_versions(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    saved = await asyncio.gather(
        *(store.save_version(f"v{i}", NOVEL, 1, "draft", "Dawn", f"Text {i}.") for i in range(4))
    )
    assert sorted(v.version for v in saved) == [1, 2, 3, 4]
    assert [v.version for v in await store.list_versions(NOVEL, 1)] == [1, 2, 3, 4]


def test_count_words() -> None:
    assert count_words("") == 0
    assert count_words("  The sea — calm, don't you think?\n\nWell-known gulls.") == 8
    assert count_words("Él dijo: «¡Sí!»") == 3


# --- accepted chapters ----------------------------------------------------------------


async def test_accept_and_replace_chapter(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    draft = await store.save_version("v1", NOVEL, 1, "draft", "Dawn", "The sea was calm today.")
    accepted = await store.accept_chapter(NOVEL, 1, draft.id, "Dawn", "The sea is calm.")
    assert accepted.current_version_id == "v1"
    assert accepted.text == "The sea was calm today."
    assert accepted.word_count == 5
    assert (accepted.title, accepted.summary) == ("Dawn", "The sea is calm.")
    assert accepted.updated_at.tzinfo == UTC

    # Accepting the same version again changes nothing but the timestamp.
    again = await store.accept_chapter(NOVEL, 1, draft.id, "Dawn", "The sea is calm.")
    assert (again.current_version_id, again.text) == (accepted.current_version_id, accepted.text)
    assert await _count(store._engine, ChapterRow) == 1

    edit = await store.save_version("v2", NOVEL, 1, "edit", "Dawn Tide", "Storm.")
    replaced = await store.accept_chapter(NOVEL, 1, edit.id, "Dawn Tide", "A storm comes.")
    assert (replaced.current_version_id, replaced.text, replaced.word_count) == ("v2", "Storm.", 1)
    assert await store.get_chapter(NOVEL, 1) == replaced
    # The earlier version is kept for history.
    assert [v.id for v in await store.list_versions(NOVEL, 1)] == ["v1", "v2"]


async def test_list_chapters_in_order(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    for number in (3, 1, 2):
        version = await store.save_version(
            f"v{number}", NOVEL, number, "draft", f"T{number}", f"Text of chapter {number}."
        )
        await store.accept_chapter(NOVEL, number, version.id, f"T{number}", f"S{number}")
    chapters = await store.list_chapters(NOVEL)
    assert [c.number for c in chapters] == [1, 2, 3]
    assert [c.text for c in chapters] == [f"Text of chapter {n}." for n in (1, 2, 3)]
    assert await store.list_chapters(OTHER) == []


async def test_accept_chapter_errors(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "premise", 3, None)
    with pytest.raises(NotFound):
        await store.get_chapter(NOVEL, 1)
    with pytest.raises(NotFound):
        await store.accept_chapter(NOVEL, 1, "missing", "T", "S")
    with pytest.raises(NotFound):
        await store.accept_chapter(OTHER, 1, "missing", "T", "S")
    version = await store.save_version("v1", NOVEL, 1, "draft", "T", "Text.")
    with pytest.raises(Conflict):
        await store.accept_chapter(NOVEL, 2, version.id, "T", "S")
    await store.create_novel(OTHER, "premise", 3, None)
    with pytest.raises(Conflict):
        await store.accept_chapter(OTHER, 1, version.id, "T", "S")
    assert await store.list_chapters(NOVEL) == []


# --- deletion -------------------------------------------------------------------------


async def _populate(store: SqlAppStore, novel_id: str) -> None:
    await store.create_novel(novel_id, "premise", 2, None)
    for number in (1, 2):
        draft = await store.save_version(
            f"{novel_id}-{number}-1", novel_id, number, "draft", "T", "Draft."
        )
        await store.save_version(f"{novel_id}-{number}-2", novel_id, number, "edit", "T", "Edit.")
        await store.accept_chapter(novel_id, number, draft.id, "T", "S")


async def test_delete_novel_removes_chapters_and_versions(
    store: SqlAppStore, engine: AsyncEngine
) -> None:
    await _populate(store, NOVEL)
    await _populate(store, OTHER)
    assert (await _count(engine, ChapterRow), await _count(engine, ChapterVersionRow)) == (4, 8)

    await store.delete_novel(NOVEL)

    with pytest.raises(NotFound):
        await store.get_novel(NOVEL)
    assert await store.list_chapters(NOVEL) == []
    assert await store.list_versions(NOVEL, 1) == []
    with pytest.raises(NotFound):
        await store.get_version(f"{NOVEL}-1-1")
    assert (await _count(engine, ChapterRow), await _count(engine, ChapterVersionRow)) == (2, 4)
    assert len(await store.list_chapters(OTHER)) == 2


async def test_database_cascades_novel_deletion(store: SqlAppStore, engine: AsyncEngine) -> None:
    """The foreign keys themselves cascade (for deletions made outside the store)."""
    await _populate(store, NOVEL)
    await _populate(store, OTHER)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM novels WHERE id = :id"), {"id": NOVEL})
    assert (await _count(engine, ChapterRow), await _count(engine, ChapterVersionRow)) == (2, 4)
    assert [n.id for n in await store.list_novels()] == [OTHER]


# --- lifecycle ------------------------------------------------------------------------


async def test_setup_is_idempotent_and_data_persists(db_url: str) -> None:
    url = db_url
    first = SqlAppStore.from_url(url)
    assert first.owns_engine
    await first.setup()
    await first.setup()
    await first.create_novel(NOVEL, "premise", 2, "noir")
    await first.close()

    second = SqlAppStore.from_url(url)
    await second.setup()
    assert (await second.get_novel(NOVEL)).genre == "noir"
    await second.close()


async def test_close_leaves_a_shared_engine_open(engine: AsyncEngine) -> None:
    store = SqlAppStore(engine)
    assert not store.owns_engine
    await store.setup()
    await store.create_novel(NOVEL, "premise", 2, None)
    await store.close()
    # The engine still serves another user (e.g. the world-memory backend).
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM novels"))).scalar_one() == 1


@pytest.mark.parametrize(
    ("current", "wanted", "allowed"),
    [
        ("running", "paused", True),
        ("running", "completed", True),
        ("running", "failed", True),
        ("paused", "running", True),
        ("failed", "running", True),
        ("paused", "completed", False),
        ("failed", "paused", False),
        ("completed", "running", False),
        ("completed", "failed", False),
        ("completed", "completed", True),
    ],
)
def test_the_status_machine(current: NovelStatus, wanted: NovelStatus, allowed: bool) -> None:
    assert status_move(current, wanted) is allowed


async def test_the_status_writer_never_undoes_a_completed_book(store: SqlAppStore) -> None:
    await store.create_novel(NOVEL, "A premise long enough.", 2, None, status="paused")
    assert (await store.get_novel(NOVEL)).status == "paused"
    await record_novel_status(store, NOVEL, "running")
    await record_novel_status(store, NOVEL, "completed")
    # A late report of an earlier run (paused, failed) changes nothing any more.
    await record_novel_status(store, NOVEL, "paused")
    await record_novel_status(store, NOVEL, "failed", "late")
    record = await store.get_novel(NOVEL)
    assert record.status == "completed" and record.error is None
    await record_novel_status(store, "0" * 36, "running")  # unknown novels are no error
