"""FastAPI dependencies that authenticate a request.

:func:`current_principal` accepts ``Authorization: Bearer <access token>`` or
``x-api-key: <key>`` (the bearer token wins when both are sent) and raises
:class:`Unauthenticated` otherwise; ``server/deps.py`` exports it as ``CurrentUser``. The
security schemes are declared so the OpenAPI document shows both.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from errors import Unauthenticated
from server.auth.principal import Principal
from server.auth.service import AuthService
from server.auth.tokens import AccessClaims

API_KEY_HEADER = "x-api-key"

bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="JWT", description="Access token from /api/v1/auth/login"
)
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="API key from /api/v1/api-keys"
)

Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]
ApiKey = Annotated[str | None, Security(api_key_scheme)]


def auth_service(request: Request) -> AuthService:
    """The process's :class:`AuthService`, opened in the lifespan with the other services."""
    auth: AuthService = request.app.state.services.auth
    return auth


def _bearer_token(request: Request, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    """The bearer token, ``None`` without an Authorization header; 401 for another scheme."""
    if bearer is not None:
        return bearer.credentials
    if request.headers.get("authorization"):
        raise Unauthenticated("the Authorization header must be 'Bearer <access token>'")
    return None


async def current_principal(request: Request, bearer: Bearer, api_key: ApiKey) -> Principal:
    """The authenticated caller; :class:`Unauthenticated` (401) without valid credentials."""
    auth = auth_service(request)
    token = _bearer_token(request, bearer)
    if token is not None:
        return await auth.principal_for_token(token)
    if api_key:
        return await auth.principal_for_api_key(api_key)
    raise Unauthenticated(
        "authentication required: send 'Authorization: Bearer <access token>' "
        f"or '{API_KEY_HEADER}: <API key>'"
    )


async def optional_access_claims(request: Request, bearer: Bearer) -> AccessClaims | None:
    """The verified claims of the bearer access token, or ``None`` when none is sent.

    A token that is sent but invalid is still a 401: it is never silently ignored.
    """
    token = _bearer_token(request, bearer)
    if token is None:
        return None
    return await auth_service(request).verify_access(token)
