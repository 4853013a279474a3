"""The runtime context handed to every node by the graph (never checkpointed).

The entry point (CLI or server) builds it from settings; nodes reach stores and models
only through it and never read the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memory.app.port import AppStore
from memory.retrieval.port import PassageIndex
from memory.world.port import WorldMemory
from nodes.llm.gateway import ModelGateway


@dataclass(frozen=True)
class WritingOptions:
    """Knobs of the writing loop, chosen at the entry point."""

    max_revisions: int = 2
    """Drafts sent back for revision at most this many times per chapter."""
    accept_score: int = 6
    """A draft is accepted when its lowest score reaches this and it has no major issue."""
    words_per_chapter: int = 900
    retrieval_limit: int = 4
    recent_summaries: int = 3
    """How many previous chapter summaries the state keeps (bounded: state stays flat)."""


@dataclass(frozen=True)
class ScribeContext:
    """Everything a node may use besides its state."""

    models: ModelGateway
    store: AppStore
    world: WorldMemory
    passages: PassageIndex
    options: WritingOptions = field(default_factory=WritingOptions)
