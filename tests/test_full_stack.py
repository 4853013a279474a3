"""The same pipeline on the full stack: Postgres (app data and checkpoints) and Neo4j (world).

Qdrant runs in local mode: no Qdrant server is available on these machines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from neo4j import AsyncGraphDatabase

from nodes.session import validate_request
from server.backends import Backends, open_backends
from server.sessions import Sessions
from server.settings import Settings, load_settings
from tests.services.base import Running

ROOT = Path(__file__).resolve().parent.parent
PREMISE = "A lighthouse keeper named Ada Quill finds a brass key that opens a door under the sea."

pytestmark = pytest.mark.slow


def _full_stack_env(data_dir: Path, database_url: str, neo4j: Running) -> dict[str, str]:
    return {
        "SCRIBE_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "SCRIBE_WORLD_BACKEND": "neo4j",
        "NEO4J_URL": neo4j.url,
        "NEO4J_USER": str(neo4j.extra.get("user") or "neo4j"),
        "NEO4J_PASSWORD": str(neo4j.extra.get("password") or ""),
        "SCRIBE_WORDS_PER_CHAPTER": "300",
    }


@pytest.fixture
def full_settings(
    tmp_path: Path, fresh_postgres_url: str, neo4j_server: Running, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in _full_stack_env(tmp_path / "data", fresh_postgres_url, neo4j_server).items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.fixture
async def full_backends(full_settings: Settings) -> AsyncIterator[Backends]:
    async with open_backends(full_settings) as opened:
        yield opened


async def test_three_chapter_book_on_postgres_and_neo4j(
    full_backends: Backends, full_settings: Settings, neo4j_server: Running
) -> None:
    result = await Sessions(full_backends).start(validate_request(PREMISE, 3, "fantasy"))
    sid = result.session_id
    assert result.status == "completed"
    try:
        chapters = await full_backends.store.list_chapters(sid)
        assert [c.number for c in chapters] == [1, 2, 3]

        # checkpoints went to Postgres through LangGraph's saver
        dsn = full_settings.postgres_dsn
        assert dsn is not None
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (sid,)
            ).fetchone()
        assert row is not None and row[0] > 10
        assert not full_settings.checkpoint_path.exists()

        # the world is in Neo4j, with labels an author recognises in Neo4j Browser
        world = await full_backends.context.world.world_as_of(sid, 3)
        characters = {e.name for e in world.entities if e.kind == "character"}
        assert characters
        user = str(neo4j_server.extra.get("user") or "neo4j")
        password = str(neo4j_server.extra.get("password") or "")
        async with AsyncGraphDatabase.driver(neo4j_server.url, auth=(user, password)) as driver:
            records, _, _ = await driver.execute_query(
                "MATCH (c:Character {novel_id: $novel}) RETURN c.name AS name", novel=sid
            )
            assert {r["name"] for r in records} == characters
            records, _, _ = await driver.execute_query(
                "MATCH (:Character {novel_id: $novel})-[r:LOCATED_IN]->(:Location) "
                "RETURN count(r) AS n",
                novel=sid,
            )
            assert records[0]["n"] >= len(characters)
    finally:
        await full_backends.context.world.drop_novel(sid)


def test_killed_mid_chapter_then_resume_on_the_full_stack(
    tmp_path: Path, fresh_postgres_url: str, neo4j_server: Running
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCRIBE_", "OPENAI_"))}
    env.update(_full_stack_env(tmp_path / "data", fresh_postgres_url, neo4j_server))
    env["SCRIBE_OFFLINE_TOKENS_PER_SECOND"] = "400"
    cmd = [sys.executable, "-m", "server.cli"]

    def accepted() -> list[int]:
        try:
            with psycopg.connect(fresh_postgres_url, connect_timeout=5) as conn:
                return [r[0] for r in conn.execute("SELECT number FROM chapters ORDER BY number")]
        except psycopg.errors.UndefinedTable:
            return []

    proc = subprocess.Popen(
        [*cmd, "write", "--premise", PREMISE, "--chapters", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    session_id = proc.stdout.readline().strip() if proc.stdout else ""
    deadline = time.monotonic() + 180
    while accepted() != [1]:
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "chapter 1 was never accepted"
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert accepted() == [1], "killed too late: not mid-chapter 2"
    with psycopg.connect(fresh_postgres_url) as conn:
        before = conn.execute("SELECT current_version_id FROM chapters WHERE number = 1").fetchone()

    done = subprocess.run(
        [*cmd, "resume", session_id], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    with psycopg.connect(fresh_postgres_url) as conn:
        rows = conn.execute(
            "SELECT number, current_version_id FROM chapters ORDER BY number"
        ).fetchall()
        status = conn.execute("SELECT status FROM novels WHERE id = %s", (session_id,)).fetchone()
    assert [r[0] for r in rows] == [1, 2, 3]
    assert before is not None and rows[0][1] == before[0]
    assert status is not None and status[0] == "completed"
