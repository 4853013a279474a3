"""Model settings of one agent, as handed to the LLM layer by the entry point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodes.llm.structured import StructuredSetting


@dataclass(frozen=True)
class ModelConfig:
    """How one agent reaches its OpenAI-compatible model."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 0.7
    max_tokens: int = 4096
    timeout_s: float = 120.0
    structured_output: StructuredSetting = "auto"
    """How structured answers are asked for (``nodes/llm/structured.py``)."""
    context_window: int | None = None
    """Prompt plus answer, in tokens; ``None``: assume room (hosted long-context models)."""
    seed: int | None = None
    """Sampling seed sent with every request (reproducible runs where the endpoint
    honours it); re-asks use seeds derived from it."""
    extra_body: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """Server-specific request fields sent with every request, e.g. llama.cpp's
    ``{"repeat_penalty": 1.15, "repeat_last_n": 4096}`` or vLLM's
    ``{"repetition_penalty": 1.1}``."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient model failures (429, 5xx, timeouts, dropped connections),
    and how often an unusable answer (invalid, refused, looping, cut off) is asked again."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    answer_attempts: int = 3
    """Requests per answer: the first and up to two re-asks (repairs included)."""
