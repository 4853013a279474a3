"""Workers outlive their stores: PostgreSQL or Redis goes away in the middle of a run.

The app runs in process on PostgreSQL (runs, checkpoints, app data, world memory) and
Redis, against a cluster of its own that the test stops (30 s, as an operator's outage
would last) or whose postmaster it SIGKILLs and restarts after 5 s, once the run's first
chapter is stored. While the database is away the API answers with the documented error
body and ``/ready`` says so; afterwards, with no process restarted, the worker takes the
run up again from its last checkpoint and finishes it, every chapter stored exactly once,
and new runs are executed too. A Redis (with its append-only file, as deployments run
it) restarted mid-run loses no event of the run's stream and no login.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps import PASSWORD, register, started_app
from tests.conftest import UseService
from tests.services import postgres, redis
from tests.services.base import Running

pytestmark = pytest.mark.slow

PREMISE = "A lighthouse keeper finds a door in the rock below the lamp."


@pytest.fixture(scope="module")
def outage_server(use_service: UseService) -> Running:
    """A PostgreSQL cluster of this module's own: the test stops and kills it."""
    return use_service("postgres-outages", postgres.start)


@pytest.fixture
def outage_database(outage_server: Running) -> Iterator[str]:
    url = postgres.create_database(outage_server.url)
    try:
        yield url
    finally:
        postgres.drop_database(outage_server.url, postgres.database_name(url))


async def _until(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(0.25)


def _stop_for(outages: postgres.Outages, seconds: float) -> Callable[[], None]:
    def outage() -> None:
        outages.stop()
        time.sleep(seconds)
        outages.start()

    return outage


def _kill_and_restart(outages: postgres.Outages, seconds: float) -> Callable[[], None]:
    def outage() -> None:
        outages.kill()
        time.sleep(seconds)
        outages.start()

    return outage


@pytest.mark.parametrize(
    ("kind", "seconds"), [("stopped", 30.0), ("killed", 5.0)], ids=["stopped-30s", "killed-5s"]
)
async def test_a_run_finishes_after_postgres_comes_back(
    tmp_path: Path,
    outage_server: Running,
    outage_database: str,
    redis_url: str,
    kind: str,
    seconds: float,
) -> None:
    outages = postgres.Outages(outage_server)
    outage = (_stop_for if kind == "stopped" else _kill_and_restart)(outages, seconds)
    async with started_app(
        tmp_path / "data",
        database_url=outage_database,
        redis_url=redis_url,
        words_per_chapter=100,
        # Slow enough that the outage lands inside the run, after its first chapter.
        offline_tokens_per_second=150.0,
        worker_concurrency=1,
        lease_s=3.0,
        heartbeat_s=0.5,
        # One attempt: a run an outage stops is handed back, not reclaimed as after a crash.
        run_max_attempts=1,
    ) as started:
        http = started.http
        headers = await register(http)
        thread = (await http.post("/threads", json={}, headers=headers)).json()["thread_id"]
        created = await http.post(
            f"/threads/{thread}/runs",
            json={"assistant_id": "novel", "input": {"premise": PREMISE, "chapters": 3}},
            headers=headers,
        )
        assert created.status_code == 200, created.text
        run = created.json()["run_id"]
        store = started.services.backends.store

        async def first_chapter() -> bool:
            return len(await store.list_chapters(thread)) >= 1

        await _until(first_chapter, 240, "chapter 1 stored")
        down = asyncio.create_task(asyncio.to_thread(outage))
        await asyncio.sleep(1.0 if kind == "stopped" else 0.5)
        if kind == "stopped":
            # While it is away: the documented error body, never a bare 500.
            during = await http.get(f"/threads/{thread}/runs/{run}", headers=headers)
            assert during.status_code == 503, during.text
            assert during.json()["code"] == "storage_error", during.text
            assert "postgres" not in during.text.lower() or "5432" not in during.text
            await _until(
                lambda: _not_ready(http), 15, "/ready reports the database and the workers"
            )
        await down

        async def finished() -> dict[str, Any] | None:
            try:
                answer = await http.get(f"/threads/{thread}/runs/{run}", headers=headers)
            except httpx.HTTPError:
                return None
            body: dict[str, Any] = answer.json()
            return body if answer.status_code == 200 and body["status"] != "running" else None

        async def settled() -> dict[str, Any] | None:
            body = await finished()
            return body if body is not None and body["status"] != "pending" else None

        ended = await _until(settled, 300, "the run ends after the outage")
        assert ended["status"] == "success", ended
        chapters = await store.list_chapters(thread)
        assert [c.number for c in chapters] == [1, 2, 3]
        # A new run after the outage is executed too (the worker's loop survived).
        again = await http.post(
            "/threads",
            json={},
            headers=headers,
        )
        later = await http.post(
            f"/threads/{again.json()['thread_id']}/runs/wait",
            json={"assistant_id": "novel", "input": {"premise": PREMISE, "chapters": 1}},
            headers=headers,
        )
        assert later.status_code == 200, later.text
        assert (await http.get("/ready")).status_code == 200


async def _not_ready(http: httpx.AsyncClient) -> bool:
    answer = await http.get("/ready")
    if answer.status_code != 503:
        return False
    checks = answer.json()["checks"]
    return not checks["database"]["ok"]


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[redis.PersistentServer]:
    """A Redis of this test's own with an append-only file, as deployments run it."""
    server = redis.PersistentServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def test_redis_restarts_in_the_middle_of_a_run(
    tmp_path: Path, fresh_postgres_url: str, restartable_redis: redis.PersistentServer
) -> None:
    """The run, its stream and the logins all outlive a Redis restart."""
    async with started_app(
        tmp_path / "data",
        database_url=fresh_postgres_url,
        redis_url=restartable_redis.url,
        words_per_chapter=100,
        offline_tokens_per_second=150.0,
        worker_concurrency=1,
        lease_s=3.0,
        heartbeat_s=0.5,
    ) as started:
        http = started.http
        email = "restart@example.com"
        registered = await http.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        login = (
            await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        ).json()
        headers = {"Authorization": f"Bearer {login['access_token']}"}
        thread = (await http.post("/threads", json={}, headers=headers)).json()["thread_id"]
        created = await http.post(
            f"/threads/{thread}/runs",
            json={"assistant_id": "novel", "input": {"premise": PREMISE, "chapters": 3}},
            headers=headers,
        )
        run = created.json()["run_id"]
        # A client follows the run from its start, through the restart, to its end.
        joined = asyncio.create_task(
            http.get(f"/threads/{thread}/runs/{run}/stream", headers=headers)
        )
        store = started.services.backends.store

        async def first_chapter() -> bool:
            return len(await store.list_chapters(thread)) >= 1

        await _until(first_chapter, 240, "chapter 1 stored")
        await asyncio.to_thread(restartable_redis.restart, 2.0)
        followed = await asyncio.wait_for(joined, 300)
        assert followed.status_code == 200
        seen = _frames(followed.text)
        assert seen[-1][0] == "end", seen[-3:]
        assert [e for e, _ in seen].count("error") == 0, followed.text[-500:]

        ended = (await http.get(f"/threads/{thread}/runs/{run}", headers=headers)).json()
        assert ended["status"] == "success", ended
        assert [c.number for c in await store.list_chapters(thread)] == [1, 2, 3]
        # Nothing was missed: a replay of the whole stream has the same events, in order.
        replay = await http.get(f"/threads/{thread}/runs/{run}/stream", headers=headers)
        assert _frames(replay.text) == seen
        # The login from before the restart still refreshes.
        refreshed = await http.post(
            "/api/v1/auth/refresh", json={"refresh_token": login["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text


def _frames(body: str) -> list[tuple[str, str]]:
    """(event, id) of each SSE frame, heartbeats left out."""
    frames = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
        )
        if "event" in fields:
            frames.append((fields["event"], fields.get("id", "")))
    return frames
