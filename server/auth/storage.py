"""Database and Redis failures of the auth stores, as :class:`StorageError` (HTTP 503).

Only the failure's class name goes into the message: library messages can quote SQL
parameters (password hashes, emails) or connection details, and 5xx messages are logged
and returned to the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from memory.errors import StorageError


@contextmanager
def sql_errors(action: str) -> Iterator[None]:
    """Turn SQLAlchemy failures while doing ``action`` into :class:`StorageError`.

    :class:`IntegrityError` passes through: callers that expect constraint races catch it.
    """
    try:
        yield
    except IntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise StorageError(f"auth database: cannot {action}: {type(exc).__name__}") from None


@contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Turn Redis failures while doing ``action`` into :class:`StorageError`."""
    try:
        yield
    except RedisError as exc:
        raise StorageError(f"auth Redis: cannot {action}: {type(exc).__name__}") from None
