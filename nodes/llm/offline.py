"""The offline chat model: answers InfiniteScribe tasks with no network and no API key.

It reads the task and its input back from the messages (:func:`parse_request`),
validates the input with the task's model and dispatches to a deterministic generator:
the same request always gets the same answer, seeded from a blake2b digest of the task
and its canonical input. Structured tasks are answered with JSON, the draft with prose.
Answers stream word by word so LangGraph's ``"messages"`` mode sees tokens arrive.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import BaseModel, ValidationError
from typing_extensions import override

from nodes import schemas
from nodes.llm import offline_zh
from nodes.llm.names import OFFLINE_VARIANT
from nodes.llm.offline_prose import chapter_claims, chapter_draft, chapter_review
from nodes.llm.offline_story import chapter_beats, story_plan, world_seed
from nodes.llm.tasks import TASKS, parse_request

UNDERSTOOD = (
    "I am the InfiniteScribe offline model. I only understand InfiniteScribe task "
    "requests (a 'Task: <name>' line followed by a JSON input block), so I cannot answer "
    "this message. Configure a model endpoint for free-form chat."
)

_CHUNK = re.compile(r"\s*\S+\s*|\s+")
_MAX_CHUNK = 24


def _story_plan(inputs: BaseModel) -> BaseModel | str:
    assert isinstance(inputs, schemas.StoryPlanInput)
    return story_plan(inputs)


def _seed_of(inputs: BaseModel) -> schemas.WorldSeed:
    """The offline world of a book; deterministic, so the three world tasks of one book
    answer parts of the same world."""
    assert isinstance(
        inputs, (schemas.WorldSeedInput, schemas.WorldCastInput, schemas.WorldLinksInput)
    )
    book = schemas.WorldSeedInput(
        language=inputs.language, premise=inputs.premise, bible=inputs.bible, outline=inputs.outline
    )
    return offline_zh.world_seed(book) if _is_zh(book.language) else world_seed(book)


def _is_zh(language: str | None) -> bool:
    return (language or "en").split("-")[0] == "zh"


def _world_places(inputs: BaseModel) -> BaseModel | str:
    seed = _seed_of(inputs)
    return schemas.WorldPlaces(
        locations=seed.locations, factions=seed.factions, items=seed.items, rules=seed.rules
    )


def _world_cast(inputs: BaseModel) -> BaseModel | str:
    return schemas.WorldCast(characters=_seed_of(inputs).characters)


def _world_links(inputs: BaseModel) -> BaseModel | str:
    seed = _seed_of(inputs)
    return schemas.WorldLinks(relationships=seed.relationships, setups=seed.setups)


def _chapter_beats(inputs: BaseModel) -> BaseModel | str:
    assert isinstance(inputs, schemas.BeatsInput)
    return chapter_beats(inputs)


def _chapter_draft(inputs: BaseModel) -> BaseModel | str:
    assert isinstance(inputs, schemas.DraftInput)
    return chapter_draft(inputs)


def _chapter_review(inputs: BaseModel) -> BaseModel | str:
    assert isinstance(inputs, schemas.ReviewInput)
    return chapter_review(inputs)


def _chapter_claims(inputs: BaseModel) -> BaseModel | str:
    assert isinstance(inputs, schemas.ClaimsInput)
    return chapter_claims(inputs)


def _claims_part(
    task: str, read: Callable[[schemas.ClaimsInput], schemas.ChapterClaims]
) -> Callable[[BaseModel], BaseModel | str]:
    """A part of the claims (``schemas.CLAIM_PARTS``): the whole reading, cut to the
    part's fields, so the parts of one draft add up to the one-call answer."""
    part = schemas.CLAIM_PARTS[task]

    def generate(inputs: BaseModel) -> BaseModel | str:
        assert isinstance(inputs, schemas.ClaimsInput)
        return part.model_validate(read(inputs).model_dump(include=set(part.model_fields)))

    return generate


GENERATORS: dict[str, Callable[[BaseModel], BaseModel | str]] = {
    "story_plan": _story_plan,
    "world_places": _world_places,
    "world_cast": _world_cast,
    "world_links": _world_links,
    "chapter_beats": _chapter_beats,
    "chapter_draft": _chapter_draft,
    "chapter_claims": _chapter_claims,
    **{task: _claims_part(task, chapter_claims) for task in schemas.CLAIM_PARTS},
    "chapter_review": _chapter_review,
}


ZH_GENERATORS: dict[str, Callable[[Any], BaseModel | str]] = {
    "story_plan": offline_zh.story_plan,
    "chapter_beats": offline_zh.chapter_beats,
    "chapter_draft": offline_zh.chapter_draft,
    "chapter_claims": offline_zh.chapter_claims,
    **{task: _claims_part(task, offline_zh.chapter_claims) for task in schemas.CLAIM_PARTS},
    "chapter_review": offline_zh.chapter_review,
}
"""The same tasks answered in Chinese, for books whose language is ``zh`` (the world
tasks share :func:`_seed_of`, which builds a Chinese world for them)."""


def answer(messages: list[BaseMessage], variant: str | None = None) -> str:
    """The offline model's reply to ``messages``: JSON, prose or a short refusal.

    A ``variant`` answers differently (every seed is salted with it), still deterministically.

    A repair request (the answer was malformed) gets the same, valid answer again: the
    generators are deterministic and always produce schema-valid output.
    """
    try:
        parsed = parse_request(messages)
    except ValueError:
        # A task line with a JSON block that does not parse is as foreign as no task at all.
        parsed = None
    if parsed is None or parsed.task not in TASKS or parsed.task not in GENERATORS:
        return UNDERSTOOD
    spec = TASKS[parsed.task]
    try:
        inputs = spec.input.model_validate(parsed.inputs)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:5]
        )
        return (
            f"The offline model cannot do task {parsed.task!r}: its input is invalid ({problems})."
        )
    reset = OFFLINE_VARIANT.set(variant)
    generators = ZH_GENERATORS if _is_zh(getattr(inputs, "language", None)) else GENERATORS
    try:
        result = generators.get(parsed.task, GENERATORS[parsed.task])(inputs)
    finally:
        OFFLINE_VARIANT.reset(reset)
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return result


def estimate_tokens(text: str) -> int:
    """A rough token count: 1.3 tokens per whitespace-separated word."""
    return round(len(text.split()) * 1.3)


def _prompt_text(messages: list[BaseMessage]) -> str:
    return "\n".join(m.content if isinstance(m.content, str) else str(m.content) for m in messages)


def _usage(messages: list[BaseMessage], text: str) -> UsageMetadata:
    prompt, output = estimate_tokens(_prompt_text(messages)), estimate_tokens(text)
    return UsageMetadata(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)


def chunks_of(text: str) -> list[str]:
    """``text`` cut into word-sized pieces that concatenate back to exactly ``text``.

    Compact JSON has few spaces, so long runs are cut every few characters as well.
    """
    pieces: list[str] = []
    for match in _CHUNK.finditer(text):
        piece = match.group(0)
        while len(piece) > _MAX_CHUNK:
            pieces.append(piece[:_MAX_CHUNK])
            piece = piece[_MAX_CHUNK:]
        if piece:
            pieces.append(piece)
    return pieces


class OfflineChatModel(BaseChatModel):
    """A deterministic chat model for InfiniteScribe tasks that needs no network.

    ``tokens_per_second`` slows answers to a fixed rate, to benchmark streaming; by
    default answers come back as fast as they are generated.
    """

    tokens_per_second: float | None = None
    """Simulated generation speed; ``None`` means no delay."""
    model_name: str = "offline"
    variant: str | None = None
    """``offline:<variant>``: a differently seeded but equally deterministic model."""

    @property
    @override
    def _llm_type(self) -> str:
        return "offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "variant": self.variant,
            "tokens_per_second": self.tokens_per_second,
        }

    def _delay(self, tokens: int) -> float:
        if not self.tokens_per_second or self.tokens_per_second <= 0:
            return 0.0
        return tokens / self.tokens_per_second

    def _result(self, messages: list[BaseMessage], text: str) -> ChatResult:
        message = AIMessage(
            content=text,
            usage_metadata=_usage(messages, text),
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer the request in one piece."""
        text = answer(messages, self.variant)
        delay = self._delay(estimate_tokens(text))
        if delay:
            time.sleep(delay)
        return self._result(messages, text)

    @override
    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Answer the request in one piece, without blocking the event loop on delays."""
        text = answer(messages, self.variant)
        delay = self._delay(estimate_tokens(text))
        if delay:
            await asyncio.sleep(delay)
        return self._result(messages, text)

    def _chunks(self, messages: list[BaseMessage], text: str) -> Iterator[ChatGenerationChunk]:
        pieces = chunks_of(text) or [""]
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            message = AIMessageChunk(content=piece)
            if i == last:
                # Usage is reported once, on the final chunk, so aggregation counts it once.
                message = AIMessageChunk(
                    content=piece,
                    usage_metadata=_usage(messages, text),
                    response_metadata={"model_name": self.model_name},
                    chunk_position="last",
                )
            yield ChatGenerationChunk(message=message)

    @override
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Stream the answer word by word."""
        text = answer(messages, self.variant)
        pause = self._delay(1)
        for i, chunk in enumerate(self._chunks(messages, text)):
            if pause and i:
                time.sleep(pause)
            yield chunk

    @override
    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Stream the answer word by word, yielding to the event loop between chunks."""
        text = answer(messages, self.variant)
        pause = self._delay(1)
        for i, chunk in enumerate(self._chunks(messages, text)):
            if i:
                await asyncio.sleep(pause)
            yield chunk
