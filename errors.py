"""The one error hierarchy of InfiniteScribe.

Every error the engine raises on purpose derives from :class:`ScribeError` and carries
structured data, so the CLI can print one readable line and the HTTP layer can map the
class to a status code in one place (``server/errors.py``).
"""

from __future__ import annotations

from typing import Any


class ScribeError(Exception):
    """Base of every deliberate InfiniteScribe error.

    ``code`` is a stable machine-readable identifier; ``data`` holds the facts that
    explain the error (ids, agent names, limits) for logs and API bodies.
    """

    code = "scribe_error"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = data

    def __str__(self) -> str:
        return self.message


class InvalidInput(ScribeError):
    """The caller supplied a value the engine cannot accept (bad premise, bad count...)."""

    code = "invalid_input"


class NotFound(ScribeError):
    """A named resource (session, chapter, version, entity) does not exist."""

    code = "not_found"

    def __init__(self, kind: str, ident: object, message: str | None = None) -> None:
        super().__init__(message or f"{kind} {ident!s} not found", kind=kind, id=str(ident))


class Conflict(ScribeError):
    """The request contradicts the current state (e.g. resuming a finished session)."""

    code = "conflict"


class StorageError(ScribeError):
    """A store (database, vector index, graph) failed or is misconfigured."""

    code = "storage_error"


class StoreUnavailable(StorageError):
    """A store could not be reached, or lost the connection mid-request: the same request
    can succeed once it is back (a worker gives such a run back rather than failing it)."""


class RunFailed(ScribeError):
    """A run ended in error without an error of its own to report (its engine failed,
    or it ran out of time); the message says why."""

    code = "run_failed"


class ConfigurationError(ScribeError):
    """Settings are inconsistent or incomplete (e.g. a base URL without a model name)."""

    code = "configuration_error"


class ModelError(ScribeError):
    """A language-model call failed; ``agent`` names the agent that made it."""

    code = "model_error"

    def __init__(self, message: str, *, agent: str, **data: Any) -> None:
        super().__init__(message, agent=agent, **data)
        self.agent = agent


class ModelOutputError(ModelError):
    """The model's answer was malformed even after the one repair attempt."""

    code = "model_output_invalid"


class ModelRefused(ModelOutputError):
    """The model kept refusing the task (or answering nothing) through every re-ask."""

    code = "model_refused"


class ContextOverflow(ModelError):
    """A prompt cannot fit the agent's context window even with its optional parts cut."""

    code = "model_context_overflow"


class ModelUnavailable(ModelError):
    """Transient failures (429, 5xx, timeouts) persisted through every retry."""

    code = "model_unavailable"


class Unauthenticated(ScribeError):
    """No valid credentials: a missing, expired, tampered or revoked token or API key."""

    code = "unauthenticated"


class RateLimited(ScribeError):
    """Too many requests; ``retry_after`` says when to try again (seconds)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **data: Any) -> None:
        super().__init__(message, retry_after=retry_after, **data)
        self.retry_after = retry_after


class BudgetExceeded(ScribeError):
    """A run used up its token or cost budget; it stopped before the next model call and
    can be resumed (with a larger budget or none)."""

    code = "budget_exceeded"


class ReplayMissing(ModelError):
    """A replay needed a model call that the source run never recorded (the run took a
    different path, e.g. a changed reviewer asked for a revision the original did not)."""

    code = "replay_missing_call"
