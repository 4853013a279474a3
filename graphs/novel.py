"""The ``novel`` graph: wiring only. Nodes live in ``nodes/``, routing in ``graphs.routing``.

intake → director_plan → outline_gate ──(revise)──→ director_plan
                             └─(approve/edit)→ worldsmith_seed → director_beats
director_beats → writer → reviewer ──(revise)──→ writer
                             └─(accept)→ commit_chapter → worldsmith_update → chapter_gate
chapter_gate ─(revise)→ writer │ ─(edit)→ commit_chapter │ → next_chapter → director_beats
             └─(last chapter)→ finish → END

Nodes that call models are wrapped in :func:`nodes.llm.trace.model_step`, so each call
is recorded at its place (node, step, chapter, index) and a replay can find it again.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs import routing
from nodes.commit import commit_chapter
from nodes.context import ScribeContext
from nodes.director import director_beats, director_plan
from nodes.human import chapter_gate, next_chapter, outline_gate
from nodes.llm.trace import model_step
from nodes.reviewer import reviewer
from nodes.session import finish, intake
from nodes.state import NovelInput, NovelState
from nodes.worldsmith import worldsmith_seed, worldsmith_update
from nodes.writer import writer

GRAPH_ID = "novel"

NovelGraph = CompiledStateGraph[NovelState, ScribeContext, NovelInput, Any]


def build_graph(checkpointer: BaseCheckpointSaver[Any] | None = None) -> NovelGraph:
    """Compile the ``novel`` graph with the given checkpointer."""
    graph = StateGraph(NovelState, context_schema=ScribeContext, input_schema=NovelInput)
    graph.add_node("intake", intake)
    graph.add_node("director_plan", model_step(director_plan))
    graph.add_node("outline_gate", outline_gate)
    graph.add_node("worldsmith_seed", model_step(worldsmith_seed))
    graph.add_node("director_beats", model_step(director_beats))
    graph.add_node("writer", model_step(writer))
    graph.add_node("reviewer", model_step(reviewer))
    graph.add_node("commit_chapter", commit_chapter)
    graph.add_node("worldsmith_update", model_step(worldsmith_update))
    graph.add_node("chapter_gate", chapter_gate)
    graph.add_node("next_chapter", next_chapter)
    graph.add_node("finish", finish)

    graph.add_edge(START, "intake")
    graph.add_edge("intake", "director_plan")
    graph.add_edge("director_plan", "outline_gate")
    graph.add_conditional_edges("outline_gate", routing.after_outline_gate)
    graph.add_edge("worldsmith_seed", "director_beats")
    graph.add_edge("director_beats", "writer")
    graph.add_edge("writer", "reviewer")
    graph.add_conditional_edges("reviewer", routing.after_review)
    graph.add_edge("commit_chapter", "worldsmith_update")
    graph.add_edge("worldsmith_update", "chapter_gate")
    graph.add_conditional_edges("chapter_gate", routing.after_chapter_gate)
    graph.add_edge("next_chapter", "director_beats")
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer, name=GRAPH_ID)
