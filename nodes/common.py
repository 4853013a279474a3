"""Helpers shared by the agent nodes: keys for names, progress events, deterministic ids."""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import Any

from langgraph.runtime import Runtime

from errors import StorageError
from nodes.context import ScribeContext

_NAMESPACE = uuid.UUID("5f1d7c1e-7d0b-4f7e-9a53-2b1c0f6f4a10")
_NON_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """A stable world-memory key for a name: ``"Mara  Venn!"`` → ``"mara-venn"``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _NON_SLUG.sub("-", ascii_name.lower()).strip("-")
    return slug or "entity-" + uuid.uuid5(_NAMESPACE, name).hex[:8]


def stable_id(*parts: object) -> str:
    """A deterministic UUID for a tuple of parts, so a node replayed after a crash writes
    the same rows again instead of new ones."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def novel_id_of(state: dict[str, Any] | Any) -> str:
    """The session id recorded by the intake node."""
    novel_id = state.get("novel_id")
    if not novel_id:
        raise StorageError("graph state has no novel_id; the run did not start at intake")
    return str(novel_id)


def language_of(state: dict[str, Any] | Any) -> str | None:
    """The book's language tag for a task input: ``None`` for English (the default of
    every prompt, and of books begun before languages were recorded)."""
    language = state.get("language")
    if not isinstance(language, str) or language.split("-")[0] == "en":
        return None
    return language


CHAPTER_START: dict[str, Any] = {
    "draft_id": None,
    "drafts": 0,
    "revision": 0,
    "verdict": None,
    "notes": None,
    "chapter_gate": None,
}
"""The per-chapter state fields as a chapter starts (set by its plan or the move to it)."""


def progress(runtime: Runtime[ScribeContext], agent: str, step: str, **data: Any) -> None:
    """Emit a ``custom`` stream event describing what an agent is doing now."""
    runtime.stream_writer({"agent": agent, "step": step, **data})
