"""Where refresh tokens and access-token revocations live: Redis or the SQL database.

One small port, :class:`TokenStore`, with two adapters: :class:`RedisTokenStore` (when
``REDIS_URL`` is set; every key expires on its own) and :class:`SqlTokenStore` (the
embedded default). Tokens are stored by SHA-256 digest only.

Refresh tokens form *families*: a login starts one, each rotation adds the next token and
marks the presented one used. Presenting a used token again means it was copied, so the
whole family is revoked and every token of it, the newest included, stops working.
Rotation is atomic in both adapters (a Lua script; a transaction that locks the family
row first), so two concurrent rotations of one token count as reuse.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from redis.asyncio.client import Redis
from redis.typing import EncodableT, FieldT
from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory.auth.tables import RefreshFamilyRow, RefreshTokenRow, RevokedAccessTokenRow
from memory.db import CompletesCalls, sql_errors, utc
from memory.redis import RedisService, redis_errors

RotationOutcome = Literal["rotated", "unknown", "expired", "reused", "revoked"]


@dataclass(frozen=True)
class Rotation:
    """What rotating a refresh token did; ``user_id``/``family_id`` unless ``unknown``."""

    outcome: RotationOutcome
    user_id: str | None = None
    family_id: str | None = None


class TokenStore(ABC):
    """Refresh-token families and revoked access tokens."""

    @abstractmethod
    async def start_family(self, user_id: str, token_hash: str, expires_at: datetime) -> str:
        """Store the first token of a new family for ``user_id``; returns the family id."""

    @abstractmethod
    async def rotate(
        self, old_hash: str, new_hash: str, expires_at: datetime, now: datetime
    ) -> Rotation:
        """Mark ``old_hash`` used and add ``new_hash`` to its family, atomically.

        Outcomes: ``rotated``; ``unknown`` (never issued, or gone after expiry);
        ``expired``; ``revoked`` (its family was revoked); ``reused`` (it had been used
        already: the family is revoked now). Only ``rotated`` stores ``new_hash``.
        """

    @abstractmethod
    async def family_of(self, token_hash: str) -> tuple[str, str] | None:
        """``(family_id, user_id)`` of a stored refresh token, or ``None``."""

    @abstractmethod
    async def revoke_family(self, family_id: str) -> None:
        """Revoke every token of a family (idempotent)."""

    @abstractmethod
    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        """Refuse the access token ``jti`` until ``expires_at`` (idempotent)."""

    @abstractmethod
    async def access_revoked(self, jti: str) -> bool:
        """True when the access token ``jti`` has been revoked."""

    @abstractmethod
    async def purge(self, now: datetime) -> None:
        """Forget what expired before ``now`` (Redis does this by itself)."""


class SqlTokenStore(CompletesCalls, TokenStore):
    """Token families in ``refresh_families``/``refresh_tokens``; revocations in a table.

    Every writing transaction starts with a write (locking the family row on Postgres,
    taking SQLite's write lock), so concurrent rotations and revocations serialize
    instead of reading stale rows.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        """Use ``engine``, already migrated (``memory.migrate.upgrade_to_head``)."""
        self._engine = engine

    @asynccontextmanager
    async def _begin(self, action: str) -> AsyncIterator[AsyncConnection]:
        with sql_errors("auth database", action):
            async with self._engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _connect(self, action: str) -> AsyncIterator[AsyncConnection]:
        with sql_errors("auth database", action):
            async with self._engine.connect() as conn:
                yield conn

    async def start_family(self, user_id: str, token_hash: str, expires_at: datetime) -> str:
        """Insert a family and its first token in one transaction."""
        family_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        async with self._begin("store a refresh token") as conn:
            await conn.execute(
                insert(RefreshFamilyRow).values(
                    id=family_id, user_id=user_id, revoked=False, created_at=now, updated_at=now
                )
            )
            await conn.execute(
                insert(RefreshTokenRow).values(
                    token_hash=token_hash,
                    family_id=family_id,
                    used=False,
                    expires_at=expires_at,
                    created_at=now,
                )
            )
        return family_id

    async def rotate(
        self, old_hash: str, new_hash: str, expires_at: datetime, now: datetime
    ) -> Rotation:
        """See :meth:`TokenStore.rotate`."""
        async with self._begin("rotate a refresh token") as conn:
            # Write first: locks the family row (Postgres) or the database (SQLite), so
            # the reads below see any rotation or revocation that committed before.
            family_of_token = (
                select(RefreshTokenRow.family_id)
                .where(RefreshTokenRow.token_hash == old_hash)
                .scalar_subquery()
            )
            await conn.execute(
                update(RefreshFamilyRow)
                .where(RefreshFamilyRow.id == family_of_token)
                .values(updated_at=now)
            )
            row = (
                await conn.execute(
                    select(
                        RefreshTokenRow.used,
                        RefreshTokenRow.expires_at,
                        RefreshFamilyRow.id,
                        RefreshFamilyRow.user_id,
                        RefreshFamilyRow.revoked,
                    )
                    .join(RefreshFamilyRow, RefreshFamilyRow.id == RefreshTokenRow.family_id)
                    .where(RefreshTokenRow.token_hash == old_hash)
                )
            ).first()
            if row is None:
                return Rotation("unknown")
            used, token_expires, family_id, user_id, revoked = row
            if revoked:
                return Rotation("revoked", user_id, family_id)
            if used:
                await conn.execute(
                    update(RefreshFamilyRow)
                    .where(RefreshFamilyRow.id == family_id)
                    .values(revoked=True, updated_at=now)
                )
                return Rotation("reused", user_id, family_id)
            if utc(token_expires) <= now:
                return Rotation("expired", user_id, family_id)
            await conn.execute(
                update(RefreshTokenRow)
                .where(RefreshTokenRow.token_hash == old_hash)
                .values(used=True)
            )
            await conn.execute(
                insert(RefreshTokenRow).values(
                    token_hash=new_hash,
                    family_id=family_id,
                    used=False,
                    expires_at=expires_at,
                    created_at=now,
                )
            )
            return Rotation("rotated", user_id, family_id)

    async def family_of(self, token_hash: str) -> tuple[str, str] | None:
        """See :meth:`TokenStore.family_of`."""
        async with self._connect("look up a refresh token") as conn:
            row = (
                await conn.execute(
                    select(RefreshFamilyRow.id, RefreshFamilyRow.user_id)
                    .join(RefreshTokenRow, RefreshFamilyRow.id == RefreshTokenRow.family_id)
                    .where(RefreshTokenRow.token_hash == token_hash)
                )
            ).first()
        return None if row is None else (row[0], row[1])

    async def revoke_family(self, family_id: str) -> None:
        """See :meth:`TokenStore.revoke_family`."""
        async with self._begin("revoke a refresh-token family") as conn:
            await conn.execute(
                update(RefreshFamilyRow)
                .where(RefreshFamilyRow.id == family_id)
                .values(revoked=True, updated_at=datetime.now(UTC))
            )

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        """See :meth:`TokenStore.revoke_access`."""
        try:
            async with self._begin("revoke an access token") as conn:
                await conn.execute(
                    insert(RevokedAccessTokenRow).values(jti=jti, expires_at=expires_at)
                )
        except IntegrityError:
            # Already revoked (a repeated logout): nothing more to do.
            return

    async def access_revoked(self, jti: str) -> bool:
        """See :meth:`TokenStore.access_revoked`."""
        async with self._connect("check an access token") as conn:
            found = await conn.scalar(select(exists().where(RevokedAccessTokenRow.jti == jti)))
        return bool(found)

    async def purge(self, now: datetime) -> None:
        """Delete expired tokens, families left without tokens and expired revocations."""
        async with self._begin("purge expired tokens") as conn:
            await conn.execute(delete(RefreshTokenRow).where(RefreshTokenRow.expires_at <= now))
            await conn.execute(
                delete(RefreshFamilyRow).where(
                    ~exists().where(RefreshTokenRow.family_id == RefreshFamilyRow.id)
                )
            )
            await conn.execute(
                delete(RevokedAccessTokenRow).where(RevokedAccessTokenRow.expires_at <= now)
            )


# KEYS: old token, new token, family prefix. ARGV: now (ms), new expiry (ms), new TTL (ms).
# A family key that is missing while its token exists counts as revoked.
_ROTATE = """
local user = redis.call('HGET', KEYS[1], 'user_id')
if not user then return {'unknown', '', ''} end
local fam = redis.call('HGET', KEYS[1], 'family_id')
local famkey = KEYS[3] .. fam
if redis.call('HGET', famkey, 'revoked') ~= '0' then return {'revoked', user, fam} end
if redis.call('HGET', KEYS[1], 'used') == '1' then
  redis.call('HSET', famkey, 'revoked', '1')
  return {'reused', user, fam}
end
if tonumber(redis.call('HGET', KEYS[1], 'expires_at')) <= tonumber(ARGV[1]) then
  return {'expired', user, fam}
end
redis.call('HSET', KEYS[1], 'used', '1')
redis.call('HSET', KEYS[2], 'user_id', user, 'family_id', fam, 'used', '0', 'expires_at', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if redis.call('PTTL', famkey) < tonumber(ARGV[3]) then redis.call('PEXPIRE', famkey, ARGV[3]) end
return {'rotated', user, fam}
"""

# Revoking must not create a family key (it would never expire).
_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'revoked', '1') end
return 0
"""


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _text(value: object) -> str:
    # The service decodes responses by default, but a bytes-mode client must work too.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisTokenStore(TokenStore):
    """Token families as Redis hashes that expire with their newest token.

    ``auth:rt:<digest>`` holds a token (user, family, used, expiry); ``auth:family:<id>``
    holds the family's revoked flag and lives at least as long as its newest token, so
    reuse is detected for as long as any token of the family could still be presented.
    ``auth:revoked:<jti>`` marks a revoked access token until the token would expire.
    """

    def __init__(self, redis: RedisService) -> None:
        """Use the started ``redis`` service (its key prefix namespaces every key)."""
        self._redis = redis

    @property
    def _client(self) -> Redis:
        return self._redis.client

    def _token_key(self, token_hash: str) -> str:
        return self._redis.key("auth", "rt", token_hash)

    def _family_key(self, family_id: str) -> str:
        return self._redis.key("auth", "family", family_id)

    async def start_family(self, user_id: str, token_hash: str, expires_at: datetime) -> str:
        """See :meth:`TokenStore.start_family`."""
        family_id = str(uuid.uuid4())
        ttl_ms = max(1, _ms(expires_at) - _ms(datetime.now(UTC)))
        family_key, token_key = self._family_key(family_id), self._token_key(token_hash)
        token: dict[FieldT, EncodableT] = {
            "user_id": user_id,
            "family_id": family_id,
            "used": "0",
            "expires_at": str(_ms(expires_at)),
        }
        with redis_errors("auth Redis", "store a refresh token"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(family_key, mapping={"user_id": user_id, "revoked": "0"})
                pipe.pexpire(family_key, ttl_ms)
                pipe.hset(token_key, mapping=token)
                pipe.pexpire(token_key, ttl_ms)
                await pipe.execute()
        return family_id

    async def rotate(
        self, old_hash: str, new_hash: str, expires_at: datetime, now: datetime
    ) -> Rotation:
        """See :meth:`TokenStore.rotate`."""
        ttl_ms = max(1, _ms(expires_at) - _ms(now))
        with redis_errors("auth Redis", "rotate a refresh token"):
            answer = await self._client.eval(
                _ROTATE,
                3,
                self._token_key(old_hash),
                self._token_key(new_hash),
                self._redis.key("auth", "family") + ":",
                str(_ms(now)),
                str(_ms(expires_at)),
                str(ttl_ms),
            )
        outcome, user_id, family_id = (_text(part) for part in answer)
        if outcome == "unknown":
            return Rotation("unknown")
        return Rotation(cast(RotationOutcome, outcome), user_id, family_id)

    async def family_of(self, token_hash: str) -> tuple[str, str] | None:
        """See :meth:`TokenStore.family_of`."""
        with redis_errors("auth Redis", "look up a refresh token"):
            family_id, user_id = await self._client.hmget(
                self._token_key(token_hash), ["family_id", "user_id"]
            )
        if family_id is None or user_id is None:
            return None
        return _text(family_id), _text(user_id)

    async def revoke_family(self, family_id: str) -> None:
        """See :meth:`TokenStore.revoke_family`."""
        with redis_errors("auth Redis", "revoke a refresh-token family"):
            await self._client.eval(_REVOKE, 1, self._family_key(family_id))

    async def revoke_access(self, jti: str, expires_at: datetime) -> None:
        """See :meth:`TokenStore.revoke_access`."""
        ttl_ms = _ms(expires_at) - _ms(datetime.now(UTC))
        if ttl_ms > 0:
            with redis_errors("auth Redis", "revoke an access token"):
                await self._client.set(self._redis.key("auth", "revoked", jti), "1", px=ttl_ms)

    async def access_revoked(self, jti: str) -> bool:
        """See :meth:`TokenStore.access_revoked`."""
        with redis_errors("auth Redis", "check an access token"):
            return bool(await self._client.exists(self._redis.key("auth", "revoked", jti)))

    async def purge(self, now: datetime) -> None:
        """Nothing to do: every key carries its own expiry."""
