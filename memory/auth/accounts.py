"""Users and their API keys in the SQL database (``users``, ``api_keys``).

Always SQL, with or without Redis: accounts are durable data. Emails arrive here already
normalised (lower-case); usernames are unique regardless of case.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from errors import Conflict
from memory.auth.tables import ApiKeyRow, UserRow
from memory.db import CompletesCalls, sql_errors, utc


@dataclass(frozen=True)
class UserRecord:
    """A user as the API shows it (never the password hash)."""

    id: str
    email: str
    username: str | None
    created_at: datetime


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key's metadata; the key itself is shown once, at creation, and never stored."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        """True once the owner has revoked the key."""
        return self.revoked_at is not None


def _maybeutc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _user(row: UserRow) -> UserRecord:
    return UserRecord(
        id=row.id, email=row.email, username=row.username, created_at=utc(row.created_at)
    )


def _api_key(row: ApiKeyRow) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=utc(row.created_at),
        last_used_at=_maybeutc(row.last_used_at),
        revoked_at=_maybeutc(row.revoked_at),
    )


class SqlAccounts(CompletesCalls):
    """Users and API keys through an async SQLAlchemy engine (already migrated)."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Use ``engine``; its tables come from ``migrations/versions/0003_auth.py``."""
        self._engine = engine
        # Reads go through ORM sessions (rows as mapped objects); writes through Core.
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def _begin(self, action: str) -> AsyncIterator[AsyncConnection]:
        with sql_errors("auth database", action):
            async with self._engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _session(self, action: str) -> AsyncIterator[AsyncSession]:
        with sql_errors("auth database", action):
            async with self._sessions() as session:
                yield session

    # -- users ---------------------------------------------------------------------------

    async def create_user(
        self, email: str, username: str | None, password_hash: str, now: datetime
    ) -> UserRecord:
        """Insert a user; :class:`Conflict` when the email or username is taken."""
        # Checked first for a precise message; the unique constraints settle races.
        await self._ensure_free(email, username)
        user_id = str(uuid.uuid4())
        try:
            async with self._begin("create a user") as conn:
                await conn.execute(
                    insert(UserRow).values(
                        id=user_id,
                        email=email,
                        username=username,
                        username_norm=username.lower() if username else None,
                        password_hash=password_hash,
                        created_at=now,
                    )
                )
        except IntegrityError:
            # Lost a race with a concurrent registration: say which value was taken.
            await self._ensure_free(email, username)
            raise Conflict("this email or username is already registered") from None
        return UserRecord(id=user_id, email=email, username=username, created_at=now)

    async def _ensure_free(self, email: str, username: str | None) -> None:
        async with self._session("look up a user") as session:
            by_email = await session.scalar(select(UserRow.id).where(UserRow.email == email))
            by_name = None
            if username is not None:
                by_name = await session.scalar(
                    select(UserRow.id).where(UserRow.username_norm == username.lower())
                )
        if by_email is not None:
            raise Conflict("an account with this email already exists", field="email")
        if by_name is not None:
            raise Conflict(f"username {username!r} is taken", field="username")

    async def credentials(self, email: str) -> tuple[UserRecord, str] | None:
        """The user with ``email`` and their password hash, or ``None``."""
        async with self._session("look up a user") as session:
            row = await session.scalar(select(UserRow).where(UserRow.email == email))
        if row is None:
            return None
        return _user(row), row.password_hash

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace a user's password hash (after a rehash with current parameters)."""
        async with self._begin("update a password hash") as conn:
            await conn.execute(
                update(UserRow).where(UserRow.id == user_id).values(password_hash=password_hash)
            )

    async def user(self, user_id: str) -> UserRecord | None:
        """The user with ``user_id``, or ``None``."""
        async with self._session("look up a user") as session:
            row = await session.get(UserRow, user_id)
        return None if row is None else _user(row)

    # -- API keys ------------------------------------------------------------------------

    async def create_api_key(
        self, user_id: str, name: str, prefix: str, key_hash: str, now: datetime
    ) -> ApiKeyRecord:
        """Store a new key's hash and display prefix for ``user_id``."""
        key_id = str(uuid.uuid4())
        async with self._begin("create an API key") as conn:
            await conn.execute(
                insert(ApiKeyRow).values(
                    id=key_id,
                    user_id=user_id,
                    name=name,
                    prefix=prefix,
                    key_hash=key_hash,
                    created_at=now,
                )
            )
        return ApiKeyRecord(key_id, user_id, name, prefix, now, None, None)

    async def api_keys(self, user_id: str) -> list[ApiKeyRecord]:
        """Every key of ``user_id``, revoked ones included, oldest first."""
        async with self._session("list API keys") as session:
            rows = await session.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.user_id == user_id)
                .order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            )
            return [_api_key(row) for row in rows]

    async def api_key_owner(self, key_hash: str) -> tuple[ApiKeyRecord, UserRecord] | None:
        """The key with ``key_hash`` and its owner, or ``None``."""
        async with self._session("look up an API key") as session:
            row = (
                await session.execute(
                    select(ApiKeyRow, UserRow)
                    .join(UserRow, UserRow.id == ApiKeyRow.user_id)
                    .where(ApiKeyRow.key_hash == key_hash)
                )
            ).one_or_none()
        if row is None:
            return None
        key, user = row
        return _api_key(key), _user(user)

    async def touch_api_key(self, key_id: str, now: datetime) -> None:
        """Record that the key was used at ``now``."""
        async with self._begin("record an API key's use") as conn:
            await conn.execute(
                update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=now)
            )

    async def revoke_api_key(self, user_id: str, key_id: str, now: datetime) -> bool:
        """Revoke ``user_id``'s key ``key_id``; False when they own no such key.

        Revoking a revoked key keeps its first revocation time and still answers True.
        """
        async with self._begin("revoke an API key") as conn:
            # The write comes first so SQLite takes its write lock at once (a read that
            # later wants to write can fail instead of waiting).
            revoked = await conn.execute(
                update(ApiKeyRow)
                .where(
                    ApiKeyRow.id == key_id,
                    ApiKeyRow.user_id == user_id,
                    ApiKeyRow.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
            if revoked.rowcount == 1:
                return True
            owned = await conn.scalar(
                select(ApiKeyRow.id).where(ApiKeyRow.id == key_id, ApiKeyRow.user_id == user_id)
            )
        return owned is not None
