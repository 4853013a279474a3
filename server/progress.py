"""Terminal progress for a writing run: one live display, not a flood of log lines."""

from __future__ import annotations

import sys
from typing import Any, TextIO

_LABELS = {
    "starting": "starting",
    "planning": "planning the story",
    "planned": "story planned",
    "seeding": "building the world",
    "seeded": "world built",
    "beats": "planning beats",
    "beats_from_outline": "planned from the outline (the model gave no usable plan)",
    "claims_unread": "checked by the text rules only where the model gave no usable claims",
    "drafting": "drafting",
    "drafted": "draft written",
    "reviewing": "reviewing",
    "accept": "accepted",
    "accept_with_issues": "accepted with notes",
    "revise": "sent back for revision",
    "committed": "chapter stored and indexed",
    "recording": "recording world changes",
    "recorded": "world updated",
    "awaiting_author": "waiting for the author",
    "next_chapter": "next chapter",
    "finished": "finished",
}


def describe(event: dict[str, Any]) -> str:
    """One short human line for a progress event."""
    step = str(event.get("step", ""))
    label = _LABELS.get(step, step.replace("_", " "))
    parts = [f"{event.get('agent', '?'):<10}", label]
    if "chapter" in event and step not in ("starting", "finished"):
        parts.insert(1, f"ch {event['chapter']}")
    if event.get("revision"):
        parts.append(f"(revision {event['revision']})")
    if step == "planned" and event.get("title"):
        parts.append(f"“{event['title']}”")
    if step in ("accept", "accept_with_issues", "revise") and "score" in event:
        parts.append(f"(lowest score {event['score']})")
    findings = event.get("findings")
    if step in ("accept_with_issues", "revise") and isinstance(findings, list) and findings:
        # The first finding (majors come first) says why, in one line.
        more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
        parts.append(f"— {clipped(str(findings[0]), 90)}{more}")
    return " ".join(parts)


def clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class ProgressView:
    """A live progress bar on a terminal; on a pipe, one line per milestone only."""

    _MILESTONES = frozenset({"planned", "seeded", "recorded", "awaiting_author", "finished"})
    # Steps the author should see even on a live display: the book went on, but not as asked.
    _WARNINGS = frozenset({"beats_from_outline", "claims_unread"})

    def __init__(self, chapters: int, *, done: int = 0, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._chapters = chapters
        self._done = done
        self._live = self._stream.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressView:
        if self._live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]chapters"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=Console(file=self._stream),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "starting", total=self._chapters, completed=self._done
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        """Take one progress event from the graph's ``custom`` stream."""
        step = event.get("step")
        if step == "recorded":
            self._done = max(self._done, int(event.get("chapter", self._done)))
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done, description=describe(event))
            if step in self._WARNINGS:
                self._progress.console.print(describe(event))
        elif step in self._MILESTONES or step in self._WARNINGS:
            print(
                f"[{self._done}/{self._chapters}] {describe(event)}", file=self._stream, flush=True
            )
