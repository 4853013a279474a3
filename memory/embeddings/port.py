"""The embeddings port: text in, fixed-length vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence


class Embedder(ABC):
    """Turns texts into vectors of a fixed ``dimension``.

    ``name`` identifies the model and its settings; vectors of different names are never
    mixed in one index.
    """

    name: str
    dimension: int

    @abstractmethod
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most embedders hold nothing
        """Release clients; a no-op unless the embedder holds one."""
