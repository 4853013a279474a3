"""``/assistants``: the one built-in assistant of the ``novel`` graph.

It answers to the graph id ``novel`` and to its stable UUID, like LangGraph Server's
system assistants; it cannot be created, changed or deleted.
"""

from __future__ import annotations

import logging
from types import UnionType
from typing import (
    Any,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

from fastapi import APIRouter
from pydantic import TypeAdapter

from graphs.novel import GRAPH_ID
from memory.runs.store import contains
from server.api.langgraph.deps import Runs
from server.api.langgraph.schemas import AssistantSearch
from server.api.langgraph.shapes import assistant_json, select
from server.deps import CurrentUser
from server.runs.service import resolve_assistant

router = APIRouter(prefix="/assistants", tags=["assistants"])
log = logging.getLogger("scribe.http")


def _matching(body: AssistantSearch) -> list[dict[str, Any]]:
    assistant = assistant_json()
    if body.graph_id not in (None, GRAPH_ID):
        return []
    if body.name is not None and body.name.lower() not in assistant["name"].lower():
        return []
    if body.metadata and not contains(assistant["metadata"], body.metadata):
        return []
    return [assistant][body.offset : body.offset + body.limit]


@router.post("/search")
async def search_assistants(body: AssistantSearch, _user: CurrentUser) -> list[dict[str, Any]]:
    """The assistants matching the filters (at most the one)."""
    return [select(a, body.select) for a in _matching(body)]


@router.post("/count")
async def count_assistants(body: AssistantSearch, _user: CurrentUser) -> int:
    """How many assistants match."""
    return len(_matching(body.model_copy(update={"offset": 0, "limit": 1000})))


@router.get("/{assistant_id}")
async def get_assistant(assistant_id: str, _user: CurrentUser) -> dict[str, Any]:
    """The assistant, by graph id or UUID."""
    resolve_assistant(assistant_id)
    return assistant_json()


@router.get("/{assistant_id}/graph")
async def get_assistant_graph(
    assistant_id: str, _user: CurrentUser, runs: Runs, xray: bool | int = False
) -> dict[str, Any]:
    """The drawable graph: nodes and edges."""
    resolve_assistant(assistant_id)
    drawable: dict[str, Any] = runs.backends.graph.get_graph(xray=xray).to_json()
    return drawable


def typed_dict_schema(cls: Any) -> dict[str, Any]:
    """JSON schema of a ``typing.TypedDict``.

    Pydantic refuses ``typing.TypedDict`` on Python 3.11, so objects are described here
    and only their leaf types are left to pydantic.
    """
    hints = get_type_hints(cls, include_extras=True)
    required = [k for k, v in hints.items() if get_origin(v) is Required]
    properties = {k: _type_schema(_unwrap(v)) for k, v in hints.items()}
    schema: dict[str, Any] = {"title": cls.__name__, "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _unwrap(hint: Any) -> Any:
    if get_origin(hint) in (Required, NotRequired):
        return get_args(hint)[0]
    return hint


def _type_schema(hint: Any) -> dict[str, Any]:
    if is_typeddict(hint):
        return typed_dict_schema(hint)
    if get_origin(hint) in (Union, UnionType) and any(is_typeddict(a) for a in get_args(hint)):
        return {"anyOf": [_type_schema(a) for a in get_args(hint)]}
    try:
        schema: dict[str, Any] = TypeAdapter(hint).json_schema()
    except Exception as exc:
        # An unusual leaf type: described as "anything" rather than failing the schema.
        log.debug("no JSON schema for %r: %s", hint, exc)
        return {}
    return schema


@router.get("/{assistant_id}/schemas")
async def get_assistant_schemas(
    assistant_id: str, _user: CurrentUser, runs: Runs
) -> dict[str, Any]:
    """JSON schemas of the graph's input, output and state."""
    resolve_assistant(assistant_id)
    graph = runs.backends.graph
    return {
        "graph_id": GRAPH_ID,
        "input_schema": typed_dict_schema(graph.builder.input_schema),
        "output_schema": typed_dict_schema(graph.builder.output_schema),
        "state_schema": typed_dict_schema(graph.builder.state_schema),
        "config_schema": None,
        "context_schema": None,
    }


@router.get("/{assistant_id}/subgraphs")
async def get_assistant_subgraphs(assistant_id: str, _user: CurrentUser) -> dict[str, Any]:
    """The graph has no subgraphs."""
    resolve_assistant(assistant_id)
    return {}
