"""Application data: sessions (novels), chapters and their versions.

Chapter texts live here, not in graph state: the graph holds version ids only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

NovelStatus = Literal["running", "paused", "completed", "failed"]

NOVEL_STATUS_MOVES: Mapping[NovelStatus, frozenset[NovelStatus]] = {
    "running": frozenset({"paused", "completed", "failed"}),
    "paused": frozenset({"running"}),
    "failed": frozenset({"running"}),
    "completed": frozenset(),
}
"""A novel's status, as a state machine: a run starts (``running``), then stops at a gate,
a budget or a cancel (``paused``), fails (``failed``) or writes the last chapter
(``completed``, for good). Paused and failed novels run again when resumed."""


def status_move(current: NovelStatus, wanted: NovelStatus) -> bool:
    """Whether a novel may go from ``current`` to ``wanted`` (staying put is allowed)."""
    return wanted == current or wanted in NOVEL_STATUS_MOVES[current]


VersionKind = Literal["draft", "edit"]


@dataclass(frozen=True)
class NovelRecord:
    """A writing session; its id is also the LangGraph thread id."""

    id: str
    premise: str
    chapters: int
    genre: str | None
    title: str | None
    status: NovelStatus
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ChapterVersionRecord:
    """One stored text of a chapter: a writer draft or an author edit."""

    id: str
    novel_id: str
    number: int
    version: int
    kind: VersionKind
    title: str
    text: str
    created_at: datetime
    claims: Mapping[str, Any] | None = None
    """What the reviewer read in this text (``nodes.schemas.ChapterClaims`` as JSON)."""
    findings: Sequence[Mapping[str, Any]] | None = None
    """What the rules found in it (``nodes.integrity.Finding`` as JSON), majors first."""


@dataclass(frozen=True)
class ChapterRecord:
    """An accepted chapter and the version currently standing for it."""

    novel_id: str
    number: int
    title: str
    summary: str
    current_version_id: str
    text: str
    word_count: int
    updated_at: datetime
    findings: Sequence[Mapping[str, Any]] | None = None
    """The findings of the standing version's review (``None``: never reviewed)."""


class AppStore(ABC):
    """Port for app data. One SQL adapter serves SQLite and Postgres."""

    @abstractmethod
    async def setup(self) -> None:
        """Bring the schema to the latest migration. Idempotent."""

    @abstractmethod
    async def create_novel(
        self,
        novel_id: str,
        premise: str,
        chapters: int,
        genre: str | None,
        *,
        status: NovelStatus = "running",
        title: str | None = None,
    ) -> NovelRecord:
        """Create a session (``running`` unless told otherwise); Conflict if the id exists."""

    @abstractmethod
    async def get_novel(self, novel_id: str) -> NovelRecord:
        """Raises NotFound for an unknown id."""

    @abstractmethod
    async def list_novels(self) -> list[NovelRecord]:
        """All sessions, newest first."""

    @abstractmethod
    async def update_novel(
        self,
        novel_id: str,
        *,
        status: NovelStatus | None = None,
        title: str | None = None,
        error: str | None = None,
    ) -> NovelRecord:
        """Change status, title or error text (``error`` is cleared when status is not failed)."""

    @abstractmethod
    async def update_request(
        self, novel_id: str, *, premise: str, chapters: int, genre: str | None
    ) -> NovelRecord:
        """Replace what the session asks for (premise, chapter count, genre); meant for a
        session whose writing has not started. Raises NotFound for an unknown id."""

    @abstractmethod
    async def delete_novel(self, novel_id: str) -> None:
        """Delete a session and its chapters and versions."""

    @abstractmethod
    async def save_version(
        self, version_id: str, novel_id: str, number: int, kind: VersionKind, title: str, text: str
    ) -> ChapterVersionRecord:
        """Store a chapter text under a caller-chosen id. Saving the same id again
        returns the stored version unchanged (idempotent for crash-replayed nodes).
        ``version`` numbers count up per chapter."""

    @abstractmethod
    async def get_version(self, version_id: str) -> ChapterVersionRecord:
        """Raises NotFound for an unknown id."""

    @abstractmethod
    async def save_review(
        self,
        version_id: str,
        claims: Mapping[str, Any],
        findings: Sequence[Mapping[str, Any]],
    ) -> None:
        """Store the claims read in a version and the findings they gave, replacing any
        stored before (a draft reviewed again). NotFound for an unknown id."""

    @abstractmethod
    async def list_versions(self, novel_id: str, number: int) -> list[ChapterVersionRecord]:
        """Every version of one chapter, oldest first."""

    @abstractmethod
    async def accept_chapter(
        self, novel_id: str, number: int, version_id: str, title: str, summary: str
    ) -> ChapterRecord:
        """Make ``version_id`` the chapter's standing text (insert or update; idempotent)."""

    @abstractmethod
    async def get_chapter(self, novel_id: str, number: int) -> ChapterRecord:
        """Raises NotFound when the chapter has not been accepted."""

    @abstractmethod
    async def list_chapters(self, novel_id: str) -> list[ChapterRecord]:
        """Accepted chapters in order."""

    @abstractmethod
    async def close(self) -> None:
        """Dispose of the engine."""
