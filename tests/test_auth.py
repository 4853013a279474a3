"""Authentication through the real app: accounts, JWTs, refresh rotation, API keys, limits.

Every test drives ``create_app(settings)`` over ``httpx.ASGITransport`` inside the app's
lifespan, on the embedded SQLite default; the token-store tests also run against a real
Redis (the ``redis_url`` fixture), where refresh tokens, revocations and rate limits live
in Redis instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from errors import ConfigurationError
from memory.auth.accounts import SqlAccounts
from memory.auth.store import RedisTokenStore, SqlTokenStore, TokenStore
from memory.auth.tables import RefreshTokenRow, UserRow
from memory.db import make_engine
from memory.migrate import upgrade_to_head
from memory.redis import RedisService
from server.app import create_app
from server.auth.secret import SECRET_FILE, resolve_jwt_secret
from server.auth.tokens import AUDIENCE, ISSUER, AccessTokens, digest
from server.settings import Settings, load_settings, to_sqlalchemy_url

SECRET = "test-jwt-secret-" + "s3cr3t" * 8
PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "another long passphrase"
API = "/api/v1"


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "jwt_secret": SECRET,
        "auth_rate_limit": 1000,
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a started app (ASGITransport does not run the lifespan by itself)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scribe.test") as client:
            yield client


@pytest.fixture(params=["sql", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which token store the app uses: SQL (embedded default) or Redis."""
    return str(request.param)


@pytest.fixture
def store_settings(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for ``store_kind``: Redis ones point at a real, freshly flushed Redis."""
    if store_kind == "redis":
        return _settings(tmp_path, redis_url=request.getfixturevalue("redis_url"))
    return _settings(tmp_path)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app on the embedded default."""
    async with serve(_settings(tmp_path)) as opened:
        yield opened


async def _register(
    client: httpx.AsyncClient,
    email: str = "alice@example.com",
    password: str = PASSWORD,
    username: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"email": email, "password": password}
    if username is not None:
        body["username"] = username
    response = await client.post(f"{API}/auth/register", json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _login(
    client: httpx.AsyncClient, email: str = "alice@example.com", password: str = PASSWORD
) -> dict[str, Any]:
    response = await client.post(f"{API}/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(user_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "type": "access",
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    claims.update(changes)
    return claims


def _flip(char: str) -> str:
    return "A" if char != "A" else "B"


# --- accounts -------------------------------------------------------------------------


async def test_register_login_me(client: httpx.AsyncClient) -> None:
    user = await _register(client, email="Alice.Smith@Example.COM", username="Alice_S")
    assert set(user) == {"id", "email", "username", "created_at"}
    assert user["email"] == "alice.smith@example.com"
    assert user["username"] == "Alice_S"

    tokens = await _login(client, email="ALICE.SMITH@example.com")
    assert tokens["token_type"] == "bearer"
    assert 890 <= tokens["expires_in"] <= 900
    assert tokens["refresh_expires_in"] > 29 * 86_400
    assert tokens["refresh_token"] != tokens["access_token"]

    me = await client.get(f"{API}/auth/me", headers=_bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json() == user


async def test_duplicate_email_or_username_is_409(client: httpx.AsyncClient) -> None:
    await _register(client, email="bob@example.com", username="bobby")

    again = await client.post(
        f"{API}/auth/register", json={"email": "BOB@example.com", "password": OTHER_PASSWORD}
    )
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    assert again.json()["field"] == "email"

    same_name = await client.post(
        f"{API}/auth/register",
        json={"email": "robert@example.com", "password": PASSWORD, "username": "BOBBY"},
    )
    assert same_name.status_code == 409
    assert same_name.json()["field"] == "username"


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email", "valid email"),
        ({"email": "a@example.com", "password": "short"}, "password", "at least 10"),
        ({"email": "a@example.com", "password": " " * 12}, "password", "whitespace"),
        ({"email": "a@example.com", "password": "x" * 257}, "password", "at most 256"),
        ({"email": "a@example.com", "password": PASSWORD, "username": "a b"}, "username", "match"),
        ({"email": "a@example.com", "password": PASSWORD, "username": "ab"}, "username", "3"),
        ({"password": PASSWORD}, "email", "required"),
        ({"email": "a@example.com", "password": PASSWORD, "admin": True}, "admin", "not permitted"),
    ],
)
async def test_bad_registration_is_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str, fragment: str
) -> None:
    response = await client.post(f"{API}/auth/register", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["code"] == "invalid_input"
    assert [e["field"] for e in answer["errors"]] == [field]
    assert fragment in answer["errors"][0]["message"]
    assert answer["detail"].startswith(f"{field}: ")
    # A rejected password is never echoed back.
    assert body["password"] not in response.text


async def test_wrong_password_and_unknown_email_look_the_same(client: httpx.AsyncClient) -> None:
    await _register(client)
    wrong = await client.post(
        f"{API}/auth/login", json={"email": "alice@example.com", "password": OTHER_PASSWORD}
    )
    unknown = await client.post(
        f"{API}/auth/login", json={"email": "nobody@example.com", "password": OTHER_PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["detail"] == "incorrect email or password"
    assert wrong.headers["WWW-Authenticate"] == "Bearer"


async def test_login_rehashes_a_password_made_with_old_parameters(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    async with serve(settings) as client:
        user = await _register(client)
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    engine = make_engine(settings.sql_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(UserRow).where(UserRow.id == user["id"]).values(password_hash=weak)
            )
        async with serve(settings) as client:
            await _login(client)
        async with engine.connect() as conn:
            stored = await conn.scalar(
                select(UserRow.password_hash).where(UserRow.id == user["id"])
            )
    finally:
        await engine.dispose()
    assert stored is not None
    assert stored != weak
    assert not PasswordHasher().check_needs_rehash(stored)
    assert PasswordHasher().verify(stored, PASSWORD)


# --- access tokens --------------------------------------------------------------------


async def test_bad_access_tokens_are_401(client: httpx.AsyncClient) -> None:
    user = await _register(client)
    tokens = await _login(client)
    good = tokens["access_token"]
    header, payload, signature = good.split(".")
    user_id = user["id"]

    middle = len(signature) // 2
    tampered_signature = f"{header}.{payload}.{signature[:middle]}{_flip(signature[middle])}"
    tampered_signature += signature[middle + 1 :]
    forged_payload = _b64(json.dumps(_claims("someone-else")).encode())
    tampered_payload = f"{header}.{forged_payload}.{signature}"
    expired = AccessTokens(SECRET, 900, clock=lambda: time.time() - 3600).issue(user_id).token
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    alg_none = f"{none_header}.{_b64(json.dumps(_claims(user_id)).encode())}."
    hs512 = jwt.encode(_claims(user_id), SECRET, algorithm="HS512")
    refresh_type = jwt.encode(_claims(user_id, type="refresh"), SECRET, algorithm="HS256")
    wrong_secret = jwt.encode(_claims(user_id), "another-secret-" + "x" * 40, algorithm="HS256")
    wrong_audience = jwt.encode(_claims(user_id, aud="elsewhere"), SECRET, algorithm="HS256")
    no_jti = _claims(user_id)
    del no_jti["jti"]
    missing_jti = jwt.encode(no_jti, SECRET, algorithm="HS256")
    future = jwt.encode(_claims(user_id, nbf=int(time.time()) + 3600), SECRET, algorithm="HS256")

    cases = {
        "tampered signature": (tampered_signature, "signature is invalid"),
        "tampered payload": (tampered_payload, "signature is invalid"),
        "expired": (expired, "has expired"),
        "alg none": (alg_none, "algorithm 'none' is not accepted"),
        "other algorithm": (hs512, "algorithm 'HS512' is not accepted"),
        "wrong type": (refresh_type, "token type 'refresh' is not an access token"),
        "refresh token as access": (tokens["refresh_token"], "malformed access token"),
        "wrong secret": (wrong_secret, "signature is invalid"),
        "wrong audience": (wrong_audience, "not issued for this service"),
        "missing claim": (missing_jti, "lacks the 'jti' claim"),
        "not yet valid": (future, "not valid yet"),
        "garbage": ("garbage", "malformed access token"),
    }
    for name, (token, fragment) in cases.items():
        response = await client.get(f"{API}/auth/me", headers=_bearer(token))
        assert response.status_code == 401, name
        assert fragment in response.json()["detail"], (name, response.json())
        assert response.json()["code"] == "unauthenticated"
        assert token not in response.text

    # The untouched token still works, so each refusal above was about the change.
    assert (await client.get(f"{API}/auth/me", headers=_bearer(good))).status_code == 200


async def test_missing_or_misshapen_credentials_are_401(client: httpx.AsyncClient) -> None:
    nothing = await client.get(f"{API}/auth/me")
    assert nothing.status_code == 401
    assert "authentication required" in nothing.json()["detail"]
    assert nothing.headers["WWW-Authenticate"] == "Bearer"

    basic = await client.get(f"{API}/auth/me", headers={"Authorization": "Basic YTpi"})
    assert basic.status_code == 401
    assert "must be 'Bearer <access token>'" in basic.json()["detail"]


# --- refresh tokens (SQL and Redis) ---------------------------------------------------


async def _stored_refresh_tokens(settings: Settings) -> tuple[int, int]:
    """How many refresh tokens are in (the SQL table, Redis)."""
    engine = make_engine(settings.sql_url)
    try:
        async with engine.connect() as conn:
            in_sql = await conn.scalar(select(func.count()).select_from(RefreshTokenRow))
    finally:
        await engine.dispose()
    in_redis = 0
    if settings.redis_url:
        client = Redis.from_url(settings.redis_url)
        try:
            in_redis = len(await client.keys("scribe:auth:rt:*"))
        finally:
            await client.aclose()
    return int(in_sql or 0), in_redis


async def test_refresh_rotates_and_reuse_revokes_the_family(store_settings: Settings) -> None:
    async with serve(store_settings) as client:
        await _register(client)
        first = await _login(client)

        rotated = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        me = await client.get(f"{API}/auth/me", headers=_bearer(second["access_token"]))
        assert me.status_code == 200

        third = (
            await client.post(
                f"{API}/auth/refresh", json={"refresh_token": second["refresh_token"]}
            )
        ).json()
        # Three tokens of one family, all in the configured store and only there.
        expected = (0, 3) if store_settings.redis_url else (3, 0)
        assert await _stored_refresh_tokens(store_settings) == expected

        # The first token again: reuse. The family is revoked, the newest token included.
        reuse = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": first["refresh_token"]}
        )
        assert reuse.status_code == 401
        assert "already used" in reuse.json()["detail"]
        newest = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": third["refresh_token"]}
        )
        assert newest.status_code == 401
        assert newest.json()["detail"] == "refresh token has been revoked"

        # Another login is another family and is unaffected.
        other = await _login(client)
        fine = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": other["refresh_token"]}
        )
        assert fine.status_code == 200

        unknown = await client.post(f"{API}/auth/refresh", json={"refresh_token": "made-up"})
        assert unknown.status_code == 401
        assert unknown.json()["detail"] == "refresh token is not valid"
        empty = await client.post(f"{API}/auth/refresh", json={"refresh_token": ""})
        assert empty.status_code == 422
        assert empty.json()["errors"][0]["field"] == "refresh_token"


async def test_concurrent_rotation_of_one_token_counts_as_reuse(store_settings: Settings) -> None:
    async with serve(store_settings) as client:
        await _register(client)
        tokens = await _login(client)
        body = {"refresh_token": tokens["refresh_token"]}
        answers = await asyncio.gather(
            client.post(f"{API}/auth/refresh", json=body),
            client.post(f"{API}/auth/refresh", json=body),
        )
        assert sorted(a.status_code for a in answers) == [200, 401]
        winner = next(a for a in answers if a.status_code == 200).json()
        after = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": winner["refresh_token"]}
        )
        assert after.status_code == 401


async def test_logout_revokes_refresh_family_and_access_token(store_settings: Settings) -> None:
    async with serve(store_settings) as client:
        await _register(client)
        tokens = await _login(client)
        rotated = (
            await client.post(
                f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
        ).json()
        kept = await _login(client)

        out = await client.post(
            f"{API}/auth/logout",
            json={"refresh_token": rotated["refresh_token"]},
            headers=_bearer(rotated["access_token"]),
        )
        assert out.status_code == 204

        refused = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
        )
        assert refused.status_code == 401
        assert refused.json()["detail"] == "refresh token has been revoked"
        me = await client.get(f"{API}/auth/me", headers=_bearer(rotated["access_token"]))
        assert me.status_code == 401
        assert me.json()["detail"] == "access token has been revoked"

        # Logging out is idempotent with a refresh token alone, and needs one of the two.
        again = await client.post(
            f"{API}/auth/logout", json={"refresh_token": rotated["refresh_token"]}
        )
        assert again.status_code == 204
        neither = await client.post(f"{API}/auth/logout", json={})
        assert neither.status_code == 422
        assert neither.json()["field"] == "refresh_token"

        # The other login is untouched.
        assert (
            await client.get(f"{API}/auth/me", headers=_bearer(kept["access_token"]))
        ).status_code == 200
        assert (
            await client.post(f"{API}/auth/refresh", json={"refresh_token": kept["refresh_token"]})
        ).status_code == 200


async def test_auth_endpoints_are_rate_limited(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra: dict[str, Any] = {"auth_rate_limit": 3, "auth_rate_window_s": 30}
    if store_kind == "redis":
        extra["redis_url"] = request.getfixturevalue("redis_url")
    async with serve(_settings(tmp_path, **extra)) as client:
        for n in range(3):
            await _register(client, email=f"user{n}@example.com")
        limited = await client.post(
            f"{API}/auth/register", json={"email": "user9@example.com", "password": PASSWORD}
        )
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 30

        wrong = {"email": "user0@example.com", "password": OTHER_PASSWORD}
        statuses = [(await client.post(f"{API}/auth/login", json=wrong)).status_code]
        statuses += [(await client.post(f"{API}/auth/login", json=wrong)).status_code]
        statuses += [(await client.post(f"{API}/auth/login", json=wrong)).status_code]
        blocked = await client.post(
            f"{API}/auth/login", json={"email": "user0@example.com", "password": PASSWORD}
        )
        assert statuses == [401, 401, 401]
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["Retry-After"]) <= 30
        # Login limits count per IP and email: another account is not locked out.
        other = await _login(client, email="user1@example.com")

        for _ in range(3):
            await client.post(f"{API}/auth/refresh", json={"refresh_token": "nope"})
        refresh_limited = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": other["refresh_token"]}
        )
        assert refresh_limited.status_code == 429


# --- the token-store port, both adapters ----------------------------------------------


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def port_kind(request: pytest.FixtureRequest) -> str:
    """Which adapter of the token-store port a test exercises."""
    return str(request.param)


@asynccontextmanager
async def _token_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[TokenStore, str]]:
    """A token store and a user id it may hold tokens for."""
    if kind == "postgres":
        url = to_sqlalchemy_url(request.getfixturevalue("fresh_postgres_url"))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    engine = make_engine(url)
    try:
        await upgrade_to_head(engine)
        user = await SqlAccounts(engine).create_user(
            "carol@example.com", None, "not-a-real-hash", datetime.now(UTC)
        )
        if kind != "redis":
            yield SqlTokenStore(engine), user.id
            return
        redis_url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_key_prefix")
        async with RedisService.from_url(redis_url, prefix=prefix) as r:
            yield RedisTokenStore(r), user.id
    finally:
        await engine.dispose()


async def test_token_store_outcomes(
    port_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with _token_store(port_kind, tmp_path, request) as (store, user_id):
        now = datetime.now(UTC)
        later = now + timedelta(minutes=10)
        family = await store.start_family(user_id, digest("t1"), later)
        assert await store.family_of(digest("t1")) == (family, user_id)
        assert await store.family_of(digest("nothing")) is None

        rotated = await store.rotate(digest("t1"), digest("t2"), later, now)
        assert (rotated.outcome, rotated.user_id, rotated.family_id) == ("rotated", user_id, family)
        assert await store.family_of(digest("t2")) == (family, user_id)
        assert (await store.rotate(digest("nothing"), digest("x"), later, now)).outcome == "unknown"

        # Past its expiry (as seen by the caller's clock) a token no longer rotates.
        expired = await store.rotate(digest("t2"), digest("t3"), later, later + timedelta(1))
        assert expired.outcome == "expired"
        assert await store.family_of(digest("t3")) is None

        assert (await store.rotate(digest("t1"), digest("t4"), later, now)).outcome == "reused"
        assert (await store.rotate(digest("t2"), digest("t5"), later, now)).outcome == "revoked"

        other = await store.start_family(user_id, digest("u1"), later)
        await store.revoke_family(other)
        await store.revoke_family(other)
        assert (await store.rotate(digest("u1"), digest("u2"), later, now)).outcome == "revoked"

        jti = str(uuid.uuid4())
        assert not await store.access_revoked(jti)
        await store.revoke_access(jti, later)
        await store.revoke_access(jti, later)
        assert await store.access_revoked(jti)
        await store.purge(now)
        assert await store.access_revoked(jti)


# --- API keys -------------------------------------------------------------------------


async def test_api_keys_create_list_use_revoke(client: httpx.AsyncClient) -> None:
    alice = await _register(client, email="alice@example.com")
    await _register(client, email="mallory@example.com")
    alice_auth = _bearer((await _login(client, "alice@example.com"))["access_token"])
    mallory_auth = _bearer((await _login(client, "mallory@example.com"))["access_token"])

    created = await client.post(f"{API}/api-keys", json={"name": " ci runner "}, headers=alice_auth)
    assert created.status_code == 201, created.text
    made = created.json()
    key = made["key"]
    assert key.startswith("sk_scribe_")
    assert len(key) > 40
    assert made["name"] == "ci runner"
    assert made["prefix"] == key[: len(made["prefix"])]
    assert len(made["prefix"]) < len(key) - 20
    assert made["revoked"] is False

    listed = await client.get(f"{API}/api-keys", headers=alice_auth)
    assert listed.status_code == 200
    [entry] = listed.json()
    assert set(entry) == {"id", "name", "prefix", "created_at", "last_used_at", "revoked"}
    assert entry["id"] == made["id"]
    assert entry["last_used_at"] is None
    assert key not in listed.text

    me = await client.get(f"{API}/auth/me", headers={"x-api-key": key})
    assert me.status_code == 200
    assert me.json()["id"] == alice["id"]
    [used] = (await client.get(f"{API}/api-keys", headers={"x-api-key": key})).json()
    assert used["last_used_at"] is not None

    assert (await client.get(f"{API}/api-keys", headers=mallory_auth)).json() == []
    stolen = await client.delete(f"{API}/api-keys/{made['id']}", headers=mallory_auth)
    assert stolen.status_code == 404
    missing = await client.delete(f"{API}/api-keys/{uuid.uuid4()}", headers=alice_auth)
    assert missing.status_code == 404

    revoked = await client.delete(f"{API}/api-keys/{made['id']}", headers=alice_auth)
    assert revoked.status_code == 204
    refused = await client.get(f"{API}/auth/me", headers={"x-api-key": key})
    assert refused.status_code == 401
    assert refused.json()["detail"] == "API key has been revoked"
    [gone] = (await client.get(f"{API}/api-keys", headers=alice_auth)).json()
    assert gone["revoked"] is True

    bogus = await client.get(f"{API}/auth/me", headers={"x-api-key": "sk_scribe_made-up"})
    assert bogus.status_code == 401
    assert bogus.json()["detail"] == "invalid API key"
    anonymous = await client.post(f"{API}/api-keys", json={"name": "x"})
    assert anonymous.status_code == 401
    unnamed = await client.post(f"{API}/api-keys", json={"name": "   "}, headers=alice_auth)
    assert unnamed.status_code == 422
    assert unnamed.json()["errors"][0]["field"] == "name"


# --- secrets --------------------------------------------------------------------------


async def test_secrets_never_reach_the_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _register(client)
    tokens = await _login(client)
    await client.post(
        f"{API}/auth/login", json={"email": "alice@example.com", "password": OTHER_PASSWORD}
    )
    rotated = (
        await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    ).json()
    await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    key = (
        await client.post(
            f"{API}/api-keys", json={"name": "k"}, headers=_bearer(rotated["access_token"])
        )
    ).json()["key"]
    await client.get(f"{API}/auth/me", headers={"x-api-key": key})
    await client.post(f"{API}/auth/register", json={"email": "b@example.com", "password": "tiny"})

    logged = caplog.text
    assert "logged in" in logged
    assert "reuse" in logged
    secrets = [
        PASSWORD,
        OTHER_PASSWORD,
        "tiny",
        SECRET,
        tokens["access_token"],
        tokens["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
        key,
    ]
    for secret in secrets:
        assert secret not in logged
        for record in caplog.records:
            assert secret not in repr(record.args)


async def test_generated_secret_is_kept_private_and_survives_restarts(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.jwt_secret is None
    async with serve(settings) as client:
        await _register(client)
        access = (await _login(client))["access_token"]
    path = settings.data_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text().strip()
    assert len(stored) >= 32
    jwt.decode(access, stored, algorithms=["HS256"], audience=AUDIENCE)

    async with serve(settings) as client:
        me = await client.get(f"{API}/auth/me", headers=_bearer(access))
    assert me.status_code == 200
    assert path.read_text().strip() == stored


def test_shared_database_requires_a_configured_secret(tmp_path: Path) -> None:
    shared = load_settings(data_dir=tmp_path, database_url="postgresql://u:p@localhost/scribe")
    with pytest.raises(ConfigurationError, match="SCRIBE_JWT_SECRET is required"):
        resolve_jwt_secret(shared)
    assert not (tmp_path / SECRET_FILE).exists()
    configured = load_settings(
        data_dir=tmp_path, database_url="postgresql://u:p@localhost/scribe", jwt_secret=SECRET
    )
    assert resolve_jwt_secret(configured) == SECRET


def test_short_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="jwt_secret") as caught:
        load_settings(data_dir=tmp_path, jwt_secret="tooshort-secret")
    assert "tooshort-secret" not in str(caught.value)


async def test_token_store_concurrent_rotations(
    port_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Many simultaneous rotations of one token: one wins, the rest revoke the family."""
    async with _token_store(port_kind, tmp_path, request) as (store, user_id):
        now = datetime.now(UTC)
        later = now + timedelta(minutes=10)
        await store.start_family(user_id, digest("root"), later)
        outcomes = await asyncio.gather(
            *(store.rotate(digest("root"), digest(f"child{n}"), later, now) for n in range(8))
        )
        kinds = sorted(o.outcome for o in outcomes)
        assert kinds.count("rotated") == 1
        assert set(kinds) <= {"rotated", "reused", "revoked"}
        assert "reused" in kinds
        [winner] = [n for n, o in enumerate(outcomes) if o.outcome == "rotated"]
        after = await store.rotate(digest(f"child{winner}"), digest("next"), later, now)
        assert after.outcome == "revoked"
