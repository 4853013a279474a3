"""Fitting a prompt into an agent's context window.

Local models have small windows (4k to 32k tokens) and a long book's prompts grow with it:
retrieved passages, chapter summaries, the world brief, a previous draft under revision.
Before a call the gateway measures the rendered prompt and, when it would not leave room
for the answer, drops the task's optional material in a fixed order (least relevant
passage first, oldest summary first, then places and minor characters of the brief)
until it fits. What the task cannot do without (the draft under review, the outline)
is never cut: if the prompt still does not fit, :class:`~errors.ContextOverflow`
says by how much.

Token counts are estimates from characters (no tokenizer of the endpoint's model is
available here): about 3.2 characters per token for alphabetic text and one token per
CJK character, both on the generous side so an estimate rarely undercounts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from pydantic import BaseModel

_CHARS_PER_TOKEN = 3.2
_MESSAGE_OVERHEAD = 8
"""Tokens a chat template adds around each message (role markers, separators)."""
MIN_ANSWER_TOKENS = 256
"""The smallest answer budget a call is made with; below it the prompt is cut instead."""


def estimate_tokens(text: str) -> int:
    """A generous estimate of the tokens ``text`` takes."""
    cjk = sum(
        1
        for c in text
        if "\u3040" <= c <= "\u30ff" or "\u3400" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff"
    )
    return cjk + math.ceil((len(text) - cjk) / _CHARS_PER_TOKEN)


def prompt_tokens(messages: Sequence[BaseMessage]) -> int:
    """Estimated tokens of a chat prompt."""
    total = 0
    for message in messages:
        content = message.content if isinstance(message.content, str) else str(message.content)
        total += estimate_tokens(content) + _MESSAGE_OVERHEAD
    return total


@dataclass(frozen=True)
class Trim:
    """One optional part of a task's input: a list to shorten, or a value to drop.

    ``path`` is dotted (``"world.places"``); ``end`` says which end of a list goes first
    (``"end"``: the last items, e.g. the least relevant passages; ``"start"``: the first,
    e.g. the oldest summaries). A path to a non-list value is set to ``None``.
    """

    path: str
    end: Literal["start", "end"] = "end"


@dataclass(frozen=True)
class Fitted:
    """A task input cut to fit, with what was cut."""

    inputs: BaseModel
    messages: list[BaseMessage]
    prompt_tokens: int
    answer_tokens: int
    dropped: dict[str, int]
    """Items removed per path (1 for a dropped value)."""


def fit(
    inputs: BaseModel,
    render: Callable[[BaseModel], list[BaseMessage]],
    *,
    window: int | None,
    max_answer: int,
    trims: Sequence[Trim],
) -> Fitted | int:
    """``inputs`` cut by ``trims`` until the rendered prompt leaves room for an answer.

    The answer budget is ``max_answer`` tokens, or less when the window is short, but never
    under :data:`MIN_ANSWER_TOKENS` (or under ``max_answer`` when that is smaller). Returns
    the estimated prompt tokens (an ``int``) when even the fully cut prompt does not fit.
    """
    messages = render(inputs)
    tokens = prompt_tokens(messages)
    if window is None:
        return Fitted(inputs, messages, tokens, max_answer, {})
    floor = min(max_answer, MIN_ANSWER_TOKENS)
    if window - tokens >= floor:
        return Fitted(inputs, messages, tokens, min(max_answer, window - tokens), {})
    data = inputs.model_dump()
    dropped: dict[str, int] = {}
    for trim in trims:
        while window - tokens < floor and _cut(data, trim):
            dropped[trim.path] = dropped.get(trim.path, 0) + 1
            candidate = type(inputs).model_validate(data)
            messages = render(candidate)
            tokens = prompt_tokens(messages)
            inputs = candidate
        if window - tokens >= floor:
            return Fitted(inputs, messages, tokens, min(max_answer, window - tokens), dropped)
    return tokens


def _cut(data: dict[str, Any], trim: Trim) -> bool:
    """Remove one item (or the value) at ``trim.path``; ``False`` when nothing is left."""
    *parents, last = trim.path.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return False
    if not isinstance(node, dict) or node.get(last) is None:
        return False
    value = node[last]
    if isinstance(value, list):
        if not value:
            return False
        value.pop(0 if trim.end == "start" else -1)
        return True
    node[last] = None
    return True
