"""The one door between nodes and language models.

Every node asks :class:`ModelGateway` for a task's answer; the gateway picks the
agent's model, renders the messages (:func:`nodes.llm.tasks.render_messages`), streams
the answer (so LangGraph's ``"messages"`` stream mode sees tokens as they come),
validates structured answers with one repair round, and turns transport failures into
the engine's error hierarchy:

* transient failures (429, 5xx, timeouts, dropped connections) are retried with
  exponential backoff and full jitter, honouring ``Retry-After``; when they persist the
  call raises :class:`~memory.errors.ModelUnavailable`;
* permanent API failures (400, 401, 403, 404, ...) raise
  :class:`~memory.errors.ModelError` at once;
* answers that stay malformed after the repair raise
  :class:`~memory.errors.ModelOutputError`.

``openai`` and ``httpx`` are never imported here: an exception can only be an instance
of their classes if the model already imported them, so classification looks the
modules up in :data:`sys.modules` (keeps ``scribe --help`` fast).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
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

from memory.errors import (
    ConfigurationError,
    InvalidInput,
    ModelError,
    ModelOutputError,
    ModelUnavailable,
    ScribeError,
)
from memory.traces.port import ModelCall
from nodes.llm.config import RetryPolicy
from nodes.llm.tasks import TASKS, TaskSpec, render_messages
from nodes.llm.trace import CallKey, CallPlace, CallRouter, CallSink, next_place, set_current_call
from nodes.schemas import AGENTS, Agent

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.runnables import Runnable, RunnableConfig

T = TypeVar("T", bound=BaseModel)

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


class ModelGateway:
    """Per-agent model access used by every node.

    ``models`` maps each agent to its chat model. ``retry`` bounds the attempts made for
    transient failures; ``sleep`` waits between them (injected so tests need not wait).
    ``json_mode`` lists the agents whose endpoint should be asked for
    ``response_format={"type": "json_object"}`` on structured tasks: it is bound per call
    rather than on the model, because the writer's prose task on the same kind of
    endpoint must stay free text.
    """

    def __init__(
        self,
        models: Mapping[Agent, BaseChatModel],
        *,
        retry: RetryPolicy = _DEFAULT_RETRY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        json_mode: Collection[Agent] = (),
        sink: CallSink | None = None,
        router: CallRouter | None = None,
    ) -> None:
        self._models: dict[Agent, BaseChatModel] = dict(models)
        self._retry = retry
        self._sleep = sleep
        self._json_mode = frozenset(json_mode)
        self._sink = sink
        self._router = router

    def with_tracing(
        self, *, sink: CallSink | None = None, router: CallRouter | None = None
    ) -> ModelGateway:
        """The same models and policy, recording calls to ``sink`` and letting ``router``
        answer some of them (a replay). Arguments left ``None`` keep this gateway's."""
        return ModelGateway(
            self._models,
            retry=self._retry,
            sleep=self._sleep,
            json_mode=self._json_mode,
            sink=sink if sink is not None else self._sink,
            router=router if router is not None else self._router,
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
    ) -> T:
        """Ask the task's agent for a JSON answer validated by ``output`` (and ``check``).

        ``check`` returns domain problems (e.g. "outline has 3 chapters, expected 5");
        any problem, like any parse or validation error, earns the model one repair
        round with the exact errors before :class:`ModelOutputError` is raised.
        """
        spec = _spec(task, inputs, structured=True)
        call = self._call_for(spec, structured=True)
        messages = render_messages(task, inputs)

        answer = await self._complete(call, messages, repair=False)
        result, errors = _parse_structured(answer, output, check)
        if result is not None:
            return result

        repair = [*messages, AIMessage(answer), HumanMessage(_structured_repair(task, errors))]
        answer = await self._complete(call, repair, repair=True)
        result, errors = _parse_structured(answer, output, check)
        if result is not None:
            return result
        raise ModelOutputError(
            f"{call.agent} returned an invalid {task} answer after one repair attempt: "
            + _summarise(errors),
            agent=call.agent,
            task=task,
            errors=errors,
        )

    async def prose(self, task: str, inputs: BaseModel) -> str:
        """Ask the task's agent for free text; an empty answer gets one repair round."""
        spec = _spec(task, inputs, structured=False)
        call = self._call_for(spec, structured=False)
        messages = render_messages(task, inputs)

        answer = await self._complete(call, messages, repair=False)
        text = _clean_prose(answer)
        if text:
            return text

        repair = [*messages, AIMessage(answer), HumanMessage(_PROSE_REPAIR)]
        text = _clean_prose(await self._complete(call, repair, repair=True))
        if text:
            return text
        raise ModelOutputError(
            f"{call.agent} returned an empty {task} answer after one repair attempt",
            agent=call.agent,
            task=task,
            errors=["empty answer"],
        )

    # --- internals --------------------------------------------------------------------

    def _call_for(self, spec: TaskSpec, *, structured: bool) -> _Call:
        model = self.model_for(spec.agent)
        json_mode = structured and spec.agent in self._json_mode
        return _Call(
            spec.agent,
            spec.name,
            model,
            model_label(model),
            structured,
            {**model_settings(model), "json_mode": json_mode},
        )

    def _runnable(self, call: _Call, place: CallPlace | None) -> tuple[Runnable[Any, Any], str]:
        """The runnable answering this call (the router's choice, else the agent's model)
        and its label."""
        model: BaseChatModel | None = None
        if self._router is not None:
            model = self._router.model_for(call.agent, place)
        runnable: Runnable[Any, Any] = call.runnable
        label = call.label
        if model is not None:
            runnable, label = model, model_label(model)
        if call.settings.get("json_mode") and model is None:
            runnable = runnable.bind(response_format={"type": "json_object"})
        return runnable, label

    async def _complete(self, call: _Call, messages: list[BaseMessage], *, repair: bool) -> str:
        """One logical call: budget check, routing, retries, and its record."""
        place = next_place()
        if self._sink is not None and place is not None and place.run_id:
            self._sink.before_call(place.run_id)
        runnable, label = self._runnable(call, place)
        reset = set_current_call(
            CallKey(call.agent, place.node, place.chapter, place.index) if place else None
        )
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        outcome = _Outcome()
        try:
            return await self._attempts(call, runnable, label, messages, repair, outcome)
        except BaseException as exc:
            outcome.error = _describe_exception(exc)
            raise
        finally:
            reset()
            if self._sink is not None and place is not None and place.run_id and place.thread_id:
                self._sink.record(
                    _record(call, place, label, messages, repair, outcome, started_at, started)
                )

    async def _attempts(
        self,
        call: _Call,
        runnable: Runnable[Any, Any],
        label: str,
        messages: list[BaseMessage],
        repair: bool,
        outcome: _Outcome,
    ) -> str:
        """Stream one answer, retrying transient failures per the retry policy."""
        tags = [f"agent:{call.agent}", f"task:{call.task}"]
        if repair:
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
                return await _stream_text(runnable, messages, config, outcome)
            except ScribeError:
                raise
            except Exception as exc:
                failure = classify_failure(exc)
                if failure is None:
                    raise
                if failure == "permanent":
                    raise _permanent_error(call, exc) from exc
                last = exc
            if attempt < attempts:
                await self._sleep(self._delay(attempt, last))
        assert last is not None  # the loop ran at least once and only falls through on failure
        raise ModelUnavailable(
            f"{call.agent} model ({label}) unavailable for {call.task} after "
            f"{attempts} attempts: {_describe_exception(last)}",
            agent=call.agent,
            task=call.task,
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


async def _stream_text(
    runnable: Runnable[Any, Any],
    messages: list[BaseMessage],
    config: RunnableConfig,
    outcome: _Outcome,
) -> str:
    parts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    input_tokens = output_tokens = 0
    async for chunk in runnable.astream(messages, config=config):
        text = getattr(chunk, "text", None)
        if isinstance(text, str):
            parts.append(str(text))
        elif isinstance(chunk, str):
            parts.append(chunk)
        usage = getattr(chunk, "usage_metadata", None)
        if usage:
            # Providers report usage once (on the last chunk); summing is safe either way.
            input_tokens += int(usage.get("input_tokens") or 0)
            output_tokens += int(usage.get("output_tokens") or 0)
        for piece in getattr(chunk, "tool_call_chunks", None) or ():
            tool_calls.append(dict(piece))
        replayed = (getattr(chunk, "response_metadata", None) or {}).get("replayed_from")
        if replayed:
            outcome.replayed_from = str(replayed)
    outcome.answer = "".join(parts)
    outcome.input_tokens, outcome.output_tokens = input_tokens, output_tokens
    outcome.tool_calls = tool_calls
    return outcome.answer


def _message_json(message: BaseMessage) -> dict[str, Any]:
    role = {"system": "system", "human": "user", "ai": "assistant"}.get(message.type, message.type)
    return {"role": role, "content": message.content}


def _record(
    call: _Call,
    place: CallPlace,
    label: str,
    messages: list[BaseMessage],
    repair: bool,
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
        repair=repair,
        model=label,
        settings=call.settings,
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
) -> tuple[T | None, list[str]]:
    try:
        data = extract_json_object(answer)
    except _NoJson as exc:
        return None, [str(exc)]
    try:
        result = output.model_validate(data)
    except ValidationError as exc:
        return None, format_validation_errors(exc)
    problems = [str(p) for p in check(result)] if check is not None else []
    if problems:
        return None, problems
    return result, []


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


_PROSE_REPAIR = (
    "Your previous answer was empty. Answer the task now: reply with the full text "
    "itself and nothing else."
)


def _clean_prose(answer: str) -> str:
    return _THINK.sub("", answer).strip()
