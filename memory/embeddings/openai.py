"""Embeddings from any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama...).

The SDK's own retries are switched off so that exactly one retry policy applies: ours,
with exponential backoff on transient failures only (429, 5xx, timeouts, connection
errors). Vectors are requested as floats because many compatible servers do not
implement the SDK's default base64 encoding.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import openai
from openai import AsyncOpenAI

from errors import ConfigurationError, StorageError
from memory.embeddings.port import Embedder

_TRANSIENT: tuple[type[Exception], ...] = (
    openai.RateLimitError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.InternalServerError,
)
# Retrying these cannot help: the key, the model name or the URL is wrong.
_MISCONFIGURED: tuple[type[Exception], ...] = (
    openai.AuthenticationError,
    openai.PermissionDeniedError,
    openai.NotFoundError,
)


def _retry_after(error: Exception) -> float | None:
    """Seconds the server asked us to wait (``Retry-After``), if it said so."""
    if not isinstance(error, openai.APIStatusError):
        return None
    value: str | None = error.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIEmbedder(Embedder):
    """An :class:`Embedder` backed by an OpenAI-compatible embeddings API.

    ``dimension`` is configured, not discovered: every returned vector is checked against
    it and a mismatch raises :class:`ConfigurationError` (an index built for one size must
    never receive another). Texts are sent in batches of ``batch_size``. Transient failures
    are retried up to ``max_attempts`` times in total with exponential backoff starting at
    ``backoff_base`` seconds (capped at ``backoff_max``); if the last attempt fails too,
    :class:`StorageError` is raised. ``send_dimensions`` passes ``dimensions`` to the API
    (only for models that can shorten their vectors, such as text-embedding-3).
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dimension: int,
        api_key: str | None = None,
        batch_size: int = 64,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        timeout: float = 60.0,
        send_dimensions: bool = False,
        client: AsyncOpenAI | None = None,
    ) -> None:
        if not model:
            raise ConfigurationError("an embedding model name is required", base_url=base_url)
        if dimension < 1:
            raise ConfigurationError("embedding dimension must be positive", dimension=dimension)
        if batch_size < 1 or max_attempts < 1:
            raise ConfigurationError(
                "batch_size and max_attempts must be positive",
                batch_size=batch_size,
                max_attempts=max_attempts,
            )
        self.name = f"openai-{model}-{dimension}"
        self.dimension = dimension
        self.model = model
        self.base_url = base_url
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.send_dimensions = send_dimensions
        # A placeholder key keeps the SDK from falling back to OPENAI_API_KEY: settings are
        # read at the entry point only, and local servers usually need no key at all.
        self._client = client or AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=0
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; raises StorageError or ConfigurationError."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(await self._embed_batch(list(texts[start : start + self.batch_size])))
        return vectors

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.close()

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        # The API rejects empty strings; a blank text still deserves a (meaningless) vector.
        inputs = [text if text.strip() else " " for text in batch]
        response = await self._call_with_retry(inputs)
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise StorageError(
                "embedding endpoint returned the wrong number of vectors",
                model=self.model,
                expected=len(batch),
                received=len(data),
            )
        vectors = [list(item.embedding) for item in data]
        for vector in vectors:
            if len(vector) != self.dimension:
                raise ConfigurationError(
                    f"embedding model {self.model!r} returned vectors of length {len(vector)}, "
                    f"but the configured dimension is {self.dimension}",
                    model=self.model,
                    expected=self.dimension,
                    received=len(vector),
                )
        return vectors

    async def _call_with_retry(self, inputs: list[str]) -> openai.types.CreateEmbeddingResponse:
        for attempt in range(1, self.max_attempts + 1):
            try:
                if self.send_dimensions:
                    return await self._client.embeddings.create(
                        input=inputs,
                        model=self.model,
                        encoding_format="float",
                        dimensions=self.dimension,
                    )
                return await self._client.embeddings.create(
                    input=inputs, model=self.model, encoding_format="float"
                )
            except _TRANSIENT as error:
                if attempt == self.max_attempts:
                    raise StorageError(
                        f"embedding endpoint failed after {attempt} attempts: {error}",
                        model=self.model,
                        base_url=self.base_url,
                        attempts=attempt,
                    ) from error
                await asyncio.sleep(self._delay(attempt, error))
            except _MISCONFIGURED as error:
                raise ConfigurationError(
                    f"embedding endpoint rejected the request: {error}",
                    model=self.model,
                    base_url=self.base_url,
                ) from error
            except openai.OpenAIError as error:
                raise StorageError(
                    f"embedding request failed: {error}", model=self.model, base_url=self.base_url
                ) from error
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _delay(self, attempt: int, error: Exception) -> float:
        asked = _retry_after(error)
        if asked is not None:
            return min(asked, self.backoff_max)
        delay = min(self.backoff_base * 2.0 ** (attempt - 1), self.backoff_max)
        # Jitter spreads out several workers that were throttled at the same moment.
        return delay * (1.0 + 0.25 * random.random())
