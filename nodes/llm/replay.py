"""Replay: answer model calls from a recorded run instead of asking a model.

:class:`RecordedAnswers` indexes a run's recorded calls by :class:`~nodes.llm.trace.CallKey`
(agent, node, chapter, call index) and hands them out in their recorded order, so a key
visited twice (an outline sent back for revision) gets its two answers in turn.
:class:`ReplayChatModel` streams the answer for the call in flight, token counts
included, without touching the network. :class:`ReplayRouter` decides per call whether
the recorded answer or the agent's own model answers: recorded agents always replay;
the others replay before ``live_from_step`` and go live from there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict
from typing_extensions import override

from errors import ReplayMissing
from memory.traces.port import ModelCall
from nodes.llm.offline import chunks_of
from nodes.llm.tasks import parse_request
from nodes.llm.trace import CallKey, CallPlace, current_call

REPLAY_LLM_TYPE = "replay"


class RecordedAnswers:
    """The answers of a recorded run, taken in order per call key."""

    def __init__(self, calls: Sequence[ModelCall], source_run_id: str) -> None:
        self.source_run_id = source_run_id
        self._by_key: dict[CallKey, list[ModelCall]] = defaultdict(list)
        for call in calls:
            if call.error is None:
                self._by_key[CallKey(call.agent, call.node, call.chapter, call.index)].append(call)
        self._taken: dict[CallKey, int] = defaultdict(int)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    def skip(self, key: CallKey) -> None:
        """Count ``key``'s next answer as already used (by an earlier attempt of the run)."""
        self._taken[key] += 1

    def take(self, key: CallKey | None) -> ModelCall:
        """The next recorded answer for ``key``; :class:`ReplayMissing` when there is none."""
        if key is None:
            raise ReplayMissing("a replayed model was called outside a graph step", agent="unknown")
        recorded = self._by_key.get(key, [])
        visit = self._taken[key]
        if visit >= len(recorded):
            ordinal = f" (visit {visit + 1} of this call)" if visit else ""
            raise ReplayMissing(
                f"replay needs {key.agent} call #{key.index} of node {key.node} at chapter "
                f"{key.chapter}{ordinal}, which run {self.source_run_id} never recorded",
                agent=key.agent,
                node=key.node,
                chapter=key.chapter,
                call_index=key.index,
                visit=visit + 1,
                source_run_id=self.source_run_id,
            )
        self._taken[key] = visit + 1
        return recorded[visit]


class ReplayChatModel(BaseChatModel):
    """A chat model whose every answer is a recorded one (no network, deterministic)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    answers: RecordedAnswers
    model_name: str = "replay"

    @property
    @override
    def _llm_type(self) -> str:
        return REPLAY_LLM_TYPE

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "source_run_id": self.answers.source_run_id}

    def _take(self, messages: list[BaseMessage]) -> ModelCall:
        """The recorded answer for the call in flight, if the recording asked the same
        task there: a run recorded with other settings (claims read in parts, say) asks
        different tasks, and another task's answer must not pass for this one's."""
        call = self.answers.take(current_call())
        asked = parse_request(messages)
        if asked is not None and asked.task != call.task:
            raise ReplayMissing(
                f"replay asks {call.agent} for {asked.task} at chapter {call.chapter} "
                f"(node {call.node}, call #{call.index}), where run "
                f"{self.answers.source_run_id} asked {call.task}: it was recorded with other "
                "settings (such as SCRIBE_SPLIT_ANSWERS); replay it with the same",
                agent=call.agent,
                node=call.node,
                chapter=call.chapter,
                call_index=call.index,
                source_run_id=self.answers.source_run_id,
            )
        return call

    @staticmethod
    def _usage(call: ModelCall) -> UsageMetadata:
        return UsageMetadata(
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            total_tokens=call.input_tokens + call.output_tokens,
        )

    def _metadata(self, call: ModelCall) -> dict[str, Any]:
        return {"model_name": self.model_name, "replayed_from": call.call_id}

    @override
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The recorded answer in one piece."""
        call = self._take(messages)
        message = AIMessage(
            content=call.answer,
            usage_metadata=self._usage(call),
            response_metadata=self._metadata(call),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _chunks(self, call: ModelCall) -> Iterator[ChatGenerationChunk]:
        pieces = chunks_of(call.answer) or [""]
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            if i == last:
                message = AIMessageChunk(
                    content=piece,
                    usage_metadata=self._usage(call),
                    response_metadata=self._metadata(call),
                    chunk_position="last",
                )
            else:
                message = AIMessageChunk(content=piece)
            yield ChatGenerationChunk(message=message)

    @override
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The recorded answer, word by word."""
        yield from self._chunks(self._take(messages))

    @override
    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The recorded answer, word by word (so ``messages`` streams still see tokens)."""
        for chunk in self._chunks(self._take(messages)):
            yield chunk


class ReplayRouter:
    """Per call: the recorded answer, or the agent's own model (a live agent)."""

    def __init__(
        self,
        answers: RecordedAnswers,
        recorded_agents: Collection[str],
        live_from_step: int | None = None,
    ) -> None:
        self.model = ReplayChatModel(answers=answers)
        self.recorded_agents = frozenset(recorded_agents)
        self.live_from_step = live_from_step

    def model_for(self, agent: str, place: CallPlace | None) -> BaseChatModel | None:
        """The replay model for recorded agents and for steps before ``live_from_step``."""
        if agent in self.recorded_agents:
            return self.model
        replaying = self.live_from_step is not None and place is not None
        if replaying and place is not None and place.step < (self.live_from_step or 0):
            return self.model
        return None
