"""Model settings of one agent, as handed to the LLM layer by the entry point."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    """How one agent reaches its OpenAI-compatible model."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float = 0.7
    max_tokens: int = 4096
    timeout_s: float = 120.0
    json_mode: bool = False
    """Ask the endpoint for ``response_format={"type": "json_object"}`` on structured tasks."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient model failures (429, 5xx, timeouts, dropped connections)."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
