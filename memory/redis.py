"""The Redis connection service of the HTTP server (sessions, rate limits, run events).

One :class:`RedisService` owns one connection pool for the whole process. It is built from
a URL without I/O, connects in :meth:`RedisService.start`, reports on itself with
:meth:`RedisService.health` (which never raises) and closes its pool in
:meth:`RedisService.close`. Passwords never appear in logs, reprs or error messages:
every URL shown to a person goes through :func:`redact_url`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

from errors import ConfigurationError, InvalidInput, StorageError, StoreUnavailable

log = logging.getLogger("scribe.storage")

DEFAULT_PREFIX = "scribe:"
DEFAULT_PORT = 6379
MASK = "***"
_SECRET_QUERY_KEYS = frozenset({"password", "ssl_password"})


@contextmanager
def redis_errors(store: str, action: str) -> Iterator[None]:
    """Turn a Redis failure of ``store`` doing ``action`` into :class:`StorageError`
    (HTTP 503).

    Like :func:`memory.db.sql_errors`, the error names the action and the failure's class
    only (a client's text can carry connection details); the log has the rest.
    """
    try:
        yield
    except (RedisError, OSError) as exc:
        log.warning("%s: cannot %s: %s", store, action, exc)
        down = isinstance(exc, RedisConnectionError | RedisTimeout | OSError)
        raise (StoreUnavailable if down else StorageError)(
            f"{store}: cannot {action}: Redis is unavailable or refused it ({type(exc).__name__})"
        ) from None


@dataclass(frozen=True)
class HealthStatus:
    """The outcome of one health probe: ``ok``, the PING round trip and a readable detail."""

    ok: bool
    latency_ms: float
    detail: str


def redact_url(url: str) -> str:
    """``url`` with its password (userinfo or ``?password=``) replaced by ``***``.

    The username, host, port, database and other query options stay visible so the
    result still says which server is meant.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k in _SECRET_QUERY_KEYS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*"
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    # Joined by hand: urlunsplit turns "unix:///path" (empty host) into "unix:/path".
    head = f"{parts.scheme}://" if "://" in url else (f"{parts.scheme}:" if parts.scheme else "")
    tail = (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
    return f"{head}{netloc}{parts.path}{tail}"


def endpoint_of(url: str) -> str:
    """``host:port`` of a ``redis://``/``rediss://`` URL, or the socket path of ``unix://``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return unquote(parts.path) or "(no socket path)"
    hostport = parts.netloc.rpartition("@")[2]
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        # An unparsable port is reported as written; it is never part of the secret.
        return hostport or "(no host)"
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def _secrets_of(url: str) -> list[str]:
    """Every form in which the URL's password could show up in a library message."""
    parts = urlsplit(url)
    found: list[str] = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    found += [v for k, v in parse_qsl(parts.query) if k in _SECRET_QUERY_KEYS and v]
    found += [quote(s, safe="") for s in list(found)]
    # Longest first, so a password that contains another form is masked whole.
    return sorted({s for s in found if s}, key=len, reverse=True)


class RedisService:
    """A started-once, closed-once Redis connection pool with namespaced keys.

    Build it with :meth:`from_url`, then ``await start()`` (or ``async with``). The pool
    blocks a task for up to ``pool_timeout`` seconds when every connection is busy
    instead of failing at once, so many concurrent requests share a bounded number of
    sockets.
    """

    def __init__(self, client: Redis, *, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        """Wrap ``client``, which this service owns and closes; ``url`` names it in messages.

        Prefer :meth:`from_url`; only the redacted form of ``url`` is kept.
        """
        self._client = client
        self._url = redact_url(url)
        self._endpoint = endpoint_of(url)
        self._secrets = _secrets_of(url)
        self._prefix = prefix
        self._started = False
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        health_check_interval: int = 30,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float | None = None,
        max_connections: int = 64,
        pool_timeout: float = 10.0,
        decode_responses: bool = True,
        client_name: str | None = "infinitescribe",
    ) -> RedisService:
        """A service for ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``).

        No connection is made here. ``health_check_interval`` makes the pool PING a
        connection that has been idle that long before reusing it; ``socket_timeout``
        bounds every command and, unless ``socket_connect_timeout`` is given, connecting.
        Responses are decoded to ``str`` unless ``decode_responses`` is false.
        ``client_name`` labels the connections in ``CLIENT LIST`` (operators, tests).
        Raises :class:`ConfigurationError` (with the URL redacted) for a malformed URL.
        """
        if max_connections < 1:
            raise ConfigurationError("Redis max_connections must be at least 1")
        try:
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=pool_timeout,
                health_check_interval=health_check_interval,
                socket_timeout=socket_timeout,
                socket_connect_timeout=(
                    socket_connect_timeout if socket_connect_timeout is not None else socket_timeout
                ),
                decode_responses=decode_responses,
                client_name=client_name,
            )
        except (ValueError, TypeError) as exc:
            # redis-py's messages name the bad part, not the URL; chaining is still cut so
            # no frame or argument of the original call can carry the password onward.
            raise ConfigurationError(
                f"invalid Redis URL {redact_url(url)}: {exc}", url=redact_url(url)
            ) from None
        return cls(Redis.from_pool(pool), url=url, prefix=prefix)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and PING; raises :class:`StorageError` naming host and port if that fails.

        Calling it again on a started service PINGs again. After a failure the service
        holds no open sockets and ``start()`` may be retried; after :meth:`close` it raises.
        """
        if self._closed:
            raise StorageError(f"Redis service for {self._endpoint} is closed", url=self._url)
        try:
            answer = await self._client.ping()
        except Exception as exc:
            # Drop half-open sockets so a failed start leaves nothing behind.
            await self._disconnect_quietly()
            reason = self._describe(exc)
            # The reason is already in the message; not chaining keeps the library's
            # exception (and anything it may hold about the URL) out of tracebacks.
            raise StorageError(
                f"cannot connect to Redis at {self._endpoint}: {reason}",
                url=self._url,
                endpoint=self._endpoint,
            ) from None
        if answer is not True:
            await self._disconnect_quietly()
            raise StorageError(
                f"Redis at {self._endpoint} answered PING with {answer!r}",
                url=self._url,
                endpoint=self._endpoint,
            )
        self._started = True

    async def health(self, timeout_s: float = 2.0) -> HealthStatus:
        """PING within ``timeout_s`` seconds; never raises (cancellation aside).

        ``ok`` is false on a closed service, an unreachable server or a slow answer;
        ``detail`` then says why, without secrets.
        """
        if self._closed:
            return HealthStatus(False, 0.0, f"Redis service for {self._endpoint} is closed")
        began = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                answer = await self._client.ping()
        except TimeoutError:
            return HealthStatus(
                False,
                _elapsed_ms(began),
                f"Redis at {self._endpoint} did not answer PING within {timeout_s:g}s",
            )
        except Exception as exc:
            return HealthStatus(
                False, _elapsed_ms(began), f"Redis at {self._endpoint}: {self._describe(exc)}"
            )
        latency = _elapsed_ms(began)
        if answer is not True:
            return HealthStatus(False, latency, f"Redis at {self._endpoint} answered {answer!r}")
        return HealthStatus(True, latency, f"PONG from {self._endpoint}")

    async def close(self) -> None:
        """Close the client and disconnect every pooled connection; safe to call twice."""
        if self._closed:
            return
        # Flag first: a concurrent second close returns at once instead of closing twice.
        self._closed = True
        self._started = False
        await self._client.aclose(close_connection_pool=True)

    async def __aenter__(self) -> RedisService:
        """Start the service; if that fails the pool is closed before the error propagates."""
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the service."""
        await self.close()

    # -- use -----------------------------------------------------------------------------

    @property
    def client(self) -> Redis:
        """The underlying ``redis.asyncio.Redis``; raises :class:`StorageError` unless started."""
        if self._closed:
            raise StorageError(f"Redis service for {self._endpoint} is closed", url=self._url)
        if not self._started:
            raise StorageError(
                f"Redis service for {self._endpoint} is not started; await start() first",
                url=self._url,
            )
        return self._client

    @property
    def prefix(self) -> str:
        """The namespace every key of :meth:`key` starts with."""
        return self._prefix

    @property
    def url(self) -> str:
        """The URL with its password masked."""
        return self._url

    @property
    def endpoint(self) -> str:
        """``host:port`` (or socket path) of the server."""
        return self._endpoint

    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`close`."""
        return self._started

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def key(self, *parts: str | int) -> str:
        """The namespaced key ``<prefix>part1:part2...``, e.g. ``scribe:session:42``.

        Raises :class:`InvalidInput` for no parts or an empty part, which would make
        distinct keys collide.
        """
        if not parts:
            raise InvalidInput("a Redis key needs at least one part")
        texts = [str(p) for p in parts]
        if any(t == "" for t in texts):
            raise InvalidInput("Redis key parts must not be empty", parts=texts)
        return self._prefix + ":".join(texts)

    def __repr__(self) -> str:
        """Redacted URL, prefix and state; never the password."""
        state = "closed" if self._closed else "started" if self._started else "new"
        return f"RedisService(url={self._url!r}, prefix={self._prefix!r}, state={state})"

    # -- internals -----------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        """``Class: message`` of a library error with any form of the password masked."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    async def _disconnect_quietly(self) -> None:
        """Disconnect pooled sockets after a failure; a second failure here changes nothing."""
        try:
            await self._client.connection_pool.disconnect()
        except Exception:
            # The original failure is what the caller needs to see.
            return


def _elapsed_ms(began: float) -> float:
    """Milliseconds since ``began`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - began) * 1000.0
