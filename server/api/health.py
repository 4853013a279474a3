"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from server.deps import Services

router = APIRouter(tags=["health"])

READY_TIMEOUT_S = 3.0


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def _probe(check: Callable[[], Awaitable[object]]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), READY_TIMEOUT_S)
    except Exception as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@router.get("/ready")
async def ready(services: Services) -> JSONResponse:
    """Readiness: every backend answers. 503 when one does not."""
    backends = services.backends
    store = backends.store

    async def database() -> None:
        await store.list_novels()

    async def world() -> None:
        await backends.context.world.lookup("00000000-0000-0000-0000-000000000000", "ready")

    async def passages() -> None:
        await backends.context.passages.count("00000000-0000-0000-0000-000000000000")

    async def checkpoints() -> None:
        await backends.checkpointer.aget_tuple({"configurable": {"thread_id": "ready-probe"}})

    checks: dict[str, dict[str, object]] = {
        "database": await _probe(database),
        "world": await _probe(world),
        "passages": await _probe(passages),
        "checkpoints": await _probe(checkpoints),
    }
    if services.redis is not None:
        status = await services.redis.health()
        checks["redis"] = {
            "ok": status.ok,
            "latency_ms": status.latency_ms,
            "detail": status.detail,
        }
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
