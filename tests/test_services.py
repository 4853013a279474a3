"""The real test services work: PostgreSQL 15+ with per-test databases, Redis with isolation."""

from __future__ import annotations

import psycopg
import pytest
import redis as redis_client
from sqlalchemy import text

from memory.db import make_engine
from server.settings import to_sqlalchemy_url
from tests.services import postgres
from tests.services import redis as redis_service
from tests.services.base import Running

# --- PostgreSQL -----------------------------------------------------------------------


def test_postgres_is_version_15_or_newer(postgres_server: Running) -> None:
    with psycopg.connect(postgres_server.url) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        banner = conn.execute("SELECT version()").fetchone()
    assert row is not None
    assert banner is not None
    assert int(row[0]) >= 150000
    assert str(banner[0]).startswith("PostgreSQL ")


def test_postgres_create_and_drop_database(postgres_server: Running) -> None:
    url = postgres.create_database(postgres_server.url)
    name = postgres.database_name(url)
    assert name.startswith("test_")
    assert len(name) == len("test_") + 32

    with psycopg.connect(url) as conn:
        current = conn.execute("SELECT current_database()").fetchone()
        conn.execute("CREATE TABLE probe (id int PRIMARY KEY)")
        conn.execute("INSERT INTO probe VALUES (1), (2)")
        count = conn.execute("SELECT count(*) FROM probe").fetchone()
    assert current == (name,)
    assert count == (2,)

    postgres.drop_database(postgres_server.url, name)
    with psycopg.connect(postgres_server.url) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert left.fetchone() == (0,)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()


def test_postgres_drop_ends_open_connections(postgres_server: Running) -> None:
    url = postgres.create_database(postgres_server.url)
    holder = psycopg.connect(url)
    try:
        postgres.drop_database(postgres_server.url, postgres.database_name(url))
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
    finally:
        holder.close()


async def test_session_database_serves_sqlalchemy_async(postgres_url: str) -> None:
    engine = make_engine(to_sqlalchemy_url(postgres_url))
    try:
        async with engine.connect() as conn:
            name = (await conn.execute(text("SELECT current_database()"))).scalar_one()
    finally:
        await engine.dispose()
    assert name == postgres.database_name(postgres_url)
    assert name.startswith("test_")


def test_fresh_databases_are_distinct_and_empty(fresh_postgres_url: str, postgres_url: str) -> None:
    assert postgres.database_name(fresh_postgres_url) != postgres.database_name(postgres_url)
    with psycopg.connect(fresh_postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_local_postgres_listens_on_loopback_only(postgres_server: Running) -> None:
    if not postgres_server.started_here:
        pytest.skip("server comes from SCRIBE_TEST_POSTGRES_URL")
    with psycopg.connect(postgres_server.url) as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
    assert listen == ("127.0.0.1",)
    assert fsync == ("off",)


# --- Redis ----------------------------------------------------------------------------


def test_redis_ping_set_get(redis_url: str) -> None:
    client = redis_client.Redis.from_url(redis_url)
    try:
        assert client.ping() is True
        assert client.dbsize() == 0
        assert client.set("scribe:probe", "value") is True
        assert client.get("scribe:probe") == b"value"
        assert client.incr("scribe:counter") == 1
        assert client.incr("scribe:counter") == 2
    finally:
        client.close()


def test_redis_url_starts_empty_again(redis_url: str) -> None:
    """The keys written by the previous test were flushed."""
    client = redis_client.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        assert client.get("scribe:probe") is None
    finally:
        client.close()


def test_redis_key_prefix_deletes_only_its_keys(redis_server: Running) -> None:
    prefix = redis_service.new_key_prefix()
    other = redis_service.new_key_prefix()
    assert prefix != other
    client = redis_client.Redis.from_url(redis_server.url)
    try:
        client.set(prefix + "a", "1")
        client.set(prefix + "b", "2")
        client.set(other + "a", "3")
        assert redis_service.delete_keys(redis_server.url, prefix) == 2
        assert client.exists(prefix + "a", prefix + "b") == 0
        assert client.get(other + "a") == b"3"
    finally:
        redis_service.delete_keys(redis_server.url, other)
        client.close()


def test_redis_key_prefix_fixture(redis_key_prefix: str, redis_server: Running) -> None:
    assert redis_key_prefix.startswith("test:")
    client = redis_client.Redis.from_url(redis_server.url)
    try:
        client.set(redis_key_prefix + "k", "v")
        assert client.get(redis_key_prefix + "k") == b"v"
    finally:
        client.close()


def test_local_redis_does_not_persist(redis_server: Running) -> None:
    if not redis_server.started_here:
        pytest.skip("server comes from SCRIBE_TEST_REDIS_URL")
    client = redis_client.Redis.from_url(redis_server.url)
    try:
        save = client.config_get("save")
        aof = client.config_get("appendonly")
        bind = client.config_get("bind")
    finally:
        client.close()
    assert save == {"save": ""}
    assert aof == {"appendonly": "no"}
    assert bind == {"bind": "127.0.0.1"}
