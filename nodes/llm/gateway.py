"""The one door between nodes and language models.

Every node asks :class:`ModelGateway` for a task's answer; the gateway picks the
agent's model, renders the messages (:func:`nodes.llm.tasks.render_messages`), streams
the answer (so LangGraph's ``"messages"`` stream mode sees tokens as they come),
validates structured answers with one repair round, and turns transport failures into
the engine's error hierarchy:

* transient failures (429, 5xx, timeouts, dropped connections) are retried with
  exponential backoff and full jitter, honouring ``Retry-After``; when they persist the
  call raises :class:`~errors.ModelUnavailable`;
* permanent API failures (400, 401, 403, 404, ...) raise
  :class:`~errors.ModelError` at once;
* answers that stay malformed after the repair raise
  :class:`~errors.ModelOutputError`.

``openai`` and ``httpx`` are never imported here: an exception can only be an instance
of their classes if the model already imported them, so classification looks the
modules up in :data:`sys.modules` (keeps ``scribe --help`` fast).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel, ValidationError

from errors import (
    ConfigurationError,
    ContextOverflow,
    InvalidInput,
    ModelError,
    ModelOutputError,
    ModelRefused,
    ModelUnavailable,
    ScribeError,
)
from memory.traces.port import ModelCall
from nodes.llm.answers import (
    DEFAULT_LOOP_POLICY,
    LoopGuard,
    LoopPolicy,
    RetryCause,
    closed_prefixes,
    complete_sentences,
    cut_at_paragraph,
    echo_start,
    fresh_part,
    is_refusal,
    loop_start,
    strip_wrapping,
    unlooped,
    word_count,
)
from nodes.llm.budget import MIN_ANSWER_TOKENS, Fitted, estimate_tokens, fit
from nodes.llm.config import RetryPolicy
from nodes.llm.structured import (
    Constraints,
    StructuredMode,
    decoding_schema,
    fallback_mode,
    response_format,
)
from nodes.llm.tasks import TASKS, TaskSpec, answer_cap, render_messages
from nodes.llm.trace import (
    CallKey,
    CallPlace,
    CallRouter,
    CallSink,
    current_chapter,
    next_place,
    set_current_call,
)
from nodes.schemas import AGENTS, Agent

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import Runnable, RunnableConfig

T = TypeVar("T", bound=BaseModel)

log = logging.getLogger(__name__)

OFFLINE_LLM_TYPE = "offline"
"""``_llm_type`` of the deterministic offline model (``nodes/llm/offline.py``)."""

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"

_DEFAULT_RETRY = RetryPolicy()
_MAX_LISTED_ERRORS = 20
"""Validation errors quoted back to the model (a broken answer can produce hundreds)."""

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)```", re.DOTALL)
# Reasoning models served behind OpenAI-compatible endpoints (DeepSeek-R1, Qwen3...)
# often prefix answers with their chain of thought; it is never part of the answer.
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)

_Failure = Literal["transient", "permanent"]


@dataclass(frozen=True)
class _Call:
    """One logical model call: who makes it, for which task, with which runnable."""

    agent: Agent
    task: str
    runnable: Runnable[Any, Any]
    label: str
    structured: bool
    settings: dict[str, Any]


@dataclass(frozen=True)
class _Ask:
    """What one request adds to the agent's model: the answer format, the answer budget,
    and, for a re-ask, why it is made and the sampling changes that go with it."""

    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    reask: RetryCause | None = None
    seed: int | None = None
    penalties: bool = False
    guard: LoopPolicy | None = None
    """Watch the streamed answer for repetition loops by this policy (and stop it when one
    starts)."""
    continues: str = ""
    """The text this answer continues: the loop guard watches the two together."""

    def bindings(self) -> dict[str, Any]:
        """Request fields to bind on the chat model."""
        bound: dict[str, Any] = {}
        if self.response_format is not None:
            # Sent as a plain body field: bound as ``response_format`` it would route
            # langchain-openai through OpenAI's structured-output stream helper, which
            # re-parses the growing answer on every token (a CPU core for a long answer on
            # a local server's machine), drops the usage chunk and raises at max_tokens.
            bound["extra_body"] = {"response_format": self.response_format}
        if self.max_tokens is not None:
            bound["max_tokens"] = self.max_tokens
        if self.seed is not None:
            bound["seed"] = self.seed
        if self.penalties:
            # Supported alike by OpenAI, DeepSeek, vLLM, Ollama and llama.cpp; enough to
            # pull a small model out of the loop it fell into without hurting the prose.
            bound["frequency_penalty"] = 0.4
            bound["presence_penalty"] = 0.3
        return bound

    def record(self) -> dict[str, Any]:
        """How the request differed from the model's defaults (kept in the trace)."""
        recorded: dict[str, Any] = {}
        if self.response_format is not None:
            recorded["response_format"] = self.response_format["type"]
        for key in ("max_tokens", "reask", "seed"):
            value = getattr(self, key)
            if value is not None:
                recorded[key] = value
        if self.penalties:
            recorded["penalties"] = True
        if self.continues:
            recorded["continues_words"] = word_count(self.continues)
        return recorded


@dataclass
class _Answer:
    """One streamed answer and how it ended."""

    text: str
    finish_reason: str | None
    looped: bool


class _ModeRefused(Exception):
    """The endpoint rejected the request's ``response_format`` (a 400 naming it)."""


class ModelGateway:
    """Per-agent model access used by every node.

    ``models`` maps each agent to its chat model. ``retry`` bounds the attempts made for
    transient failures and the re-asks for unusable answers; ``sleep`` waits between
    attempts (injected so tests need not wait). ``modes`` is each agent's structured-output
    mode (``nodes/llm/structured.py``; default ``prompt``): ``response_format`` is bound
    per call rather than on the model, because the writer's prose must stay free text.
    ``context_windows`` bounds each agent's prompt plus answer, in tokens; an agent
    without one is assumed to have room (hosted models with long windows).
    """

    def __init__(
        self,
        models: Mapping[Agent, BaseChatModel],
        *,
        retry: RetryPolicy = _DEFAULT_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        modes: Mapping[Agent, StructuredMode] | None = None,
        context_windows: Mapping[Agent, int] | None = None,
        split_answers: Collection[Agent] = (),
        sink: CallSink | None = None,
        router: CallRouter | None = None,
        _refused: dict[Agent, StructuredMode] | None = None,
    ) -> None:
        self._models: dict[Agent, BaseChatModel] = dict(models)
        self._retry = retry
        self._sleep = sleep
        self._modes: dict[Agent, StructuredMode] = dict(modes or {})
        self._windows: dict[Agent, int] = dict(context_windows or {})
        self._split: frozenset[Agent] = frozenset(split_answers)
        self._sink = sink
        self._router = router
        # Shared with every copy made by with_tracing: a mode an endpoint refused once is
        # not tried again by later runs of the same process.
        self._refused: dict[Agent, StructuredMode] = _refused if _refused is not None else {}

    def with_tracing(
        self, *, sink: CallSink | None = None, router: CallRouter | None = None
    ) -> ModelGateway:
        """The same models and policy, recording calls to ``sink`` and letting ``router``
        answer some of them (a replay). Arguments left ``None`` keep this gateway's."""
        return ModelGateway(
            self._models,
            retry=self._retry,
            sleep=self._sleep,
            modes=self._modes,
            context_windows=self._windows,
            split_answers=self._split,
            sink=sink if sink is not None else self._sink,
            router=router if router is not None else self._router,
            _refused=self._refused,
        )

    # --- introspection ----------------------------------------------------------------

    def model_for(self, agent: Agent) -> BaseChatModel:
        """The chat model serving ``agent``."""
        try:
            return self._models[agent]
        except KeyError:
            raise ConfigurationError(
                f"no model is configured for the {agent}", agent=agent
            ) from None

    def describe(self) -> dict[str, str]:
        """A human label per agent, e.g. ``"gpt-4o-mini @ https://api.openai.com/v1"``."""
        return {agent: model_label(model) for agent, model in self._ordered()}

    def splits(self, agent: Agent) -> bool:
        """Whether ``agent``'s model is asked for its largest answers (a chapter's claims)
        in smaller parts: a small model fills a few short lists where it leaves a long
        schema mostly empty."""
        return agent in self._split

    def mode_for(self, agent: Agent) -> StructuredMode:
        """The structured-output mode ``agent``'s calls use now (after any step-down)."""
        return self._refused.get(agent) or self._modes.get(agent, "prompt")

    @property
    def offline_agents(self) -> list[str]:
        """Agents served by the offline model, in pipeline order."""
        return [agent for agent, model in self._ordered() if model._llm_type == OFFLINE_LLM_TYPE]

    def _ordered(self) -> list[tuple[Agent, BaseChatModel]]:
        order = {agent: i for i, agent in enumerate(AGENTS)}
        return sorted(self._models.items(), key=lambda item: order.get(item[0], len(order)))

    # --- calls ------------------------------------------------------------------------

    async def structured(
        self,
        task: str,
        inputs: BaseModel,
        output: type[T],
        *,
        check: Callable[[T], Sequence[str]] | None = None,
        constraints: Constraints | None = None,
        salvage: Callable[[T], T] | None = None,
    ) -> T:
        """Ask the task's agent for a JSON answer validated by ``output`` (and ``check``).

        ``constraints`` narrow the schema sent for constrained decoding (and shown in the
        prompt) for this call. ``check`` returns domain problems (e.g. "outline has 3
        chapters, expected 5"); a problem, like a parse or validation error, earns the
        model a repair round with the exact errors. A refusal, an empty answer or one cut
        off at the token limit is asked again afresh. ``salvage`` may mend the last
        schema-valid answer when the re-asks are spent (e.g. drop issues whose quotes are
        not in the draft); what it returns must pass ``check``. Otherwise
        :class:`ModelOutputError` names the agent, task, chapter and the errors.
        """
        spec = _spec(task, inputs, structured=True)
        schema = decoding_schema(output, constraints)
        while True:
            mode = self.mode_for(spec.agent)
            call = self._call_for(spec, structured=True)
            # Under constrained decoding the endpoint enforces the schema itself; showing
            # it again in the prompt would only cost a small model's context.
            fitted = self._fit(spec, call, inputs, schema, show_schema=mode != "json_schema")
            try:
                return await self._structured_answers(
                    call, mode, fitted, schema, output, check, salvage
                )
            except _ModeRefused as refused:
                self._step_down(call, mode, refused)

    async def _structured_answers(
        self,
        call: _Call,
        mode: StructuredMode,
        fitted: Fitted,
        schema: dict[str, Any],
        output: type[T],
        check: Callable[[T], Sequence[str]] | None,
        salvage: Callable[[T], T] | None,
    ) -> T:
        """Up to the policy's number of requests for one structured answer in ``mode``."""
        task = call.task
        base = fitted.messages
        conversation = base
        reask: RetryCause | None = None
        errors: list[str] = []
        causes: list[RetryCause] = []
        for _ in range(self._answer_attempts()):
            answer = await self._answer_in_mode(call, mode, conversation, schema, fitted, reask)
            if not answer.text.strip() or is_refusal(answer.text):
                reask = "empty" if not answer.text.strip() else "refusal"
                causes.append(reask)
                errors = [f"{reask} answer: {answer.text.strip()[:120]!r}"]
                conversation = base
                continue
            result, errors, candidate = _parse_structured(answer.text, output, check)
            accepted = _accepted(result, candidate, check, salvage)
            if accepted is not None:
                return accepted
            if (answer.finish_reason == "length" or answer.looped) and candidate is None:
                # Stopped at the token limit or in a loop: what was complete may do.
                closed = _closed_answer(answer.text, output, check, salvage)
                if closed is not None:
                    return closed
                if answer.looped:
                    reask = "loop"
                    errors = [f"the answer fell into a repetition loop ({errors[0]})"]
                    conversation = _with_note(base, _JSON_LOOP_NOTE)
                else:
                    reask = "truncated"
                    errors = [f"the answer was cut off at the token limit ({errors[0]})"]
                    conversation = _with_note(base, _TRUNCATED_NOTE)
            else:
                reask = "invalid"
                conversation = [
                    *base,
                    AIMessage(answer.text),
                    HumanMessage(_structured_repair(task, errors)),
                ]
            causes.append(reask)
        refused = bool(causes) and all(c in ("refusal", "empty") for c in causes)
        what = "refused or left empty every" if refused else "returned an invalid"
        error = ModelRefused if refused else ModelOutputError
        raise error(
            f"{call.agent} {what} {task} answer{_chapter_phrase()} after "
            f"{len(causes)} attempts: " + _summarise(errors),
            agent=call.agent,
            task=task,
            chapter=_chapter(),
            errors=errors,
        )

    async def prose(self, task: str, inputs: BaseModel, *, target_words: int | None = None) -> str:
        """Ask the task's agent for free text of about ``target_words`` words.

        The answer is cleaned of headings and notes. A repetition loop is stopped while it
        streams; the text before it is kept and the model asked to continue from there
        (another seed, repetition penalties), and so is an answer that ends far short of
        the target: small models that cannot hold a whole chapter in one go still get
        there in pieces. A refusal or an empty answer is asked again; an answer cut off at
        the token limit loses its unfinished sentence; one far longer than the target is
        cut at a paragraph end. A request that adds less than :data:`MIN_GAIN_RATIO` of the
        target is a failed attempt; when the policy's attempts have failed, the text so far
        is kept if it reaches :data:`MIN_SHORT_RATIO` of the target, else
        :class:`ModelRefused` or :class:`ModelOutputError` names the agent, task and
        chapter.
        """
        spec = _spec(task, inputs, structured=False)
        call = self._call_for(spec, structured=False)
        fitted = self._fit(spec, call, inputs, None, target_words)
        base = fitted.messages
        attempts = self._answer_attempts()
        min_gain = max(1, round((target_words or 0) * MIN_GAIN_RATIO))
        kept = ""  # the usable text so far, which the next request continues
        note: str | None = None
        reask: RetryCause | None = None
        causes: list[RetryCause] = []
        problems: list[str] = []
        failures = requests = 0
        while failures < attempts and requests < attempts * CONTINUATIONS_PER_ATTEMPT:
            requests += 1
            ask = _Ask(
                max_tokens=_rest_of_budget(fitted.answer_tokens, kept),
                reask=reask,
                seed=self._reask_seed(call, requests - 1) if requests > 1 else None,
                penalties=reask == "loop",
                guard=DEFAULT_LOOP_POLICY,
                continues=kept,
            )
            if kept:
                messages = _continuing(base, kept, target_words)
            else:
                messages = base if note is None else _with_note(base, note)
            answer = await self._complete(call, messages, ask)
            piece = strip_wrapping(_clean_prose(answer.text))
            if not piece or is_refusal(piece):
                reask = "empty" if not piece else "refusal"
                note = _REFUSAL_NOTE if piece else None
                problems.append("empty answer" if not piece else f"refusal: {piece[:120]!r}")
                # Small models refuse fiction at random; the first refusal is asked again
                # (with a note and another seed) without counting as a failed attempt.
                if reask == "empty" or "refusal" in causes:
                    failures += 1
                causes.append(reask)
                continue
            echo = echo_start(kept, piece) if kept else None
            if echo is not None:
                # It went back over the text it continues: keep what it adds, if anything.
                piece = fresh_part(kept, piece)
                problems.append(f"repeated the text it continued ({word_count(piece)} new words)")
            text = _joined(kept, piece)
            start = loop_start(text)
            looped = answer.looped or start is not None or echo is not None
            if looped:
                # A loop can only begin in the new text: the kept text had none.
                end = len(text) if start is None else max(start, len(kept))
                text = complete_sentences(text[:end]) or kept
                if echo is None:
                    problems.append(f"repetition loop after {word_count(text)} words")
            elif answer.finish_reason == "length":
                text = complete_sentences(text) or kept
            if target_words is None and not looped:
                return text
            words = word_count(text)
            if target_words is not None:
                if words > target_words * MAX_LONG_RATIO:
                    return cut_at_paragraph(text, round(target_words * KEEP_LONG_RATIO))
                if words >= target_words * (ENOUGH_LOOPED_RATIO if looped else ENOUGH_RATIO):
                    return text
            if not looped:
                problems.append(f"{words} words for a target of {target_words}")
            if words - word_count(kept) < min_gain:
                failures += 1
                if echo is not None and words < (target_words or 0) * MIN_SHORT_RATIO:
                    # A stub the model can only restate is no base to continue from: the
                    # next request starts afresh (another seed).
                    kept, text = "", ""
                    words = 0
            if words > word_count(kept):
                kept = text
            reask = "loop" if looped else "too_short"
            causes.append(reask)
        floor = target_words * MIN_SHORT_RATIO if target_words else 1
        if kept and word_count(kept) >= floor:
            log.warning(
                "%s kept its %s%s at %d words after %d requests: %s",
                call.agent,
                task,
                _chapter_phrase(),
                word_count(kept),
                requests,
                "; ".join(problems),
            )
            return kept
        error = ModelRefused if all(c in ("refusal", "empty") for c in causes) else ModelOutputError
        raise error(
            f"{call.agent} gave no usable {task} answer{_chapter_phrase()} after "
            f"{requests} requests: " + _summarise(problems),
            agent=call.agent,
            task=task,
            chapter=_chapter(),
            errors=problems,
        )

    # --- internals --------------------------------------------------------------------

    def _reask_seed(self, call: _Call, attempt: int) -> int:
        """Another seed for a re-ask: derived from the configured one (reproducible), else
        random."""
        base = getattr(self._models.get(call.agent), "seed", None)
        if isinstance(base, int):
            return (base + 7919 * attempt) % (2**31 - 1)
        return random.randrange(1, 2**31 - 1)

    def _answer_attempts(self) -> int:
        return max(1, int(self._retry.answer_attempts))

    def _call_for(self, spec: TaskSpec, *, structured: bool) -> _Call:
        model = self.model_for(spec.agent)
        settings = model_settings(model)
        if structured:
            settings["structured_output"] = self.mode_for(spec.agent)
        return _Call(spec.agent, spec.name, model, model_label(model), structured, settings)

    def _fit(
        self,
        spec: TaskSpec,
        call: _Call,
        inputs: BaseModel,
        schema: dict[str, Any] | None,
        target_words: int | None = None,
        *,
        show_schema: bool = True,
    ) -> Fitted:
        """The prompt, cut to the agent's context window (``nodes/llm/budget.py``), and
        the answer's token budget: the model's ``max_tokens``, the task's own cap (an
        answer far past it is a model rambling, not a better answer), and what the
        window leaves."""
        window = self._windows.get(call.agent)
        configured = getattr(self._models.get(call.agent), "max_tokens", None)
        max_answer = answer_cap(spec, inputs, target_words)
        if isinstance(configured, int) and configured > 0:
            max_answer = min(max_answer, configured)
        fitted = fit(
            inputs,
            lambda i: render_messages(spec.name, i, schema, show_schema=show_schema),
            window=window,
            max_answer=max_answer,
            trims=spec.trims,
        )
        if isinstance(fitted, int):
            raise ContextOverflow(
                f"{call.agent}'s {spec.name} prompt{_chapter_phrase()} needs about {fitted} "
                f"tokens, which leaves no room for an answer in its context window of "
                f"{window} tokens even with retrieval and the world brief cut; raise "
                f"SCRIBE_{call.agent.upper()}__CONTEXT_WINDOW or use a model with a "
                "longer context",
                agent=call.agent,
                task=spec.name,
                chapter=_chapter(),
                prompt_tokens=fitted,
                context_window=window,
            )
        if fitted.dropped:
            log.info(
                "%s %s%s: cut %s to fit a context window of %s tokens",
                call.agent,
                spec.name,
                _chapter_phrase(),
                ", ".join(f"{n} of {path}" for path, n in fitted.dropped.items()),
                window,
            )
        return fitted

    async def _answer_in_mode(
        self,
        call: _Call,
        mode: StructuredMode,
        messages: list[BaseMessage],
        schema: dict[str, Any],
        fitted: Fitted,
        reask: RetryCause | None,
    ) -> _Answer:
        """One structured request in ``mode`` (:class:`_ModeRefused` if it is refused)."""
        ask = _Ask(
            response_format=response_format(mode, call.task, schema),
            max_tokens=fitted.answer_tokens,
            reask=reask,
            seed=self._reask_seed(call, 1 + len(messages)) if reask else None,
            # A small model's invalid or overlong JSON is mostly repetition.
            penalties=reask in ("invalid", "truncated", "loop"),
            # Small models loop inside JSON too (the same list item again and again):
            # stopping there saves the rest of the token budget.
            guard=STRUCTURED_LOOP_POLICY,
        )
        return await self._complete(call, messages, ask)

    def _step_down(self, call: _Call, mode: StructuredMode, refused: _ModeRefused) -> None:
        """Use the next weaker mode for ``call.agent`` from now on, and say so once."""
        weaker = fallback_mode(mode)
        if weaker is None:  # pragma: no cover - prompt mode sends no response_format
            raise refused
        self._refused[call.agent] = weaker
        log.warning(
            "%s's endpoint (%s) refused structured output mode %s (%s); using %s from now on "
            "(set SCRIBE_%s__STRUCTURED_OUTPUT=%s to skip the probe)",
            call.agent,
            call.label,
            mode,
            refused,
            weaker,
            call.agent.upper(),
            weaker,
        )

    def _runnable(
        self, call: _Call, place: CallPlace | None, ask: _Ask
    ) -> tuple[Runnable[Any, Any], str]:
        """The runnable answering this call (the router's choice, else the agent's model)
        and its label."""
        model: BaseChatModel | None = None
        if self._router is not None:
            model = self._router.model_for(call.agent, place)
        if model is not None:
            return model, model_label(model)
        bindings = ask.bindings()
        if call.runnable is self._models.get(call.agent) and _is_offline(call.runnable):
            # The offline model reads its requests from the messages alone.
            bindings = {}
        own = getattr(call.runnable, "extra_body", None)
        if "extra_body" in bindings and isinstance(own, Mapping):
            # Bound per request, it would replace the model's own extra fields.
            bindings["extra_body"] = {**own, **bindings["extra_body"]}
        runnable = call.runnable.bind(**bindings) if bindings else call.runnable
        return runnable, call.label

    async def _complete(self, call: _Call, messages: list[BaseMessage], ask: _Ask) -> _Answer:
        """One logical call: budget check, routing, retries, and its record."""
        place = next_place()
        if self._sink is not None and place is not None and place.run_id:
            self._sink.before_call(place.run_id)
        runnable, label = self._runnable(call, place, ask)
        reset = set_current_call(
            CallKey(call.agent, place.node, place.chapter, place.index) if place else None
        )
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        outcome = _Outcome()
        try:
            return await self._attempts(call, runnable, label, messages, ask, outcome)
        except BaseException as exc:
            outcome.error = _describe_exception(exc)
            raise
        finally:
            reset()
            if self._sink is not None and place is not None and place.run_id and place.thread_id:
                self._sink.record(
                    _record(call, place, label, messages, ask, outcome, started_at, started)
                )

    async def _attempts(
        self,
        call: _Call,
        runnable: Runnable[Any, Any],
        label: str,
        messages: list[BaseMessage],
        ask: _Ask,
        outcome: _Outcome,
    ) -> _Answer:
        """Stream one answer, retrying transient failures per the retry policy."""
        tags = [f"agent:{call.agent}", f"task:{call.task}"]
        if ask.reask:
            tags.append("repair")
        config: RunnableConfig = {
            "tags": tags,
            "metadata": {"agent": call.agent, "task": call.task},
            "run_name": f"{call.agent}.{call.task}",
        }
        attempts = max(1, self._retry.attempts)
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            outcome.attempts = attempt
            try:
                return await _stream_text(
                    runnable,
                    messages,
                    config,
                    outcome,
                    LoopGuard(ask.guard, prefix=ask.continues) if ask.guard else None,
                )
            except ScribeError:
                raise
            except Exception as exc:
                failure = classify_failure(exc)
                if failure is None:
                    raise
                if failure == "permanent":
                    if ask.response_format is not None and _names_response_format(exc):
                        raise _ModeRefused(_describe_exception(exc)) from exc
                    raise _permanent_error(call, exc) from exc
                last = exc
            if attempt < attempts:
                await self._sleep(self._delay(attempt, last))
        assert last is not None  # the loop ran at least once and only falls through on failure
        raise ModelUnavailable(
            f"{call.agent} model ({label}) unavailable for {call.task}{_chapter_phrase()} "
            f"after {attempts} attempts: {_describe_exception(last)}",
            agent=call.agent,
            task=call.task,
            chapter=_chapter(),
            attempts=attempts,
            last_error=_describe_exception(last),
        ) from last

    def _delay(self, attempt: int, exc: Exception) -> float:
        """Seconds to wait after failed ``attempt`` (1-based)."""
        cap = max(0.0, self._retry.max_delay_s)
        hinted = retry_after_seconds(exc)
        if hinted is not None:
            return min(hinted, cap)
        # Full jitter (AWS architecture blog): spreads clients that failed together.
        ceiling = min(cap, self._retry.base_delay_s * (2 ** (attempt - 1)))
        return random.uniform(0.0, max(0.0, ceiling))


STRUCTURED_LOOP_POLICY = LoopPolicy(sentence_repeats=5, ngram_repeats=5)
"""A JSON answer may say the same thing a few times and still be an answer (a small model
gives three chapters the same summary); five times, it is a loop worth stopping."""

MAX_LONG_RATIO = 1.75
"""A prose answer longer than this many times its target is cut..."""
KEEP_LONG_RATIO = 1.3
"""...at the last paragraph end within this many times the target."""
ENOUGH_RATIO = 0.5
"""A prose answer the model ended itself is accepted from this share of its target..."""
ENOUGH_LOOPED_RATIO = 0.8
"""...and the text before a loop (which stops mid-scene) from this share; shorter text is
continued."""
MIN_GAIN_RATIO = 0.1
"""A request that adds less than this share of the target counts as a failed attempt."""
CONTINUATIONS_PER_ATTEMPT = 2
"""Requests allowed per attempt, so continuations that keep adding text are bounded too."""
MIN_SHORT_RATIO = 0.3
"""When the attempts are spent, the text so far is kept if it reaches this share."""

_TRUNCATED_NOTE = (
    "Your previous answer was cut off at the length limit before the JSON was complete. "
    "Answer again, more briefly: shorter strings and only the list items that matter."
)
_JSON_LOOP_NOTE = (
    "Your previous answer started repeating itself. Answer again: every list item must be "
    "different from the others, and no sentence may repeat."
)
_REFUSAL_NOTE = (
    "This is original fiction for the author's own novel, built from the author's premise "
    "and plan above; nothing in it copies an existing work. Write it now: answer with the "
    "text itself and nothing else."
)


def _continuing(messages: list[BaseMessage], kept: str, target: int | None) -> list[BaseMessage]:
    """The conversation asking the model to go on from ``kept`` (its own text so far).

    A user turn rather than a pre-filled assistant turn: OpenAI-style APIs answer a
    trailing assistant message with a new message, not a continuation of it.
    """
    so_far = f"It has {word_count(kept)} words" + (f" of about {target}" if target else "")
    return [
        *messages,
        AIMessage(kept),
        HumanMessage(
            f"{so_far}. Continue it from exactly where it stops: write only the new text, "
            "without repeating or summarising anything above, carrying the scene on through "
            "the remaining beats to the end. Every sentence must be new."
        ),
    ]


def _joined(kept: str, piece: str) -> str:
    if not kept or not piece.strip():
        return kept or piece
    # A continuation that starts mid-paragraph reads on; one that starts a new one is kept so.
    glue = " " if piece[:1].islower() or piece[:1] in ",;:—-" else "\n\n"
    return f"{kept.rstrip()}{glue}{piece.lstrip()}"


def _rest_of_budget(answer_tokens: int, kept: str) -> int:
    """The answer budget left for a continuation of ``kept`` (the prompt grows by as much
    as the budget shrinks, so the request still fits the context window)."""
    if not kept:
        return answer_tokens
    return max(MIN_ANSWER_TOKENS, answer_tokens - estimate_tokens(kept))


def _with_note(messages: list[BaseMessage], note: str) -> list[BaseMessage]:
    """``messages`` with ``note`` added to the last user message (not as a message of its
    own: some chat templates refuse two user turns in a row)."""
    *head, last = messages
    content = last.content if isinstance(last.content, str) else str(last.content)
    return [*head, HumanMessage(f"{content}\n\n{note}")]


def _chapter() -> int | None:
    return current_chapter()


def _chapter_phrase() -> str:
    chapter = _chapter()
    return f" for chapter {chapter}" if chapter else ""


def _is_offline(model: Runnable[Any, Any]) -> bool:
    return getattr(model, "_llm_type", None) == OFFLINE_LLM_TYPE


def _names_response_format(exc: BaseException) -> bool:
    """Whether a rejected request was rejected for its ``response_format``."""
    status = _status_of(exc)
    if status not in (400, 415, 422, 501):
        return False
    text = _describe_exception(exc).lower()
    return any(w in text for w in ("response_format", "json_schema", "json_object", "schema"))


# --- model labels ---------------------------------------------------------------------


def model_label(model: BaseChatModel) -> str:
    """A short human label: ``"<model> @ <base url>"``, or ``"offline"``."""
    llm_type = model._llm_type
    if llm_type == OFFLINE_LLM_TYPE:
        variant = getattr(model, "variant", None)
        return f"offline:{variant}" if variant else "offline"
    name = getattr(model, "model_name", None) or getattr(model, "model", None) or llm_type
    base = _base_url(model)
    return f"{name} @ {base}" if base else str(name)


def _base_url(model: BaseChatModel) -> str | None:
    client = getattr(model, "root_async_client", None)
    url = getattr(client, "base_url", None)
    if url is not None:
        return str(url).rstrip("/")
    base = getattr(model, "openai_api_base", None)
    if isinstance(base, str) and base:
        return base.rstrip("/")
    if model._llm_type == "openai-chat":
        return DEFAULT_OPENAI_BASE_URL
    return None


# --- streaming ------------------------------------------------------------------------


@dataclass
class _Outcome:
    """What one logical call produced, filled in as it streams (mutable, call-local)."""

    answer: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    replayed_from: str | None = None
    attempts: int = 0
    error: str | None = None
    finish_reason: str | None = None
    looped: bool = False


async def _stream_text(
    runnable: Runnable[Any, Any],
    messages: list[BaseMessage],
    config: RunnableConfig,
    outcome: _Outcome,
    guard: LoopGuard | None = None,
) -> _Answer:
    parts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    input_tokens = output_tokens = 0
    finish_reason: str | None = None
    looped = False
    try:
        # aclosing: leaving the loop early (a repetition loop) must close the HTTP stream
        # at once, so the endpoint stops generating.
        stream: Any = runnable.astream(messages, config=config)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                text = getattr(chunk, "text", None)
                if isinstance(text, str):
                    parts.append(str(text))
                elif isinstance(chunk, str):
                    parts.append(chunk)
                usage = getattr(chunk, "usage_metadata", None)
                if usage:
                    # Providers report usage once (on the last chunk); summing is safe.
                    input_tokens += int(usage.get("input_tokens") or 0)
                    output_tokens += int(usage.get("output_tokens") or 0)
                for piece in getattr(chunk, "tool_call_chunks", None) or ():
                    tool_calls.append(dict(piece))
                metadata = getattr(chunk, "response_metadata", None) or {}
                if metadata.get("replayed_from"):
                    outcome.replayed_from = str(metadata["replayed_from"])
                if metadata.get("finish_reason"):
                    finish_reason = str(metadata["finish_reason"])
                if guard is not None and guard.looping("".join(parts)):
                    looped = True
                    finish_reason = "loop"
                    break
    except Exception as exc:
        # OpenAI's structured-output stream helper raises instead of returning an answer
        # cut off at the token limit; what streamed until then is the answer.
        if type(exc).__name__ != "LengthFinishReasonError":
            raise
        finish_reason = "length"
    outcome.answer = "".join(parts)
    outcome.input_tokens, outcome.output_tokens = input_tokens, output_tokens
    outcome.tool_calls = tool_calls
    outcome.finish_reason, outcome.looped = finish_reason, looped
    return _Answer(outcome.answer, finish_reason, looped)


def _message_json(message: BaseMessage) -> dict[str, Any]:
    role = {"system": "system", "human": "user", "ai": "assistant"}.get(message.type, message.type)
    return {"role": role, "content": message.content}


def _record(
    call: _Call,
    place: CallPlace,
    label: str,
    messages: list[BaseMessage],
    ask: _Ask,
    outcome: _Outcome,
    started_at: datetime,
    started: float,
) -> ModelCall:
    structured: dict[str, Any] | None = None
    if call.structured and outcome.error is None:
        try:
            structured = extract_json_object(outcome.answer)
        except _NoJson:
            structured = None
    run_id = place.run_id or ""
    return ModelCall(
        call_id=str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"scribe:call:{run_id}:{place.task_id}:{place.index}")
        ),
        run_id=run_id,
        thread_id=place.thread_id or "",
        checkpoint_id=place.checkpoint_id,
        task_id=place.task_id,
        node=place.node,
        step=place.step,
        chapter=place.chapter,
        index=place.index,
        agent=call.agent,
        task=call.task,
        repair=ask.reask is not None,
        model=label,
        # What this request changed (answer format, budget, re-ask cause) and how it
        # ended: evaluators count retries by cause from these.
        settings={
            **call.settings,
            **ask.record(),
            "finish_reason": outcome.finish_reason,
        },
        messages=[_message_json(m) for m in messages],
        # PostgreSQL text cannot hold NUL; a model can emit one.
        answer=outcome.answer.replace("\x00", "\ufffd"),
        tool_calls=outcome.tool_calls,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        cost_usd=None,
        attempts=outcome.attempts,
        error=outcome.error.replace("\x00", "\ufffd") if outcome.error else None,
        started_at=started_at,
        replayed_from=outcome.replayed_from,
        structured=structured,
    )


def model_settings(model: BaseChatModel) -> dict[str, Any]:
    """The model's identifying parameters that are plain JSON values (no secrets)."""
    settings: dict[str, Any] = {}
    for key, value in model._identifying_params.items():
        if "key" in key.lower() or "secret" in key.lower() or key.lower() == "token":
            continue
        if value is None or isinstance(value, (str, int, float, bool)):
            settings[key] = value
        elif key == "extra_body" and isinstance(value, Mapping):
            settings[key] = dict(value)
    return settings


# --- failure classification -----------------------------------------------------------


def classify_failure(exc: BaseException) -> _Failure | None:
    """``"transient"`` (worth retrying), ``"permanent"`` or ``None`` (not a model failure).

    ``None`` means the exception is a bug or foreign error and must propagate unchanged.
    """
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11
        return "transient"
    openai = sys.modules.get("openai")
    if openai is not None:
        if isinstance(
            exc,
            (
                openai.RateLimitError,
                openai.APITimeoutError,
                openai.APIConnectionError,
                openai.InternalServerError,
            ),
        ):
            return "transient"
        if isinstance(exc, openai.APIStatusError):
            status = int(exc.status_code)
            # 408 is a server-side timeout: as transient as a client-side one.
            return "transient" if status >= 500 or status in (408, 429) else "permanent"
        if isinstance(exc, openai.OpenAIError):
            return "permanent"
    for name in ("httpx", "httpx2"):
        httpx = sys.modules.get(name)
        if httpx is None:
            continue
        # RemoteProtocolError is what a connection dropped mid-stream looks like.
        if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
            return "transient"
        if isinstance(exc, httpx.HTTPStatusError):
            status = exc.response.status_code
            return "transient" if status >= 500 or status in (408, 429) else "permanent"
        if isinstance(exc, httpx.HTTPError):
            return "permanent"
    return None


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's requested wait, from ``retry-after-ms`` or ``Retry-After``, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _describe_exception(exc: BaseException) -> str:
    status = _status_of(exc)
    body = getattr(exc, "body", None)
    detail = body.get("message") if isinstance(body, dict) else None
    text = str(detail) if detail else (str(exc) or type(exc).__name__)
    prefix = f"{type(exc).__name__}"
    if status is not None:
        prefix += f" {status}"
    return f"{prefix}: {text}"


_PERMANENT_HINTS: dict[int, str] = {
    401: "check the API key for {agent}",
    403: "the API key for {agent} is not allowed to use this model",
    404: "check the model name and base URL for {agent}",
}


def _permanent_error(call: _Call, exc: Exception) -> ModelError:
    status = _status_of(exc)
    hint = _PERMANENT_HINTS.get(status or 0, "")
    message = f"{call.agent} model ({call.label}) rejected the {call.task} request"
    message += f" ({_describe_exception(exc)})"
    if hint:
        message += ": " + hint.format(agent=call.agent)
    return ModelError(message, agent=call.agent, task=call.task, status=status, model=call.label)


# --- answers --------------------------------------------------------------------------


def _spec(task: str, inputs: BaseModel, *, structured: bool) -> TaskSpec:
    spec = TASKS.get(task)
    if spec is None:
        raise InvalidInput(f"unknown model task {task!r}; known: {', '.join(sorted(TASKS))}")
    if structured and spec.output is None:
        raise InvalidInput(f"task {task} answers prose; use ModelGateway.prose", task=task)
    if not structured and spec.output is not None:
        raise InvalidInput(f"task {task} answers JSON; use ModelGateway.structured", task=task)
    if not isinstance(inputs, spec.input):
        raise InvalidInput(
            f"task {task} takes {spec.input.__name__}, not {type(inputs).__name__}", task=task
        )
    return spec


class _NoJson(ValueError):
    """The answer holds no parseable JSON object."""


def extract_json_object(answer: str) -> dict[str, Any]:
    """The JSON object in ``answer``, tolerating code fences and surrounding prose."""
    text = _THINK.sub("", answer).strip()
    candidates = [m.group("body") for m in _FENCE.finditer(text)]
    candidates.append(text)
    first_error: str | None = None
    decoder = json.JSONDecoder()
    for candidate in candidates:
        start = candidate.find("{")
        if start < 0:
            continue
        end = candidate.rfind("}")
        # Whole span first (prose after the object may itself hold braces, hence the
        # raw_decode fallback that stops at the end of the first complete value).
        attempts = [candidate[start : end + 1]] if end > start else []
        for attempt in attempts:
            try:
                value = json.loads(attempt)
            except json.JSONDecodeError as exc:
                first_error = first_error or f"invalid JSON: {exc}"
            else:
                if isinstance(value, dict):
                    return value
        try:
            value, _ = decoder.raw_decode(candidate, start)
        except json.JSONDecodeError as exc:
            first_error = first_error or f"invalid JSON: {exc}"
            continue
        if isinstance(value, dict):
            return value
    raise _NoJson(first_error or "the answer contains no JSON object")


def _parse_structured(
    answer: str, output: type[T], check: Callable[[T], Sequence[str]] | None
) -> tuple[T | None, list[str], T | None]:
    """The accepted answer, else the errors and, if it validated, the rejected model."""
    try:
        data = unlooped(extract_json_object(answer))
    except _NoJson as exc:
        return None, [str(exc)], None
    try:
        result = output.model_validate(data)
    except ValidationError as exc:
        return None, format_validation_errors(exc), None
    problems = [str(p) for p in check(result)] if check is not None else []
    if problems:
        return None, problems, result
    return result, [], result


def _closed_answer(
    answer: str,
    output: type[T],
    check: Callable[[T], Sequence[str]] | None,
    salvage: Callable[[T], T] | None,
) -> T | None:
    """The complete part of an answer cut off at the token limit, if it is an answer."""
    for closed in closed_prefixes(_THINK.sub("", answer)):
        result, _, candidate = _parse_structured(closed, output, check)
        accepted = _accepted(result, candidate, check, salvage)
        if accepted is not None:
            return accepted
    return None


def _accepted(
    result: T | None,
    candidate: T | None,
    check: Callable[[T], Sequence[str]] | None,
    salvage: Callable[[T], T] | None,
) -> T | None:
    """The answer to use: a valid one, else a schema-valid one that fails a domain check
    mended mechanically where it can be (cheaper and surer than asking a small model
    again), else ``None``."""
    if result is not None:
        return result
    if candidate is not None and salvage is not None:
        mended = salvage(candidate)
        if check is None or not check(mended):
            return mended
    return None


def format_validation_errors(exc: ValidationError) -> list[str]:
    """Pydantic errors as ``"scores.prose: Input should be ..."`` lines."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path}: {error['msg']}" if path else str(error["msg"]))
    return lines


def _summarise(errors: Sequence[str]) -> str:
    shown = "; ".join(errors[:5])
    if len(errors) > 5:
        shown += f"; and {len(errors) - 5} more"
    return shown


def _structured_repair(task: str, errors: Sequence[str]) -> str:
    listed = "\n".join(f"- {e}" for e in errors[:_MAX_LISTED_ERRORS])
    if len(errors) > _MAX_LISTED_ERRORS:
        listed += f"\n- ... and {len(errors) - _MAX_LISTED_ERRORS} more"
    return (
        f"Your previous answer to the {task} task is not valid:\n{listed}\n\n"
        "Fix exactly these problems and keep everything else that was correct. Reply with "
        "only the corrected JSON object: no explanation, no code fences."
    )


def _clean_prose(answer: str) -> str:
    return _THINK.sub("", answer).strip()
