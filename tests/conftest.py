"""Shared fixtures: hermetic settings, embedded backends, and the real services.

Real services (PostgreSQL, Redis, and any other module under ``tests/services``) are
started once per session through :func:`use_service`: taken from their
``SCRIBE_TEST_<NAME>_URL`` variable, or installed and started locally. When one cannot be
had, its tests are skipped with the reason, or fail when ``SCRIBE_TEST_REQUIRE_SERVICES=1``
(CI). The terminal summary reports each service's startup time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from server.backends import Backends, open_backends
from server.settings import Settings, load_settings
from tests.services import llama, neo4j, postgres, redis
from tests.services.base import Running, ServiceUnavailable

_ENV_PREFIXES = ("SCRIBE_", "OPENAI_")
_ENV_NAMES = ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY")
# The suite's own switches (service URLs, REQUIRE_SERVICES) are not application settings.
_TEST_ENV_PREFIX = "SCRIBE_TEST_"
REQUIRE_ENV = "SCRIBE_TEST_REQUIRE_SERVICES"

StartService = Callable[[Path], Running]
UseService = Callable[[str, StartService], Running]

_STARTED = pytest.StashKey[dict[str, Running]]()
_UNAVAILABLE = pytest.StashKey[dict[str, str]]()


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's model keys or service URLs."""
    for name in list(os.environ):
        if name.startswith(_TEST_ENV_PREFIX):
            continue
        if name.startswith(_ENV_PREFIXES) or name in _ENV_NAMES:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings in a fresh data folder, with short chapters."""
    return load_settings(data_dir=tmp_path / "data", words_per_chapter=300)


@pytest.fixture
async def backends(settings: Settings) -> AsyncIterator[Backends]:
    """Open embedded backends (SQLite, SQL world memory, Qdrant local, offline model)."""
    async with open_backends(settings) as opened:
        yield opened


# --- real services --------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Prepare the registry of services this session started or could not get."""
    config.stash[_STARTED] = {}
    config.stash[_UNAVAILABLE] = {}


def services_required() -> bool:
    """True when a missing service must fail the run instead of skipping (CI)."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> NoReturn:
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this fails instead of skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def use_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UseService]:
    """Start a service once per session: ``use_service("neo4j", neo4j.start) -> Running``.

    The service is registered for the terminal summary and stopped when the session ends
    (also after Ctrl-C, which still tears fixtures down). A :class:`ServiceUnavailable`
    skips the requesting test, or fails it when ``SCRIBE_TEST_REQUIRE_SERVICES=1``; the
    failure is remembered so the other tests needing it do not try again.
    """
    started = request.config.stash[_STARTED]
    unavailable = request.config.stash[_UNAVAILABLE]
    mine: list[Running] = []

    def use(name: str, start: StartService) -> Running:
        if name in started:
            return started[name]
        if name in unavailable:
            _unavailable(f"{name} unavailable: {unavailable[name]}")
        try:
            running = start(tmp_path_factory.mktemp(name))
        except ServiceUnavailable as exc:
            unavailable[name] = str(exc)
            _unavailable(f"{name} unavailable: {exc}")
        started[name] = running
        mine.append(running)
        return running

    try:
        yield use
    finally:
        # Newest first, in case a later service depends on an earlier one.
        for running in reversed(mine):
            running.stop()


@pytest.fixture(scope="session")
def postgres_server(use_service: UseService) -> Running:
    """A PostgreSQL server; ``.url`` is a ``postgresql://`` URL allowed to create databases."""
    return use_service("postgres", postgres.start)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: Running) -> Iterator[str]:
    """A fresh database (``test_<uuid>``) for this session, as a ``postgresql://`` URL.

    Tests sharing it keep apart by their own unique ids; for an empty database per test
    use :func:`fresh_postgres_url`. Use ``to_sqlalchemy_url`` for SQLAlchemy.
    """
    url = postgres.create_database(postgres_server.url)
    try:
        yield url
    finally:
        postgres.drop_database(postgres_server.url, postgres.database_name(url))


@pytest.fixture
def fresh_postgres_url(postgres_server: Running) -> Iterator[str]:
    """An empty database of its own for one test (dropped afterwards)."""
    url = postgres.create_database(postgres_server.url)
    try:
        yield url
    finally:
        postgres.drop_database(postgres_server.url, postgres.database_name(url))


@pytest.fixture(scope="session")
def neo4j_server(use_service: UseService) -> Running:
    """A Neo4j server; ``.url`` is a ``bolt://`` URL, ``.extra`` has ``user`` and ``password``.

    Tests sharing it keep apart by their own novel ids (and clean up after themselves).
    """
    return use_service("neo4j", neo4j.start)


@pytest.fixture(scope="session")
def redis_server(use_service: UseService) -> Running:
    """A Redis server; ``.url`` is a ``redis://`` URL."""
    return use_service("redis", redis.start)


@pytest.fixture
def redis_url(redis_server: Running) -> Iterator[str]:
    """A Redis database for one test, empty at the start and flushed at the end.

    It is the database the server URL names (``/0`` when none): with
    ``SCRIBE_TEST_REDIS_URL`` point it at a database the tests may wipe.
    """
    redis.flush_database(redis_server.url)
    try:
        yield redis_server.url
    finally:
        redis.flush_database(redis_server.url)


@pytest.fixture
def redis_key_prefix(redis_server: Running) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (nothing else is)."""
    prefix = redis.new_key_prefix()
    try:
        yield prefix
    finally:
        redis.delete_keys(redis_server.url, prefix)


@pytest.fixture(scope="session")
def llm_server(use_service: UseService) -> Running:
    """An OpenAI-compatible LLM; ``.url`` is a base URL ending in ``/v1``.

    ``.extra`` has ``model`` (the name to request) and ``api_key``; a local
    ``llama-server`` (SmolLM2-135M) also has ``context_window`` and ``path`` (the GGUF).
    """
    return use_service("llm", llama.start)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line with each service's startup time (cold starts include the apt install)."""
    config = terminalreporter.config
    started = config.stash.get(_STARTED, {})
    unavailable = config.stash.get(_UNAVAILABLE, {})
    if not started and not unavailable:
        return
    parts = [_describe(running) for running in started.values()]
    parts += [f"{name} unavailable ({reason})" for name, reason in unavailable.items()]
    terminalreporter.write_line("services: " + ", ".join(parts))


def _describe(running: Running) -> str:
    where = "started" if running.started_here else "reached"
    text = f"{running.name} {where} in {running.startup_seconds:.2f} s"
    install = float(running.extra.get("install_seconds") or 0.0)
    if install > 0:
        text += f" (of which apt install {install:.1f} s)"
    source = running.extra.get("source")
    if source:
        text += f" via {source}"
    return text
