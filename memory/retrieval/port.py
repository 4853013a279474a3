"""The retrieval port: earlier passages of a novel, found by meaning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Passage:
    """One indexed passage of an accepted chapter."""

    novel_id: str
    chapter: int
    index: int
    text: str


@dataclass(frozen=True)
class PassageHit:
    """A passage and its similarity to the query (higher is closer)."""

    passage: Passage
    score: float


class PassageIndex(ABC):
    """Port for passage retrieval, isolated per novel."""

    @abstractmethod
    async def setup(self) -> None:
        """Create collections and payload indexes. Idempotent."""

    @abstractmethod
    async def index_chapter(self, novel_id: str, chapter: int, passages: Sequence[str]) -> int:
        """Replace the chapter's passages with these; returns how many were indexed."""

    @abstractmethod
    async def search(
        self, novel_id: str, query: str, *, before_chapter: int, limit: int = 5
    ) -> list[PassageHit]:
        """Passages of this novel from chapters ``< before_chapter``, best first."""

    @abstractmethod
    async def count(self, novel_id: str, chapter: int | None = None) -> int:
        """How many passages the novel (or one of its chapters) has indexed."""

    @abstractmethod
    async def drop_novel(self, novel_id: str) -> None:
        """Remove every passage of the novel."""

    @abstractmethod
    async def close(self) -> None:
        """Release the client."""
