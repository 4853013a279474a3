"""Password policy and argon2id hashing (argon2-cffi), off the event loop.

Hashing is deliberately slow (tens of milliseconds, tens of MiB), so every call runs in a
worker thread. Verification against an unknown account still costs one real verification
against a dummy hash, so response times do not reveal which emails are registered.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import (
    InvalidHashError,
    UnsupportedParametersError,
    VerificationError,
    VerifyMismatchError,
)

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
"""Longer inputs are refused before hashing: a cheap bound on the work one request causes."""

log = logging.getLogger("scribe.auth")


def password_problem(password: str) -> str | None:
    """Why ``password`` breaks the policy, or ``None`` when it is acceptable.

    The policy: 10 to 256 characters, not only whitespace. The password itself never
    appears in the answer.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"must be at most {MAX_PASSWORD_LENGTH} characters"
    if not password.strip():
        return "must not be only whitespace"
    return None


class Passwords:
    """Hash and verify passwords with argon2id; tells when a stored hash needs upgrading."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        """Use ``hasher`` (argon2-cffi's current recommended parameters by default)."""
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        """The encoded argon2 hash of ``password`` (salt and parameters included)."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str, password: str) -> bool:
        """True when ``password`` matches ``stored_hash``; a corrupt hash counts as no match."""
        return await asyncio.to_thread(self._verify, stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when ``stored_hash`` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, UnsupportedParametersError):
            return True

    async def waste_time(self, password: str) -> None:
        """Verify ``password`` against a dummy hash: as slow as a real check, never a match."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(self._dummy_hash, password)

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except VerifyMismatchError:
            return False
        except (InvalidHashError, UnsupportedParametersError, VerificationError):
            # Neither the hash nor the password goes to the log: both are secrets.
            log.warning("a stored password hash could not be verified (corrupt or unsupported)")
            return False
