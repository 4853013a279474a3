"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from errors import ScribeError
from server.deps import Services
from server.runs.worker import Worker

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
    except ScribeError as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc.message}"[:300]}
    except Exception as exc:
        # A driver's own text can quote connection details: its class says enough.
        return {"ok": False, "detail": type(exc).__name__}
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
    workers = services.runs.workers
    if workers:
        checks["workers"] = _workers_check(workers, services.runs.engine.options.lease_s)
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


def _workers_check(workers: list[Worker], lease_s: float) -> dict[str, object]:
    """Not ready once a worker could not claim runs for longer than a lease: runs queued
    meanwhile would wait with no one to execute them."""
    now = asyncio.get_running_loop().time()
    failing = [
        now - w.claim_failing_since
        for w in workers
        if w.claim_failing_since is not None and now - w.claim_failing_since > lease_s
    ]
    if failing:
        return {
            "ok": False,
            "detail": f"workers cannot claim runs for {max(failing):.0f} s (the queue's "
            "database is out of reach)",
        }
    return {"ok": True, "executing": sum(len(w.executing) for w in workers)}
