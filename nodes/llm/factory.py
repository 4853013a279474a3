"""Chat models and the gateway built from per-agent model settings.

Heavy libraries (``langchain_openai``, ``openai``) are imported inside the functions so
importing ``nodes.llm`` stays cheap (``scribe --help`` must be fast).

The structured-output mode is deliberately *not* baked into the model:
``ChatOpenAI(model_kwargs={"response_format": ...})`` would force JSON on every call,
including the writer's prose. Instead :func:`build_gateway` tells the
:class:`ModelGateway` each agent's mode, and the gateway binds ``response_format`` per
structured call (``model.bind(...)``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from errors import ConfigurationError
from nodes.llm.config import ModelConfig, RetryPolicy
from nodes.llm.gateway import ModelGateway
from nodes.llm.structured import StructuredMode, resolve_mode
from nodes.schemas import AGENTS, Agent

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

OFFLINE_PREFIX = "offline:"
"""``offline:<variant>`` names a differently seeded offline model (evaluations, tests)."""
_KEYLESS_PLACEHOLDER = "not-needed"
"""Sent to custom endpoints configured without a key (Ollama, llama.cpp, vLLM ignore it)."""


def build_chat_model(
    config: ModelConfig | None, *, offline_tokens_per_second: float | None = None
) -> BaseChatModel:
    """The chat model for one agent: offline when ``config`` is ``None``, else ChatOpenAI.

    The OpenAI client's own retries are disabled (``max_retries=0``) because the gateway
    retries with its own policy and reports the attempts; answers are streamed so
    LangGraph's ``"messages"`` mode can relay tokens as they arrive. The offline model can
    be slowed to a fixed token rate for benchmarks and crash tests.
    """
    if config is None or config.model.startswith(OFFLINE_PREFIX):
        from nodes.llm.offline import OfflineChatModel

        variant = config.model[len(OFFLINE_PREFIX) :].strip() if config else ""
        return OfflineChatModel(
            tokens_per_second=offline_tokens_per_second, variant=variant or None
        )

    import openai
    from langchain_openai import ChatOpenAI

    if not config.model.strip():
        raise ConfigurationError("a model name is required", base_url=config.base_url)
    api_key = config.api_key
    if api_key is None and config.base_url is not None:
        api_key = _KEYLESS_PLACEHOLDER
    try:
        model = ChatOpenAI(
            model=config.model,
            base_url=config.base_url,
            # None lets the OpenAI client fall back to its standard OPENAI_API_KEY lookup.
            api_key=api_key,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            timeout=config.timeout_s,
            # Bound silent streams by the same limit rather than the library's env default.
            stream_chunk_timeout=config.timeout_s,
            max_retries=0,
            seed=config.seed,
            extra_body=dict(config.extra_body) or None,
            streaming=True,
            stream_usage=True,
        )
    except openai.OpenAIError as exc:
        raise ConfigurationError(
            f"cannot build model {config.model!r}: {exc} (set an API key for it)",
            model=config.model,
            base_url=config.base_url,
        ) from exc
    return model


def build_gateway(
    configs: Mapping[Agent, ModelConfig | None],
    retry: RetryPolicy,
    *,
    offline_tokens_per_second: float | None = None,
    split_answers: Collection[Agent] = (),
) -> ModelGateway:
    """A gateway serving all four agents; an agent without a config gets the offline model.
    ``split_answers``: the agents asked for their largest answers in parts
    (:meth:`ModelGateway.splits`), whatever model serves them."""
    models: dict[Agent, BaseChatModel] = {}
    for agent in AGENTS:
        try:
            models[agent] = build_chat_model(
                configs.get(agent), offline_tokens_per_second=offline_tokens_per_second
            )
        except ConfigurationError as exc:
            raise ConfigurationError(f"{agent}: {exc.message}", agent=agent, **exc.data) from exc
    modes: dict[Agent, StructuredMode] = {}
    windows: dict[Agent, int] = {}
    for agent in AGENTS:
        config = configs.get(agent)
        if config is None:
            continue
        modes[agent] = resolve_mode(config.structured_output, config.base_url)
        if config.context_window is not None:
            windows[agent] = config.context_window
    return ModelGateway(
        models, retry=retry, modes=modes, context_windows=windows, split_answers=split_answers
    )
