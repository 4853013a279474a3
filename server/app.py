"""The FastAPI application: lifespan wiring, error mapping and routers.

Routes stay thin: they validate input with pydantic, call services from
``server/deps.py`` and return pydantic models. Backends are opened once per process in
the lifespan, from settings built at the entry point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from errors import ConfigurationError
from server.errors import install_error_handlers
from server.services import AppServices
from server.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """Build the application for ``settings`` (nothing is opened until startup);
    ConfigurationError for settings it cannot serve (see :meth:`Settings.serve_problem`)."""
    problem = settings.serve_problem()
    if problem is not None:
        raise ConfigurationError(problem)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await AppServices.open(settings, stack)
            app.state.services = services
            # Workers last on the stack: stopped first, handing unfinished runs back.
            await services.runs.start_workers(stack, settings.worker_concurrency)
            yield

    app = FastAPI(
        title="InfiniteScribe",
        version="0.1.0",
        summary="Four AI agents write a novel; a LangGraph-compatible API drives them.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    from server.api import auth, health, langgraph, novels, runs

    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(langgraph.router)
    app.include_router(novels.router)
    app.include_router(runs.router)
    return app
