"""The one place where errors become HTTP responses.

Every :class:`ScribeError` maps to a status by its class; request validation errors become
422 bodies naming the offending field. Unexpected errors become a 500 without internals.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from errors import (
    BudgetExceeded,
    ConfigurationError,
    Conflict,
    InvalidInput,
    ModelError,
    ModelUnavailable,
    NotFound,
    RateLimited,
    RunFailed,
    ScribeError,
    StorageError,
    Unauthenticated,
)

log = logging.getLogger("scribe.http")

# Most specific first: the first class an error is an instance of decides its status.
STATUS_BY_ERROR: tuple[tuple[type[ScribeError], int], ...] = (
    (InvalidInput, 422),
    (Unauthenticated, 401),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (BudgetExceeded, 402),
    (ModelUnavailable, 503),
    (ModelError, 502),
    (ConfigurationError, 500),
    (RunFailed, 500),
    (StorageError, 503),
)


def status_for(error: ScribeError) -> int:
    """The HTTP status of a ScribeError."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def error_body(error: ScribeError) -> dict[str, object]:
    """The JSON body of an error: ``detail`` (readable), ``code`` and the error's data."""
    return {"detail": error.message, "code": error.code, **_public_data(error)}


def _public_data(error: ScribeError) -> dict[str, object]:
    return {k: v for k, v in error.data.items() if k not in ("errors",) and _is_json(v)}


def _is_json(value: object) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(ScribeError)
    async def _scribe_error(_request: Request, error: ScribeError) -> JSONResponse:
        status = status_for(error)
        if status >= 500:
            log.warning("request failed: %s: %s", error.code, error.message)
        headers: dict[str, str] = {}
        if isinstance(error, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
        if isinstance(error, Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(error_body(error), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body"), "message": e["msg"]}
            for e in error.errors()
        ]
        first = problems[0] if problems else {"field": "request", "message": "invalid"}
        detail = f"{first['field'] or 'body'}: {first['message']}"
        return JSONResponse(
            {"detail": detail, "code": "invalid_input", "errors": problems}, status_code=422
        )
