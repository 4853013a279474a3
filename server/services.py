"""Everything the HTTP layer needs, opened once per process."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from memory.redis import RedisService
from server.auth.service import AuthService
from server.backends import Backends, open_backends
from server.runs.service import RunService
from server.settings import Settings


@dataclass(frozen=True)
class AppServices:
    """Open backends and services of one API process."""

    settings: Settings
    backends: Backends
    redis: RedisService | None
    auth: AuthService
    runs: RunService
    """Threads and durable runs of the LangGraph-compatible API (workers start in the app)."""

    @classmethod
    async def open(cls, settings: Settings, stack: AsyncExitStack) -> AppServices:
        """Open every service named by ``settings``; ``stack`` closes them on shutdown."""
        backends = await stack.enter_async_context(open_backends(settings))
        redis: RedisService | None = None
        if settings.redis_url:
            redis = RedisService.from_url(settings.redis_url)
            stack.push_async_callback(redis.close)
            await redis.start()
        auth = await AuthService.open(settings, stack, redis=redis, engine=backends.engine)
        runs = await RunService.open(settings, backends, redis, stack)
        return cls(settings=settings, backends=backends, redis=redis, auth=auth, runs=runs)
