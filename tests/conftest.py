"""Shared fixtures: hermetic settings and open embedded backends in a temporary folder."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.backends import Backends, open_backends
from server.settings import Settings, load_settings

_ENV_PREFIXES = ("SCRIBE_", "OPENAI_")
_ENV_NAMES = ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY")


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's model keys or service URLs."""
    for name in list(os.environ):
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
