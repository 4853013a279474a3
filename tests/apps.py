"""The real app started in-process for API tests: embedded default, short chapters.

``started_app`` runs :func:`server.app.create_app` inside its lifespan (so backends,
workers and the event bus are the real ones) and carries requests through
``httpx.ASGITransport``; ``register`` makes a fresh user and returns their bearer header.
``served`` runs the app under uvicorn on a free loopback port, for clients that speak
real HTTP (the official ``langgraph-sdk``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from server.app import create_app
from server.services import AppServices
from server.settings import Settings, load_settings
from tests.services.base import free_port

PASSWORD = "correct horse battery staple"
BASE_URL = "http://scribe.test"
APP_ENV_PREFIXES = ("SCRIBE_", "OPENAI_", "LANGGRAPH_", "LANGSMITH_", "LANGCHAIN_")
APP_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "QDRANT_URL", "NEO4J_URL")


@dataclass(frozen=True)
class StartedApp:
    """The app inside its lifespan, its transport and a plain client of it."""

    app: FastAPI
    transport: httpx.ASGITransport
    http: httpx.AsyncClient

    @property
    def services(self) -> AppServices:
        """The app's open services."""
        services: AppServices = self.app.state.services
        return services


@asynccontextmanager
async def started_app(
    data_dir: Path, *, timeout_s: float = 120.0, **overrides: Any
) -> AsyncIterator[StartedApp]:
    """The app on the embedded default in ``data_dir``, started, with fast workers."""
    with pytest.MonkeyPatch.context() as patch:
        # Module fixtures run before the autouse hermetic_env: strip app settings here too.
        for name in list(os.environ):
            if name.startswith("SCRIBE_TEST_"):
                continue
            if name.startswith(APP_ENV_PREFIXES) or name in APP_ENV_NAMES:
                patch.delenv(name, raising=False)
        settings = load_settings(
            **{
                "data_dir": data_dir,
                "jwt_secret": "api-test-secret-" + "x" * 40,
                "auth_rate_limit": 100_000,
                "words_per_chapter": 100,
                "worker_concurrency": 4,
                "worker_poll_s": 0.05,
                "heartbeat_s": 0.5,
                "sse_heartbeat_s": 0.5,
                **overrides,
            }
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url=BASE_URL, timeout=timeout_s
            ) as http:
                yield StartedApp(app, transport, http)


async def register(http: httpx.AsyncClient, name: str = "user") -> dict[str, str]:
    """Register and log in a fresh user; the bearer header of their access token."""
    email = f"{name}-{uuid.uuid4().hex[:10]}@example.com"
    registered = await http.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    login = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@contextlib.contextmanager
def served(settings: Settings, start_timeout_s: float = 120.0) -> Iterator[str]:
    """``scribe serve``'s app under uvicorn on a free loopback port; yields its base URL.

    Runs in a background thread, lifespan included; leaving stops it, so its stores close.
    """
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, lifespan="on", log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
