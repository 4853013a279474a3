"""The session's bookends: ``intake`` opens the book its entry point recorded, ``finish``
closes it. A request is validated once, at the edge, by :func:`validate_request`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast, get_args

from langgraph.runtime import Runtime

from errors import InvalidInput, NotFound, StorageError
from memory.text import is_cjk
from nodes.common import novel_id_of, progress
from nodes.context import ScribeContext
from nodes.state import NovelInput, NovelState, PausePoint

MAX_PREMISE_CHARS = 4000
MAX_CHAPTERS = 100
MAX_GENRE_CHARS = 80
MAX_REVISIONS = 10
PAUSE_POINTS: tuple[str, ...] = get_args(PausePoint)
LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
"""A BCP 47 language tag as books use them: ``en``, ``zh``, ``zh-Hant``, ``pt-BR``."""
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")


def detect_language(premise: str) -> str:
    """The language a premise is written in, as far as the script tells: Japanese (kana),
    Korean (hangul), Chinese (other CJK characters), else English."""
    if not is_cjk(premise):
        return "en"
    if _KANA.search(premise):
        return "ja"
    if _HANGUL.search(premise):
        return "ko"
    return "zh"


@dataclass(frozen=True)
class BookRequest:
    """A validated request to write a book."""

    premise: str
    chapters: int
    genre: str | None
    pause_after: tuple[PausePoint, ...]
    language: str = "en"
    """The book's language (BCP 47): given, or detected from the premise."""
    max_revisions: int | None = None
    """Drafts the reviewer may send back per chapter; None: the engine's setting."""

    def graph_input(self) -> NovelInput:
        """The novel graph's input for this request (its first run on a new thread)."""
        data: NovelInput = {
            "premise": self.premise,
            "chapters": self.chapters,
            "genre": self.genre,
            "language": self.language,
            "pause_after": list(self.pause_after),
        }
        if self.max_revisions is not None:
            data["max_revisions"] = self.max_revisions
        return data


def validate_request(
    premise: object,
    chapters: object,
    genre: object = None,
    pause_after: Iterable[object] = (),
    language: object = None,
    max_revisions: object = None,
) -> BookRequest:
    """Check a book request; raises :class:`InvalidInput` naming the offending field.

    Without a ``language`` the premise's script decides (see :func:`detect_language`).
    """
    if not isinstance(premise, str) or not premise.strip():
        raise InvalidInput("premise must be a non-empty text", field="premise")
    text = premise.strip()
    if len(text) > MAX_PREMISE_CHARS:
        raise InvalidInput(
            f"premise is {len(text)} characters long; the limit is {MAX_PREMISE_CHARS}",
            field="premise",
        )
    if isinstance(chapters, bool) or not isinstance(chapters, int):
        raise InvalidInput("chapters must be a whole number", field="chapters")
    if not 1 <= chapters <= MAX_CHAPTERS:
        raise InvalidInput(
            f"chapters must be between 1 and {MAX_CHAPTERS}, got {chapters}", field="chapters"
        )
    if genre is not None and (not isinstance(genre, str) or len(genre.strip()) > MAX_GENRE_CHARS):
        raise InvalidInput(
            f"genre must be a text of at most {MAX_GENRE_CHARS} characters", field="genre"
        )
    pauses: list[PausePoint] = []
    for point in pause_after:
        if point not in PAUSE_POINTS:
            raise InvalidInput(
                f"unknown pause point {point!r}; use one of: {', '.join(PAUSE_POINTS)}",
                field="pause_after",
            )
        if point not in pauses:
            pauses.append(cast(PausePoint, point))
    clean_genre = genre.strip() if isinstance(genre, str) and genre.strip() else None
    if language is None or language == "":
        tag = detect_language(text)
    elif isinstance(language, str) and LANGUAGE_TAG.match(language.strip()):
        tag = language.strip()
    else:
        raise InvalidInput(
            f"language must be a language tag such as 'en', 'zh' or 'pt-BR', got {language!r}",
            field="language",
        )
    if max_revisions is not None and (
        isinstance(max_revisions, bool)
        or not isinstance(max_revisions, int)
        or not 0 <= max_revisions <= MAX_REVISIONS
    ):
        raise InvalidInput(
            f"max_revisions must be a whole number from 0 to {MAX_REVISIONS}",
            field="max_revisions",
        )
    return BookRequest(text, chapters, clean_genre, tuple(pauses), tag, max_revisions)


async def intake(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Open the book: bind the session to the thread and take up what its entry point
    validated and recorded (the run service, which wrote the novel's record before the run
    was queued). The record is the truth for premise, chapters and genre; the input brings
    the rest of the request."""
    thread_id = runtime.execution_info.thread_id if runtime.execution_info else None
    novel_id = state.get("novel_id") or thread_id
    if not novel_id:
        raise StorageError("the novel graph needs a checkpointer and a thread_id to run")
    try:
        record = await runtime.context.store.get_novel(novel_id)
    except NotFound:
        raise NotFound(
            "novel",
            novel_id,
            f"novel {novel_id} is not recorded: books start through the run service "
            "(scribe write, the runs or novels API), which validates and records them",
        ) from None
    progress(runtime, "director", "starting", chapters=record.chapters)
    return {
        "novel_id": novel_id,
        "premise": record.premise,
        "chapters": record.chapters,
        "genre": record.genre,
        "language": state.get("language") or detect_language(record.premise),
        "pause_after": list(state.get("pause_after", ())),
        "max_revisions": state.get("max_revisions", runtime.context.options.max_revisions),
        "chapter": 1,
        "drafts": 0,
        "revision": 0,
        "accepted": 0,
        "recent_summaries": [],
        "done": False,
    }


async def finish(state: NovelState, runtime: Runtime[ScribeContext]) -> dict[str, Any]:
    """Close the book: its title in the record and ``done`` in state (the run that ends
    here marks the novel completed: see ``server.runs.worker.record_novel_status``)."""
    novel_id = novel_id_of(state)
    title = state.get("bible", {}).get("title")
    if title:
        await runtime.context.store.update_novel(novel_id, title=title)
    progress(runtime, "director", "finished", chapters=state.get("accepted", 0))
    return {"done": True}
