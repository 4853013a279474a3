"""The Redis connection service against a real ``redis-server`` (the ``redis_url`` fixture).

Unreachable servers are real too: a free loopback port with nothing listening, and a
socket that accepts connections but never answers.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis.exceptions
from redis.typing import EncodableT, FieldT

from errors import ConfigurationError, InvalidInput, StorageError
from memory.redis import DEFAULT_PREFIX, HealthStatus, RedisService, endpoint_of, redact_url
from tests.services.base import free_port

PASSWORD = "Hunter2-s3cr3t-pw"


def _with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` (the password percent-encoded) in front of the host."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _leaks(text: str, password: str = PASSWORD) -> bool:
    return password in text or password.lower() in text.lower()


async def _connections_named(client_url: str, name: str) -> int:
    """How many server connections carry ``name`` (CLIENT LIST from a separate client)."""
    async with RedisService.from_url(client_url, client_name="observer") as observer:
        clients = await observer.client.client_list()
        return sum(1 for c in clients if c.get("name") == name)


async def _wait_for_connections(url: str, name: str, expected: int) -> int:
    """Poll CLIENT LIST until ``expected`` connections are named ``name`` (or 5 s pass)."""
    deadline = time.monotonic() + 5.0
    count = await _connections_named(url, name)
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        count = await _connections_named(url, name)
    return count


@asynccontextmanager
async def _silent_server() -> AsyncIterator[str]:
    """A loopback TCP server that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
async def service(redis_url: str, redis_key_prefix: str) -> AsyncIterator[RedisService]:
    """A started service on the test database, with a key prefix of this test's own."""
    async with RedisService.from_url(redis_url, prefix=redis_key_prefix) as started:
        yield started


@pytest.fixture
def unreachable_url() -> str:
    """A URL with a password, for a loopback port where nothing listens."""
    return f"redis://scribe:{PASSWORD}@127.0.0.1:{free_port()}/0"


# --- lifecycle ------------------------------------------------------------------------


async def test_start_health_close_round_trip(redis_url: str) -> None:
    name = f"scribe-test-{uuid.uuid4().hex}"
    svc = RedisService.from_url(redis_url, client_name=name)
    assert not svc.started
    with pytest.raises(StorageError, match="not started"):
        _ = svc.client

    await svc.start()
    assert svc.started
    await svc.client.set(svc.key("greeting"), "hello")
    assert await svc.client.get(svc.key("greeting")) == "hello"

    status = await svc.health()
    assert isinstance(status, HealthStatus)
    assert status.ok
    assert status.latency_ms > 0
    assert svc.endpoint in status.detail
    assert await _connections_named(redis_url, name) >= 1

    await svc.close()
    assert svc.closed and not svc.started
    assert await _wait_for_connections(redis_url, name, 0) == 0
    after = await svc.health()
    assert not after.ok
    assert "closed" in after.detail
    with pytest.raises(StorageError, match="closed"):
        _ = svc.client
    with pytest.raises(StorageError, match="closed"):
        await svc.start()


async def test_health_before_start_probes_the_server(redis_url: str) -> None:
    svc = RedisService.from_url(redis_url)
    try:
        status = await svc.health()
        assert status.ok, status.detail
        assert not svc.started
    finally:
        await svc.close()


async def test_async_context_manager_starts_and_closes(redis_url: str) -> None:
    name = f"scribe-test-{uuid.uuid4().hex}"
    async with RedisService.from_url(redis_url, client_name=name) as svc:
        assert svc.started
        assert await svc.client.ping() is True
        assert await _connections_named(redis_url, name) >= 1
    assert svc.closed
    assert await _wait_for_connections(redis_url, name, 0) == 0


async def test_close_is_idempotent(redis_url: str) -> None:
    svc = RedisService.from_url(redis_url)
    await svc.start()
    await svc.close()
    await svc.close()
    assert svc.closed

    concurrent = RedisService.from_url(redis_url)
    await concurrent.start()
    await asyncio.gather(*(concurrent.close() for _ in range(5)))
    assert concurrent.closed

    never_started = RedisService.from_url(redis_url)
    await never_started.close()
    await never_started.close()
    assert never_started.closed


# --- unreachable servers and secrets ------------------------------------------------------


async def test_health_on_unreachable_server_reports_and_does_not_raise(
    unreachable_url: str,
) -> None:
    svc = RedisService.from_url(unreachable_url)
    try:
        status = await svc.health()
        assert not status.ok
        assert status.latency_ms >= 0
        assert endpoint_of(unreachable_url) in status.detail
        assert "ConnectionError" in status.detail
        assert not _leaks(status.detail)
    finally:
        await svc.close()
    closed = await svc.health()
    assert not closed.ok and "closed" in closed.detail


async def test_start_on_unreachable_server_raises_storage_error_without_password(
    unreachable_url: str,
) -> None:
    svc = RedisService.from_url(unreachable_url)
    with pytest.raises(StorageError) as caught:
        await svc.start()
    error = caught.value
    port = urlsplit(unreachable_url).port
    assert f"127.0.0.1:{port}" in str(error)
    assert not _leaks(str(error))
    assert not _leaks(repr(error.data))
    assert not _leaks("".join(traceback.format_exception(error)))
    assert not _leaks(repr(svc))
    assert error.data["url"] == f"redis://scribe:***@127.0.0.1:{port}/0"
    assert not svc.started
    # A failed start can be retried; it fails the same way and leaves the service usable.
    with pytest.raises(StorageError):
        await svc.start()
    await svc.close()


async def test_async_with_on_unreachable_server_closes_the_service(unreachable_url: str) -> None:
    svc = RedisService.from_url(unreachable_url)
    with pytest.raises(StorageError):
        async with svc:
            pytest.fail("the body must not run when start() fails")
    assert svc.closed


async def test_server_that_never_answers_times_out() -> None:
    async with _silent_server() as url:
        svc = RedisService.from_url(url, socket_timeout=0.5)
        began = time.monotonic()
        status = await svc.health(timeout_s=0.3)
        assert time.monotonic() - began < 3.0
        assert not status.ok
        assert "did not answer" in status.detail or "Timeout" in status.detail
        assert not _leaks(status.detail)

        with pytest.raises(StorageError) as caught:
            await svc.start()
        assert endpoint_of(url) in str(caught.value)
        assert not _leaks(str(caught.value))
        await svc.close()


async def test_password_authenticates_and_a_wrong_one_is_not_echoed(redis_url: str) -> None:
    user = f"scribe-test-{uuid.uuid4().hex[:12]}"
    async with RedisService.from_url(redis_url) as admin:
        try:
            await admin.client.acl_setuser(
                user, enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], commands=["+@all"]
            )
        except redis.exceptions.ResponseError as exc:
            pytest.skip(f"this Redis does not allow ACL SETUSER: {exc}")
        try:
            good_url = _with_credentials(redis_url, user, PASSWORD)
            async with RedisService.from_url(good_url) as authed:
                assert await authed.client.acl_whoami() == user
                assert (await authed.health()).ok
                assert not _leaks(repr(authed))
                assert not _leaks(repr(authed.client.connection_pool))
                assert f"{user}:***@" in authed.url

            wrong = "Wr0ng-" + PASSWORD
            bad = RedisService.from_url(_with_credentials(redis_url, user, wrong))
            with pytest.raises(StorageError) as caught:
                await bad.start()
            text = str(caught.value) + repr(caught.value.data)
            assert not _leaks(text, wrong)
            assert "AuthenticationError" in text or "WRONGPASS" in text
            status = await bad.health()
            assert not status.ok
            assert not _leaks(status.detail, wrong)
            await bad.close()
        finally:
            await admin.client.acl_deluser(user)


def test_invalid_url_is_a_configuration_error_without_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisService.from_url(f"http://scribe:{PASSWORD}@127.0.0.1:6379/0")
    assert "redis://" in str(caught.value)
    assert not _leaks(str(caught.value))
    assert caught.value.__cause__ is None
    with pytest.raises(ConfigurationError):
        RedisService.from_url("redis://127.0.0.1:6379/0", max_connections=0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://:{PASSWORD}@cache:6380/2", "redis://:***@cache:6380/2"),
        (f"rediss://app:{PASSWORD}@cache.internal/0", "rediss://app:***@cache.internal/0"),
        ("redis://app:p%40ss%3Aword@cache:6379", "redis://app:***@cache:6379"),
        (
            f"unix:///run/redis.sock?db=1&password={PASSWORD}",
            "unix:///run/redis.sock?db=1&password=***",
        ),
        ("redis://app@cache:6379/0", "redis://app@cache:6379/0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6390/0", "127.0.0.1:6390"),
        (f"redis://:{PASSWORD}@cache/0", "cache:6379"),
        ("redis://[::1]:6380", "[::1]:6380"),
        ("unix:///run/redis.sock?db=1", "/run/redis.sock"),
        ("redis://cache:notaport/0", "cache:notaport"),
    ],
)
def test_endpoint_of(url: str, expected: str) -> None:
    assert endpoint_of(url) == expected


# --- keys, streams, concurrency --------------------------------------------------------------


async def test_keys_are_prefixed_and_namespaces_stay_apart(redis_url: str) -> None:
    async with (
        RedisService.from_url(redis_url) as default,
        RedisService.from_url(redis_url, prefix="other:") as other,
    ):
        assert default.prefix == DEFAULT_PREFIX == "scribe:"
        assert default.key("session", 42) == "scribe:session:42"
        assert default.key("run", "abc", "events") == "scribe:run:abc:events"
        assert other.key("session", 42) == "other:session:42"

        await default.client.set(default.key("session", 42), "mine")
        await other.client.set(other.key("session", 42), "theirs")
        assert await default.client.get(default.key("session", 42)) == "mine"
        assert await other.client.get(other.key("session", 42)) == "theirs"
        stored = sorted(await default.client.keys("*"))
        assert stored == ["other:session:42", "scribe:session:42"]

        with pytest.raises(InvalidInput):
            default.key()
        with pytest.raises(InvalidInput):
            default.key("session", "")


def _stream_entries(answer: object, stream: str) -> list[tuple[str, dict[str, str]]]:
    """The entries of ``stream`` in an XREAD answer (RESP2: ``[[name, [(id, fields)]]]``)."""
    assert isinstance(answer, list) and len(answer) == 1, answer
    name, entries = answer[0]
    assert name == stream
    assert isinstance(entries, list)
    typed: list[tuple[str, dict[str, str]]] = []
    for entry_id, fields in entries:
        assert isinstance(entry_id, str) and isinstance(fields, dict)
        typed.append((entry_id, {str(k): str(v) for k, v in fields.items()}))
    return typed


async def test_stream_xadd_xread_round_trip(service: RedisService) -> None:
    client = service.client
    stream = service.key("run", uuid.uuid4().hex, "events")
    events: list[dict[FieldT, EncodableT]] = [
        {"agent": agent, "kind": "progress", "chapter": "1"} for agent in ("director", "writer")
    ]
    ids = [await client.xadd(stream, event) for event in events]
    assert len(set(ids)) == 2

    entries = _stream_entries(await client.xread({stream: "0-0"}, count=10), stream)
    assert [entry_id for entry_id, _ in entries] == ids
    assert [fields for _, fields in entries] == events

    # Continuing after the last id seen returns only newer entries; a blocked reader wakes
    # up when a producer adds one.
    last_seen = entries[-1][0]

    async def read_next() -> list[tuple[str, dict[str, str]]]:
        answer = await client.xread({stream: last_seen}, block=3000, count=10)
        return _stream_entries(answer, stream)

    reader = asyncio.create_task(read_next())
    await asyncio.sleep(0.1)
    final: dict[FieldT, EncodableT] = {"agent": "reviewer", "kind": "finished", "chapter": "1"}
    final_id = await client.xadd(stream, final)
    fresh = await asyncio.wait_for(reader, timeout=5)
    assert fresh == [(final_id, final)]
    assert await client.xlen(stream) == 3


async def test_concurrent_use_shares_a_bounded_pool(redis_url: str) -> None:
    name = f"scribe-test-{uuid.uuid4().hex}"
    tasks = 200
    async with RedisService.from_url(
        redis_url, prefix=f"{name}:", max_connections=4, client_name=name
    ) as svc:
        counter = svc.key("counter")

        async def work(i: int) -> str:
            await svc.client.incr(counter)
            await svc.client.set(svc.key("task", i), f"value-{i}")
            value = await svc.client.get(svc.key("task", i))
            assert isinstance(value, str)
            return value

        results, statuses = await asyncio.gather(
            asyncio.gather(*(work(i) for i in range(tasks))),
            asyncio.gather(*(svc.health() for _ in range(20))),
        )
        assert results == [f"value-{i}" for i in range(tasks)]
        assert all(s.ok for s in statuses)
        assert await svc.client.get(counter) == str(tasks)
        # More tasks than connections: they queued for the pool instead of failing.
        assert 1 <= await _connections_named(redis_url, name) <= 4
