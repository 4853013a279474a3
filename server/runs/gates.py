"""Answers to the author gates, checked before they reach the graph.

A resume value the gate node refuses would stay recorded on the thread's checkpoint and
fail every later answer too (LangGraph keeps the first resume value of a task). So bad
answers are refused up front and change nothing, as the CLI's ``scribe resume`` does.
"""

from __future__ import annotations

from typing import Any

from langgraph.types import Interrupt, StateSnapshot

from errors import InvalidInput
from nodes.human import parse_chapter_decision, parse_outline_decision


def check_resume(snapshot: StateSnapshot, resume: Any) -> None:
    """Raise InvalidInput (``field="command.resume"``) when a waiting gate would refuse
    ``resume``. A mapping of interrupt ids answers those interrupts; any other value
    answers every pending one. Nothing waiting: nothing to check."""
    pending = {item.id: item for item in snapshot.interrupts}
    if not pending:
        return
    answers: list[tuple[Interrupt, Any]]
    if isinstance(resume, dict) and resume and set(resume) <= set(pending):
        answers = [(pending[key], value) for key, value in resume.items()]
    else:
        answers = [(item, resume) for item in pending.values()]
    for item, value in answers:
        gate = item.value.get("gate") if isinstance(item.value, dict) else None
        try:
            if gate == "outline":
                parse_outline_decision(value)
            elif gate == "chapter":
                parse_chapter_decision(value, item.value)
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="command.resume", gate=gate) from exc
