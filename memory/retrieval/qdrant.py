"""The Qdrant passage index: one collection per embedder, one tenant (novel) per payload key.

Works against a Qdrant server (``url``) or Qdrant's local mode (``path``: pure Python,
stored on disk, no server). Only features both support are used; payload indexes exist
only on a server, so local mode skips creating them (the client would warn on every run).

Local mode holds an exclusive file lock on its directory: only one client per path may be
open at a time, in the whole machine as well as within one process. Open one
:class:`QdrantPassageIndex` per path and share it; :meth:`close` it before reopening.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

from errors import ConfigurationError, StorageError
from memory.embeddings.port import Embedder
from memory.retrieval.port import Passage, PassageHit, PassageIndex

# Fixed namespace so point ids are the same in every process and on every machine.
POINT_NAMESPACE = uuid.UUID("5b0c6a3e-2f7d-4c1e-9a57-8e2d1f4b6c90")

# Errors the client raises for a failed or refused store operation. Local mode reports a
# missing collection as ValueError and a closed client as RuntimeError.
_STORE_ERRORS: tuple[type[Exception], ...] = (
    ApiException,
    httpx.HTTPError,
    ValueError,
    RuntimeError,
    OSError,
)


def collection_name(embedder: Embedder) -> str:
    """The collection that holds vectors of this embedder, e.g. ``passages__hashing-...``."""
    return "passages__" + re.sub(r"[^A-Za-z0-9_-]+", "_", embedder.name)


def point_id(novel_id: str, chapter: int, index: int) -> str:
    """Deterministic point id, so re-indexing a chapter overwrites rather than duplicates."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{novel_id}/{chapter}/{index}"))


def _novel_filter(novel_id: str, *conditions: models.Condition) -> models.Filter:
    return models.Filter(
        must=[
            models.FieldCondition(key="novel_id", match=models.MatchValue(value=novel_id)),
            *conditions,
        ]
    )


def _chapter_is(chapter: int) -> models.FieldCondition:
    return models.FieldCondition(key="chapter", match=models.MatchValue(value=chapter))


@asynccontextmanager
async def _store(operation: str, collection: str) -> AsyncIterator[None]:
    """Turn client failures into StorageError naming the operation."""
    try:
        yield
    except _STORE_ERRORS as error:
        raise StorageError(
            f"qdrant {operation} failed on {collection}: {error}",
            operation=operation,
            collection=collection,
        ) from error


class QdrantPassageIndex(PassageIndex):
    """:class:`PassageIndex` on Qdrant (server or local mode), isolated per novel.

    Build it with :meth:`from_path` (local mode) or :meth:`from_url` (server), then call
    :meth:`setup`. Payload: ``novel_id``, ``chapter``, ``index``, ``text``.
    """

    def __init__(self, client: AsyncQdrantClient, embedder: Embedder, *, local: bool) -> None:
        self._client = client
        self._embedder = embedder
        self._local = local
        self.collection = collection_name(embedder)

    @classmethod
    def from_path(cls, path: str | Path, embedder: Embedder) -> QdrantPassageIndex:
        """Local mode stored under ``path`` (created if missing). One client per path."""
        try:
            client = AsyncQdrantClient(path=str(path))
        except RuntimeError as error:
            raise StorageError(
                f"qdrant storage {path} is already open (local mode allows one client per "
                "path; use a Qdrant server for concurrent access)",
                path=str(path),
            ) from error
        return cls(client, embedder, local=True)

    @classmethod
    def from_url(
        cls, url: str, embedder: Embedder, *, api_key: str | None = None, timeout: int = 30
    ) -> QdrantPassageIndex:
        """A Qdrant server over REST. Nothing is sent until the first call."""
        # The version check runs in a background thread and only warns; setup() reports an
        # unreachable or incompatible server as a StorageError instead.
        client = AsyncQdrantClient(
            url=url, api_key=api_key, timeout=timeout, check_compatibility=False
        )
        return cls(client, embedder, local=False)

    @classmethod
    def open(
        cls,
        embedder: Embedder,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> QdrantPassageIndex:
        """:meth:`from_url` when ``url`` is given, else :meth:`from_path`."""
        if url is not None and path is None:
            return cls.from_url(url, embedder, api_key=api_key)
        if path is not None and url is None:
            return cls.from_path(path, embedder)
        raise ConfigurationError("give exactly one of a qdrant path or url")

    async def setup(self) -> None:
        """Create the collection (cosine, embedder.dimension) and payload indexes.

        Idempotent. Raises ConfigurationError when the collection exists with another
        vector size or distance: its vectors came from a different embedding.
        """
        async with _store("setup", self.collection):
            if await self._client.collection_exists(self.collection):
                await self._check_existing()
                return
            try:
                await self._client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(
                        size=self._embedder.dimension, distance=models.Distance.COSINE
                    ),
                )
            except UnexpectedResponse:
                # Another process created it between our check and our create.
                if not await self._client.collection_exists(self.collection):
                    raise
                await self._check_existing()
                return
            if not self._local:
                await self._create_payload_indexes()

    async def _check_existing(self) -> None:
        info = await self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise ConfigurationError(
                f"collection {self.collection} uses named vectors; expected one unnamed vector",
                collection=self.collection,
            )
        if vectors.size != self._embedder.dimension or vectors.distance != models.Distance.COSINE:
            raise ConfigurationError(
                f"collection {self.collection} holds {vectors.size}-dimensional "
                f"{vectors.distance.value} vectors, but embedder {self._embedder.name} makes "
                f"{self._embedder.dimension}-dimensional cosine vectors",
                collection=self.collection,
                existing=vectors.size,
                expected=self._embedder.dimension,
            )
        if not self._local:
            await self._create_payload_indexes()

    async def _create_payload_indexes(self) -> None:
        # Creating an existing index is accepted by the server, so this stays idempotent.
        try:
            await self._client.create_payload_index(
                self.collection,
                "novel_id",
                field_schema=models.KeywordIndexParams(
                    type=models.KeywordIndexType.KEYWORD, is_tenant=True
                ),
            )
        except UnexpectedResponse as error:
            # Servers older than 1.11 do not know is_tenant; a plain keyword index still
            # serves the filter.
            if error.status_code is None or not 400 <= error.status_code < 500:
                raise
            await self._client.create_payload_index(
                self.collection, "novel_id", field_schema=models.PayloadSchemaType.KEYWORD
            )
        await self._client.create_payload_index(
            self.collection, "chapter", field_schema=models.PayloadSchemaType.INTEGER
        )

    async def index_chapter(self, novel_id: str, chapter: int, passages: Sequence[str]) -> int:
        """Replace the chapter's passages with these; returns how many were indexed.

        New passages are upserted first, then points of the chapter beyond the new count
        are deleted: search never sees the chapter half-empty, a shorter rewrite leaves no
        stale tail, and re-running after a crash converges to the same points.
        """
        vectors = await self._embedder.embed(list(passages)) if passages else []
        if len(vectors) != len(passages):
            raise StorageError(
                "embedder returned the wrong number of vectors",
                embedder=self._embedder.name,
                expected=len(passages),
                received=len(vectors),
            )
        points = [
            models.PointStruct(
                id=point_id(novel_id, chapter, index),
                vector=vector,
                payload={"novel_id": novel_id, "chapter": chapter, "index": index, "text": text},
            )
            for index, (text, vector) in enumerate(zip(passages, vectors, strict=True))
        ]
        async with _store("index_chapter", self.collection):
            if points:
                await self._client.upsert(self.collection, points=points, wait=True)
            stale = models.FieldCondition(key="index", range=models.Range(gte=len(points)))
            await self._client.delete(
                self.collection,
                points_selector=models.FilterSelector(
                    filter=_novel_filter(novel_id, _chapter_is(chapter), stale)
                ),
                wait=True,
            )
        return len(points)

    async def search(
        self, novel_id: str, query: str, *, before_chapter: int, limit: int = 5
    ) -> list[PassageHit]:
        """Passages of this novel from chapters ``< before_chapter``, best first."""
        if limit < 1 or not query.strip():
            return []
        [vector] = await self._embedder.embed([query])
        earlier = models.FieldCondition(key="chapter", range=models.Range(lt=before_chapter))
        async with _store("search", self.collection):
            response = await self._client.query_points(
                self.collection,
                query=vector,
                query_filter=_novel_filter(novel_id, earlier),
                limit=limit,
                with_payload=True,
            )
        return [
            PassageHit(passage=_passage(point.payload), score=float(point.score))
            for point in response.points
        ]

    async def count(self, novel_id: str, chapter: int | None = None) -> int:
        """How many passages the novel (or one of its chapters) has indexed (exact)."""
        conditions = () if chapter is None else (_chapter_is(chapter),)
        async with _store("count", self.collection):
            result = await self._client.count(
                self.collection, count_filter=_novel_filter(novel_id, *conditions), exact=True
            )
        return result.count

    async def drop_novel(self, novel_id: str) -> None:
        """Remove every passage of the novel."""
        async with _store("drop_novel", self.collection):
            await self._client.delete(
                self.collection,
                points_selector=models.FilterSelector(filter=_novel_filter(novel_id)),
                wait=True,
            )

    async def close(self) -> None:
        """Release the client (and, in local mode, the directory lock)."""
        async with _store("close", self.collection):
            await self._client.close()


def _passage(payload: dict[str, Any] | None) -> Passage:
    if payload is None:
        raise StorageError("qdrant returned a point without payload")
    try:
        return Passage(
            novel_id=str(payload["novel_id"]),
            chapter=int(payload["chapter"]),
            index=int(payload["index"]),
            text=str(payload["text"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise StorageError(f"qdrant point has a malformed payload: {error}") from error
