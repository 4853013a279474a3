"""Fixed-window rate limits for the auth endpoints: in Redis, or in this process.

A window of ``window_s`` seconds starts at a key's first hit; the ``limit + 1``-th hit
inside it raises :class:`RateLimited` with the seconds until the window ends (the HTTP
layer sends them as ``Retry-After``). With Redis every replica shares the counts; the
in-process limiter serves the embedded default, which runs as one process.
"""

from __future__ import annotations

import hashlib
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from errors import RateLimited
from memory.redis import RedisService, redis_errors

_MAX_TRACKED_KEYS = 100_000
"""Past this many keys the in-process limiter drops finished windows (bounded memory)."""


def limit_key(*parts: str) -> str:
    """A compact, fixed-length key for ``parts`` (IPs, emails) that shows none of them."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


class RateLimiter(ABC):
    """Counts hits per key and refuses those over the limit."""

    def __init__(self, limit: int, window_s: float) -> None:
        """Allow ``limit`` hits per key in each window of ``window_s`` seconds."""
        self.limit = limit
        self.window_s = window_s

    @abstractmethod
    async def hit(self, bucket: str, key: str) -> None:
        """Count one hit of ``key`` in ``bucket``; :class:`RateLimited` when over the limit."""

    def _refuse(self, bucket: str, retry_after: float) -> RateLimited:
        return RateLimited(
            f"too many {bucket} attempts; retry in {max(1, math.ceil(retry_after))} s",
            retry_after=round(retry_after, 3),
            limit=self.limit,
            window_s=self.window_s,
        )


class MemoryRateLimiter(RateLimiter):
    """Fixed windows kept in a dict; exact within one process, not shared between them."""

    def __init__(
        self, limit: int, window_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """See :class:`RateLimiter`; ``clock`` is monotonic seconds."""
        super().__init__(limit, window_s)
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    async def hit(self, bucket: str, key: str) -> None:
        """See :meth:`RateLimiter.hit` (no await inside: atomic on the event loop)."""
        now = self._clock()
        name = f"{bucket}:{key}"
        started, count = self._windows.get(name, (now, 0))
        if now - started >= self.window_s:
            started, count = now, 0
        count += 1
        self._windows[name] = (started, count)
        if len(self._windows) > _MAX_TRACKED_KEYS:
            self._forget_finished(now)
        if count > self.limit:
            raise self._refuse(bucket, started + self.window_s - now)

    def _forget_finished(self, now: float) -> None:
        finished = [k for k, (s, _) in self._windows.items() if now - s >= self.window_s]
        for name in finished:
            del self._windows[name]


# INCR and PEXPIRE in one step: a crash between them would leave a counter that never expires.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RedisRateLimiter(RateLimiter):
    """Fixed windows as Redis counters that expire with their window; shared by replicas."""

    def __init__(self, redis: RedisService, limit: int, window_s: float) -> None:
        """Count in the started ``redis`` service; see :class:`RateLimiter`."""
        super().__init__(limit, window_s)
        self._redis = redis

    async def hit(self, bucket: str, key: str) -> None:
        """See :meth:`RateLimiter.hit`."""
        window_ms = max(1, int(self.window_s * 1000))
        with redis_errors("auth Redis", "count a rate-limited request"):
            count, ttl_ms = await self._redis.client.eval(
                _HIT, 1, self._redis.key("auth", "rl", bucket, key), str(window_ms)
            )
        if int(count) > self.limit:
            raise self._refuse(bucket, int(ttl_ms) / 1000.0)
