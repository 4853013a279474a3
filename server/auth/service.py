"""Authentication use cases: register, log in, refresh, log out, API keys, principals.

:class:`AuthService` is opened once per process (``AppServices.open``) and used by the
routes in ``server/api/auth.py`` and the ``CurrentUser`` dependency. Failures are
:class:`Unauthenticated` (401), :class:`RateLimited` (429), :class:`Conflict` (409) or
:class:`NotFound` (404), each with a precise message that never contains a secret. Wrong
passwords and unknown emails get the same message and take the same time, so the login
endpoint does not reveal which emails have accounts.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from errors import NotFound, Unauthenticated
from memory.auth.accounts import ApiKeyRecord, SqlAccounts, UserRecord
from memory.auth.store import RedisTokenStore, SqlTokenStore, TokenStore
from memory.db import make_engine
from memory.migrate import upgrade_to_head
from memory.redis import RedisService
from server.auth.passwords import Passwords
from server.auth.principal import Principal
from server.auth.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter, limit_key
from server.auth.secret import resolve_jwt_secret
from server.auth.tokens import AccessClaims, AccessTokens, digest, new_refresh_token
from server.settings import Settings

API_KEY_PREFIX = "sk_scribe_"
API_KEY_DISPLAY_LENGTH = len(API_KEY_PREFIX) + 8
"""Characters of a key kept in clear as its ``prefix``, enough to tell keys apart."""
_MAX_API_KEY_LENGTH = 200
_API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)
"""``last_used_at`` is written at most this often per key: a write per request is waste."""
_PURGE_INTERVAL_S = 3600.0
WRONG_CREDENTIALS = "incorrect email or password"

log = logging.getLogger("scribe.auth")


@dataclass(frozen=True)
class TokenPair:
    """An access token and a refresh token, with their expiry times."""

    user_id: str
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


@dataclass(frozen=True)
class NewApiKey:
    """A just-created API key: ``key`` is the secret, shown to its owner this once."""

    record: ApiKeyRecord
    key: str


class AuthService:
    """Accounts, tokens, API keys and rate limits of the HTTP server."""

    def __init__(
        self,
        *,
        accounts: SqlAccounts,
        tokens: TokenStore,
        access: AccessTokens,
        passwords: Passwords,
        limiter: RateLimiter,
        refresh_ttl_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Assemble the service from its parts (prefer :meth:`open`)."""
        self._accounts = accounts
        self._tokens = tokens
        self._access = access
        self._passwords = passwords
        self._limiter = limiter
        self._refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self._clock = clock
        self._last_purge = float("-inf")

    @classmethod
    async def open(
        cls,
        settings: Settings,
        stack: AsyncExitStack,
        *,
        redis: RedisService | None,
        engine: AsyncEngine | None = None,
    ) -> AuthService:
        """The service for ``settings``: Redis token store and limits when ``redis`` is given.

        Resolves the JWT secret (generating it on the embedded default, see
        :mod:`server.auth.secret`), uses ``engine`` on the app database or opens its own
        (disposed by ``stack``) and applies pending migrations.
        """
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        secret = resolve_jwt_secret(settings)
        if engine is None:
            engine = make_engine(settings.sql_url)
            stack.push_async_callback(engine.dispose)
        await upgrade_to_head(engine)
        tokens: TokenStore
        limiter: RateLimiter
        if redis is not None:
            tokens = RedisTokenStore(redis)
            limiter = RedisRateLimiter(redis, settings.auth_rate_limit, settings.auth_rate_window_s)
        else:
            tokens = SqlTokenStore(engine)
            limiter = MemoryRateLimiter(settings.auth_rate_limit, settings.auth_rate_window_s)
        return cls(
            accounts=SqlAccounts(engine),
            tokens=tokens,
            access=AccessTokens(secret, settings.access_token_ttl_s),
            passwords=Passwords(),
            limiter=limiter,
            refresh_ttl_s=settings.refresh_token_ttl_s,
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- accounts ------------------------------------------------------------------------

    async def register(
        self, email: str, password: str, username: str | None, *, client_ip: str
    ) -> UserRecord:
        """Create an account (email already validated and lower-cased by the caller).

        :class:`Conflict` when the email or username is taken; :class:`RateLimited` past
        the per-IP limit.
        """
        await self._limiter.hit("register", limit_key(client_ip))
        password_hash = await self._passwords.hash(password)
        user = await self._accounts.create_user(email, username, password_hash, self._now())
        log.info("registered user %s", user.id)
        return user

    async def login(self, email: str, password: str, *, client_ip: str) -> TokenPair:
        """Check the password and start a new refresh-token family.

        The stored hash is upgraded when argon2's parameters have changed since it was
        made. :class:`Unauthenticated` with one message for an unknown email and a wrong
        password alike.
        """
        await self._limiter.hit("login", limit_key(client_ip, email))
        found = await self._accounts.credentials(email)
        if found is None:
            await self._passwords.waste_time(password)
            raise Unauthenticated(WRONG_CREDENTIALS)
        user, stored_hash = found
        if not await self._passwords.verify(stored_hash, password):
            log.info("failed login for user %s", user.id)
            raise Unauthenticated(WRONG_CREDENTIALS)
        if self._passwords.needs_rehash(stored_hash):
            await self._accounts.set_password_hash(user.id, await self._passwords.hash(password))
            log.info("upgraded the password hash of user %s", user.id)
        pair = await self._start_family(user.id)
        await self._maybe_purge()
        log.info("user %s logged in", user.id)
        return pair

    async def user(self, user_id: str) -> UserRecord:
        """The account ``user_id``; :class:`NotFound` when it does not exist."""
        user = await self._accounts.user(user_id)
        if user is None:
            raise NotFound("user", user_id)
        return user

    # -- tokens --------------------------------------------------------------------------

    async def refresh(self, refresh_token: str, *, client_ip: str) -> TokenPair:
        """Rotate ``refresh_token``: a new pair, the presented token marked used.

        A token presented a second time revokes its whole family (every token descending
        from the same login, the newest included); that and every other refusal is
        :class:`Unauthenticated`.
        """
        await self._limiter.hit("refresh", limit_key(client_ip))
        now = self._now()
        new_token = new_refresh_token()
        expires_at = now + self._refresh_ttl
        rotation = await self._tokens.rotate(
            digest(refresh_token), digest(new_token), expires_at, now
        )
        if rotation.outcome == "reused":
            log.warning(
                "refresh token reuse for user %s: family %s revoked",
                rotation.user_id,
                rotation.family_id,
            )
            raise Unauthenticated(
                "refresh token was already used; every session of that login is revoked"
            )
        if rotation.outcome == "revoked":
            raise Unauthenticated("refresh token has been revoked")
        if rotation.outcome == "expired":
            raise Unauthenticated("refresh token has expired")
        if rotation.outcome != "rotated" or rotation.user_id is None:
            raise Unauthenticated("refresh token is not valid")
        if await self._accounts.user(rotation.user_id) is None:
            raise Unauthenticated("the account of this refresh token no longer exists")
        access = self._access.issue(rotation.user_id)
        return TokenPair(
            user_id=rotation.user_id,
            access_token=access.token,
            access_expires_at=access.expires_at,
            refresh_token=new_token,
            refresh_expires_at=expires_at,
        )

    async def logout(self, refresh_token: str | None, access: AccessClaims | None) -> None:
        """Revoke the refresh token's family and the access token, whichever are given.

        Unknown refresh tokens are ignored: logging out is idempotent.
        """
        if refresh_token is not None:
            family = await self._tokens.family_of(digest(refresh_token))
            if family is not None:
                await self._tokens.revoke_family(family[0])
                log.info("user %s logged out (family %s revoked)", family[1], family[0])
        if access is not None:
            await self._tokens.revoke_access(access.jti, access.expires_at)

    async def verify_access(self, token: str) -> AccessClaims:
        """The claims of a valid, unrevoked access token; :class:`Unauthenticated` if not."""
        claims = self._access.verify(token)
        if await self._tokens.access_revoked(claims.jti):
            raise Unauthenticated("access token has been revoked")
        return claims

    async def principal_for_token(self, token: str) -> Principal:
        """The caller behind a bearer access token."""
        claims = await self.verify_access(token)
        user = await self._accounts.user(claims.user_id)
        if user is None:
            raise Unauthenticated("the account of this access token no longer exists")
        return Principal(user_id=user.id, email=user.email, username=user.username, via="jwt")

    async def principal_for_api_key(self, key: str) -> Principal:
        """The owner of an ``x-api-key``; :class:`Unauthenticated` for unknown or revoked keys."""
        if not key.startswith(API_KEY_PREFIX) or len(key) > _MAX_API_KEY_LENGTH:
            raise Unauthenticated(f"invalid API key: keys start with {API_KEY_PREFIX!r}")
        found = await self._accounts.api_key_owner(digest(key))
        if found is None:
            raise Unauthenticated("invalid API key")
        record, user = found
        if record.revoked:
            raise Unauthenticated("API key has been revoked")
        now = self._now()
        if record.last_used_at is None or now - record.last_used_at >= _API_KEY_TOUCH_INTERVAL:
            await self._accounts.touch_api_key(record.id, now)
        return Principal(user_id=user.id, email=user.email, username=user.username, via="api_key")

    # -- API keys ------------------------------------------------------------------------

    async def create_api_key(self, user_id: str, name: str) -> NewApiKey:
        """A new key for ``user_id``; only its hash and display prefix are stored."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        record = await self._accounts.create_api_key(
            user_id, name, key[:API_KEY_DISPLAY_LENGTH], digest(key), self._now()
        )
        log.info("user %s created API key %s", user_id, record.id)
        return NewApiKey(record=record, key=key)

    async def api_keys(self, user_id: str) -> list[ApiKeyRecord]:
        """Every key of ``user_id`` (revoked ones included)."""
        return await self._accounts.api_keys(user_id)

    async def revoke_api_key(self, user_id: str, key_id: str) -> None:
        """Revoke one of ``user_id``'s keys; :class:`NotFound` for anyone else's (no leak)."""
        if not await self._accounts.revoke_api_key(user_id, key_id, self._now()):
            raise NotFound("API key", key_id)
        log.info("user %s revoked API key %s", user_id, key_id)

    # -- internals -----------------------------------------------------------------------

    async def _start_family(self, user_id: str) -> TokenPair:
        refresh_token = new_refresh_token()
        expires_at = self._now() + self._refresh_ttl
        await self._tokens.start_family(user_id, digest(refresh_token), expires_at)
        access = self._access.issue(user_id)
        return TokenPair(
            user_id=user_id,
            access_token=access.token,
            access_expires_at=access.expires_at,
            refresh_token=refresh_token,
            refresh_expires_at=expires_at,
        )

    async def _maybe_purge(self) -> None:
        """Drop expired tokens now and then (a no-op for Redis, whose keys expire)."""
        now = self._clock()
        if now - self._last_purge < _PURGE_INTERVAL_S:
            return
        self._last_purge = now
        await self._tokens.purge(self._now())
