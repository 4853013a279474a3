"""The tasks agents ask models to do, and how a task becomes chat messages.

A request is two messages: the agent's system prompt (``nodes/prompts/<task>.md`` plus,
for structured tasks, the JSON schema of the answer) and a human message whose first
line is ``Task: <name>`` followed by the task input as a fenced JSON block. Any chat
model can answer it; the offline model reads the same two parts back with
:func:`parse_request`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from nodes import schemas
from nodes.llm.budget import Trim
from nodes.llm.structured import decoding_schema
from nodes.schemas import Agent


@dataclass(frozen=True)
class TaskSpec:
    """A task: which agent does it, what it is given, what it must answer.

    ``output`` is ``None`` for prose tasks, whose answer is plain text.
    """

    name: str
    agent: Agent
    input: type[BaseModel]
    output: type[BaseModel] | None
    trims: tuple[Trim, ...] = ()
    """Optional input material, cut in this order when the prompt is too long for the
    agent's context window (``nodes/llm/budget.py``)."""
    answer_tokens: int = 1200
    """The most tokens a sound answer needs (plus ``per_chapter`` for each chapter of the
    book); a model still writing past it is rambling or looping."""
    per_chapter: int = 0


TOKENS_PER_WORD = 2.0
"""Prose budget per target word: English runs about 1.3 tokens a word, CJK text more per
character; the slack lets a draft run long and still end on its own."""


def answer_cap(spec: TaskSpec, inputs: BaseModel, target_words: int | None = None) -> int:
    """The token budget of one answer to ``spec`` with ``inputs``."""
    if spec.output is None and target_words:
        return round(target_words * TOKENS_PER_WORD) + 200
    chapters = getattr(inputs, "chapters", 0)
    return spec.answer_tokens + spec.per_chapter * (chapters if isinstance(chapters, int) else 0)


_BRIEF_TRIMS = (Trim("world.places"), Trim("world.characters"))
"""The world brief lists the chapter's focus first, so cutting from the end keeps it."""

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "story_plan",
            "director",
            schemas.StoryPlanInput,
            schemas.StoryPlan,
            answer_tokens=400,
            per_chapter=200,
        ),
        TaskSpec(
            "chapter_beats",
            "director",
            schemas.BeatsInput,
            schemas.ChapterBeats,
            (Trim("recent_summaries", "start"), *_BRIEF_TRIMS),
        ),
        TaskSpec("world_places", "worldsmith", schemas.WorldSeedInput, schemas.WorldPlaces),
        TaskSpec(
            "world_cast",
            "worldsmith",
            schemas.WorldCastInput,
            schemas.WorldCast,
            answer_tokens=1200,
            per_chapter=20,
        ),
        TaskSpec(
            "world_links",
            "worldsmith",
            schemas.WorldLinksInput,
            schemas.WorldLinks,
            answer_tokens=900,
            per_chapter=30,
        ),
        TaskSpec(
            "chapter_draft",
            "writer",
            schemas.DraftInput,
            None,
            (
                Trim("passages"),
                Trim("previous_summary"),
                *_BRIEF_TRIMS,
                Trim("issues"),
            ),
            answer_tokens=4096,
        ),
        TaskSpec(
            "chapter_claims",
            "reviewer",
            schemas.ClaimsInput,
            schemas.ChapterClaims,
            _BRIEF_TRIMS,
            answer_tokens=1600,
        ),
        *(
            TaskSpec(task, "reviewer", schemas.ClaimsInput, part, _BRIEF_TRIMS, answer_tokens=900)
            for task, part in schemas.CLAIM_PARTS.items()
        ),
        TaskSpec("chapter_review", "reviewer", schemas.ReviewInput, schemas.Verdict, _BRIEF_TRIMS),
    )
}

LANGUAGE_NAMES: dict[str, str] = {
    "zh": "Chinese (simplified characters, 简体中文)",
    "zh-Hans": "Chinese (simplified characters, 简体中文)",
    "zh-Hant": "Chinese (traditional characters, 繁體中文)",
    "ja": "Japanese (日本語)",
    "ko": "Korean (한국어)",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
}


def language_line(tag: str) -> str:
    """The instruction that makes a model write a book in the language ``tag``."""
    name = LANGUAGE_NAMES.get(tag) or LANGUAGE_NAMES.get(tag.split("-")[0]) or f"the language {tag}"
    return (
        f"\n\nThe book is written in {name}. Write all prose and every free-text value in "
        "that language, and give new characters and places names that belong in it; JSON "
        "field names, set-up keys, snake_case attribute and relationship names and the "
        "listed enum values stay exactly as specified."
    )


_TASK_LINE = re.compile(r"^Task: (?P<task>[a-z_]+)\s*$", re.MULTILINE)
_JSON_BLOCK = re.compile(r"```json\n(?P<body>.*?)\n```", re.DOTALL)


@cache
def system_prompt(task: str) -> str:
    """The task's system prompt, read once from ``nodes/prompts``."""
    return resources.files("nodes.prompts").joinpath(f"{task}.md").read_text(encoding="utf-8")


def render_messages(
    task: str,
    inputs: BaseModel,
    schema: dict[str, Any] | None = None,
    *,
    show_schema: bool = True,
) -> list[BaseMessage]:
    """The chat messages for one request of ``task`` with ``inputs``.

    A structured task's system prompt ends with the answer's JSON schema: ``schema`` when
    given (the call's narrowed decoding schema), else the task's own; with
    ``show_schema=False`` (the endpoint constrains decoding to it) only the instruction
    to answer in JSON. The input is compact JSON: indentation would cost a local model
    a fifth of its prompt.
    """
    spec = TASKS[task]
    system = system_prompt(task)
    language = getattr(inputs, "language", None)
    if isinstance(language, str) and language.split("-")[0] != "en":
        system += language_line(language)
    if spec.output is not None and show_schema:
        shown = schema if schema is not None else decoding_schema(spec.output)
        system += (
            "\n\nAnswer with one JSON object and nothing else. It must validate against "
            f"this JSON schema:\n{json.dumps(shown, separators=(',', ':'), ensure_ascii=False)}"
        )
    elif spec.output is not None:
        system += "\n\nAnswer with one JSON object with the fields named above, and nothing else."
    body = inputs.model_dump_json(exclude_none=True)
    return [SystemMessage(system), HumanMessage(f"Task: {task}\n\nInput:\n```json\n{body}\n```")]


@dataclass(frozen=True)
class ParsedRequest:
    """A request read back from messages: the task name and its raw input."""

    task: str
    inputs: dict[str, Any]
    repair: str | None
    """The repair instruction, when the last message asks to fix a malformed answer."""


def parse_request(messages: list[BaseMessage]) -> ParsedRequest | None:
    """Find the task and its input in messages built by :func:`render_messages`."""
    for message in messages:
        if not isinstance(message, HumanMessage) or not isinstance(message.content, str):
            continue
        task = _TASK_LINE.search(message.content)
        block = _JSON_BLOCK.search(message.content)
        if task and block:
            last = messages[-1]
            repair = (
                last.content
                if last is not message
                and isinstance(last, HumanMessage)
                and isinstance(last.content, str)
                else None
            )
            return ParsedRequest(task.group("task"), json.loads(block.group("body")), repair)
    return None
