"""SQL tables of authentication: users, API keys, refresh-token families and revocations.

Kept in lock-step with ``migrations/versions/0003_auth.py``; a test compares them.
Secrets are never stored: passwords as argon2 hashes, API keys and refresh tokens as
SHA-256 hex digests. The refresh-token and revocation tables serve the SQL token store of
the embedded default; with Redis configured those live in Redis instead.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from memory.db import Base

ID_LENGTH = 36
"""User, API-key and family ids are UUID strings."""
EMAIL_LENGTH = 320
USERNAME_LENGTH = 40
API_KEY_NAME_LENGTH = 100
API_KEY_PREFIX_LENGTH = 32
DIGEST_LENGTH = 64
"""SHA-256 hex digest of an API key or refresh token."""


class UserRow(Base):
    """An account: a normalised (lower-case) email, an optional username, a password hash."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("email"), UniqueConstraint("username_norm"))

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_LENGTH), nullable=False)
    username: Mapped[str | None] = mapped_column(String(USERNAME_LENGTH), nullable=True)
    # Lower-cased copy: usernames are unique regardless of case, shown as typed.
    username_norm: Mapped[str | None] = mapped_column(String(USERNAME_LENGTH), nullable=True)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class ApiKeyRow(Base):
    """A service-client key of one user; only its hash and a display prefix are kept."""

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("key_hash"),
        Index("ix_api_keys_user_id", "user_id"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(API_KEY_NAME_LENGTH), nullable=False)
    prefix: Mapped[str] = mapped_column(String(API_KEY_PREFIX_LENGTH), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(DIGEST_LENGTH), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RefreshFamilyRow(Base):
    """The chain of refresh tokens descending from one login; revoked as a whole."""

    __tablename__ = "refresh_families"
    __table_args__ = (Index("ix_refresh_families_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    revoked: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class RefreshTokenRow(Base):
    """One refresh token of a family, by hash; ``used`` once it has been rotated."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_family_id", "family_id"),
        Index("ix_refresh_tokens_expires_at", "expires_at"),
    )

    token_hash: Mapped[str] = mapped_column(String(DIGEST_LENGTH), primary_key=True)
    family_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("refresh_families.id", ondelete="CASCADE"), nullable=False
    )
    used: Mapped[bool] = mapped_column(Boolean, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class RevokedAccessTokenRow(Base):
    """An access token (by ``jti``) revoked before its expiry, e.g. at logout."""

    __tablename__ = "revoked_access_tokens"
    __table_args__ = (Index("ix_revoked_access_tokens_expires_at", "expires_at"),)

    jti: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
