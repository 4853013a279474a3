"""Accounts, tokens and API keys under ``/api/v1``.

Thin routes: pydantic validates the input (precise 422s naming the field), the
:class:`~server.auth.service.AuthService` does the work, and errors become responses in
``server/errors.py``. Passwords and tokens are never logged or echoed back in errors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints
from pydantic_core import PydanticCustomError

from errors import InvalidInput
from memory.auth.accounts import ApiKeyRecord, UserRecord
from memory.auth.tables import API_KEY_NAME_LENGTH
from server.auth.deps import optional_access_claims
from server.auth.passwords import MAX_PASSWORD_LENGTH, password_problem
from server.auth.service import TokenPair
from server.auth.tokens import AccessClaims
from server.deps import CurrentUser, Services

router = APIRouter(prefix="/api/v1", tags=["auth"])

_MAX_REFRESH_TOKEN_LENGTH = 512


def _checked_password(value: str) -> str:
    problem = password_problem(value)
    if problem is not None:
        # A custom error type keeps pydantic from prefixing the message with "Value error, ".
        raise PydanticCustomError("password_policy", problem)
    return value


Email = Annotated[EmailStr, AfterValidator(str.lower)]
"""A syntactically valid email address, normalised and lower-cased."""
NewPassword = Annotated[str, AfterValidator(_checked_password)]
Username = Annotated[
    str, StringConstraints(min_length=3, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
]
RefreshToken = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_REFRESH_TOKEN_LENGTH)]


class _Request(BaseModel):
    # Unknown fields are refused so a misspelt one gets a 422 naming it, not silence.
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Request):
    """A new account: email, password (10-256 characters) and an optional username."""

    email: Email
    password: NewPassword = Field(
        description="10 to 256 characters, not only whitespace", repr=False
    )
    username: Username | None = Field(
        default=None, description="3 to 40 characters: letters, digits, '_', '.', '-'"
    )


class LoginRequest(_Request):
    """Credentials of an existing account."""

    email: Email
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH, repr=False)


class RefreshRequest(_Request):
    """A refresh token to rotate."""

    refresh_token: RefreshToken = Field(repr=False)


class LogoutRequest(_Request):
    """The refresh token whose login to end (optional when a bearer token is sent)."""

    refresh_token: RefreshToken | None = Field(default=None, repr=False)


class UserResponse(BaseModel):
    """An account as the API shows it."""

    id: str
    email: str
    username: str | None
    created_at: datetime

    @classmethod
    def of(cls, user: UserRecord) -> UserResponse:
        """The response for ``user``."""
        return cls(id=user.id, email=user.email, username=user.username, created_at=user.created_at)


class TokenResponse(BaseModel):
    """A token pair; send ``access_token`` as ``Authorization: Bearer``."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds until the access token expires")
    refresh_expires_in: int = Field(description="seconds until the refresh token expires")

    @classmethod
    def of(cls, pair: TokenPair, now: datetime) -> TokenResponse:
        """The response for ``pair``, with lifetimes counted from ``now``."""
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=max(0, int((pair.access_expires_at - now).total_seconds())),
            refresh_expires_in=max(0, int((pair.refresh_expires_at - now).total_seconds())),
        )


class ApiKeyCreateRequest(_Request):
    """A name that tells the owner what the key is for."""

    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=API_KEY_NAME_LENGTH)
    ]


class ApiKeyResponse(BaseModel):
    """An API key's metadata (never the key)."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, record: ApiKeyRecord) -> ApiKeyResponse:
        """The response for ``record``."""
        return cls(
            id=record.id,
            name=record.name,
            prefix=record.prefix,
            created_at=record.created_at,
            last_used_at=record.last_used_at,
            revoked=record.revoked,
        )


class ApiKeyCreatedResponse(ApiKeyResponse):
    """A new API key: ``key`` is shown this once and cannot be retrieved again."""

    key: str


def _client_ip(request: Request) -> str:
    # Behind a proxy, run uvicorn with --proxy-headers so this is the real client.
    return request.client.host if request.client else "unknown"


def _now() -> datetime:
    return datetime.now(UTC)


@router.post("/auth/register", status_code=201)
async def register(body: RegisterRequest, request: Request, services: Services) -> UserResponse:
    """Create an account; 409 when the email (or username) is taken."""
    user = await services.auth.register(
        body.email, body.password, body.username, client_ip=_client_ip(request)
    )
    return UserResponse.of(user)


@router.post("/auth/login")
async def login(body: LoginRequest, request: Request, services: Services) -> TokenResponse:
    """Exchange email and password for an access token and a refresh token."""
    pair = await services.auth.login(body.email, body.password, client_ip=_client_ip(request))
    return TokenResponse.of(pair, _now())


@router.post("/auth/refresh")
async def refresh(body: RefreshRequest, request: Request, services: Services) -> TokenResponse:
    """Rotate a refresh token: a new pair; reusing an old token revokes the whole login."""
    pair = await services.auth.refresh(body.refresh_token, client_ip=_client_ip(request))
    return TokenResponse.of(pair, _now())


@router.post("/auth/logout", status_code=204)
async def logout(
    body: LogoutRequest,
    services: Services,
    access: Annotated[AccessClaims | None, Depends(optional_access_claims)],
) -> Response:
    """Revoke the refresh token's login and the bearer access token (send either or both)."""
    if body.refresh_token is None and access is None:
        raise InvalidInput(
            "send the refresh token in the body or the access token as Authorization: Bearer",
            field="refresh_token",
        )
    await services.auth.logout(body.refresh_token, access)
    return Response(status_code=204)


@router.get("/auth/me")
async def me(principal: CurrentUser, services: Services) -> UserResponse:
    """The authenticated account."""
    return UserResponse.of(await services.auth.user(principal.user_id))


@router.post("/api-keys", status_code=201)
async def create_api_key(
    body: ApiKeyCreateRequest, principal: CurrentUser, services: Services
) -> ApiKeyCreatedResponse:
    """Create an API key for the caller; the key is in this response only."""
    created = await services.auth.create_api_key(principal.user_id, body.name)
    return ApiKeyCreatedResponse(**ApiKeyResponse.of(created.record).model_dump(), key=created.key)


@router.get("/api-keys")
async def list_api_keys(principal: CurrentUser, services: Services) -> list[ApiKeyResponse]:
    """The caller's API keys, revoked ones included."""
    return [ApiKeyResponse.of(r) for r in await services.auth.api_keys(principal.user_id)]


@router.delete("/api-keys/{key_id}", status_code=204)
async def revoke_api_key(key_id: str, principal: CurrentUser, services: Services) -> Response:
    """Revoke one of the caller's API keys; 404 for a key they do not own."""
    await services.auth.revoke_api_key(principal.user_id, key_id)
    return Response(status_code=204)
