"""JWT access tokens (PyJWT, HS256 only), opaque refresh tokens and secret digests.

Access tokens are short-lived and self-contained: ``sub`` (user id), ``exp``, ``iat``,
``nbf``, ``jti``, ``type="access"`` and a fixed ``iss``/``aud``. Verification accepts only
HS256: the header's algorithm is checked explicitly before PyJWT (which also gets
``algorithms=["HS256"]``), so ``alg: none`` and algorithm-confusion tokens are refused
with a precise message. Refresh tokens are random strings; only their SHA-256 is stored.
Neither kind of token ever appears in an error message or log line.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from errors import ConfigurationError, Unauthenticated

ALGORITHM = "HS256"
ISSUER = "infinitescribe"
AUDIENCE = "infinitescribe-api"
ACCESS_TYPE = "access"
LEEWAY_S = 10.0
"""Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` between replicas."""
MIN_SECRET_LENGTH = 32
REQUIRED_CLAIMS = ("sub", "exp", "iat", "nbf", "jti", "iss", "aud", "type")
_MAX_TOKEN_LENGTH = 4096


@dataclass(frozen=True)
class IssuedAccessToken:
    """A freshly signed access token with its id and expiry."""

    token: str
    jti: str
    expires_at: datetime


@dataclass(frozen=True)
class AccessClaims:
    """The verified claims of an access token that the server acts on."""

    user_id: str
    jti: str
    issued_at: datetime
    expires_at: datetime


def digest(secret: str) -> str:
    """SHA-256 hex digest of a high-entropy secret (refresh token, API key) for storage.

    A plain hash suffices here, unlike for passwords: these secrets are 256-bit random
    strings, so there is nothing to guess.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_refresh_token() -> str:
    """A fresh opaque refresh token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class AccessTokens:
    """Issue and verify HS256 access tokens with one secret."""

    def __init__(self, secret: str, ttl_s: int, *, clock: Callable[[], float] = time.time) -> None:
        """Sign with ``secret`` (32+ characters); tokens live ``ttl_s`` seconds."""
        if len(secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(f"the JWT secret must be at least {MIN_SECRET_LENGTH} chars")
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock

    @property
    def ttl_s(self) -> int:
        """Lifetime of an issued token in seconds."""
        return self._ttl_s

    def issue(self, user_id: str) -> IssuedAccessToken:
        """A new access token for ``user_id``."""
        now = int(self._clock())
        jti = str(uuid.uuid4())
        claims: dict[str, Any] = {
            "sub": user_id,
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl_s,
            "jti": jti,
            "type": ACCESS_TYPE,
            "iss": ISSUER,
            "aud": AUDIENCE,
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedAccessToken(
            token=token, jti=jti, expires_at=datetime.fromtimestamp(now + self._ttl_s, UTC)
        )

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid access token; :class:`Unauthenticated` saying why otherwise."""
        if len(token) > _MAX_TOKEN_LENGTH:
            raise Unauthenticated("malformed access token: too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("malformed access token: not a JWT") from None
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            shown = algorithm[:20] if isinstance(algorithm, str) else "missing"
            raise Unauthenticated(
                f"access token algorithm {shown!r} is not accepted; only {ALGORITHM} is"
            )
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY_S,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(_reason(exc)) from None
        kind = claims["type"]
        if kind != ACCESS_TYPE:
            shown = kind[:20] if isinstance(kind, str) else type(kind).__name__
            raise Unauthenticated(f"token type {shown!r} is not an access token")
        user_id, jti = claims["sub"], claims["jti"]
        if not isinstance(user_id, str) or not isinstance(jti, str):
            raise Unauthenticated("malformed access token: sub and jti must be strings")
        return AccessClaims(
            user_id=user_id,
            jti=jti,
            # PyJWT has checked that both convert with int().
            issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )


def _reason(exc: jwt.InvalidTokenError) -> str:
    """A precise, secret-free explanation of a PyJWT failure."""
    # Subclasses first: InvalidSignatureError is a DecodeError.
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "access token has expired"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "access token signature is invalid"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"access token algorithm is not accepted; only {ALGORITHM} is"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "access token is not valid yet"
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return "malformed access token: 'iat' must be an integer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"access token lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidAudienceError | jwt.InvalidIssuerError):
        return "access token was not issued for this service"
    if isinstance(exc, InvalidSubjectError | InvalidJTIError):
        return "malformed access token: sub and jti must be strings"
    return "malformed access token"
