"""The ``novel`` graph for ``langgraph dev``, the reference server of ``runs_api.py``.

``langgraph dev`` (langgraph-api with the in-memory runtime) compiles its own checkpointer
into the graph and hands each run a ``context`` built from JSON, so it cannot build the
:class:`~nodes.context.ScribeContext` (live stores, offline models) the nodes need. This
module gives it a graph that supplies one instead: the stores are opened once per server
process, on the first run, from settings read from the environment at that moment
(``SCRIBE_DATA_DIR``, ``SCRIBE_OFFLINE_TOKENS_PER_SECOND``, ``SCRIBE_WORDS_PER_CHAPTER``...),
and every run shares them, as the workers of ``scribe serve`` do.

``langgraph.json`` beside this file names :func:`make_graph`; the benchmark writes its own
copy with an absolute path into a temporary folder. By hand, from this folder, in an
environment holding ``langgraph-cli[inmem]`` and the project (``runs_api.py`` builds one)::

    SCRIBE_DATA_DIR=/tmp/ref langgraph dev --no-browser --no-reload --allow-blocking

(``--allow-blocking``: the stores do some synchronous file I/O, which langgraph dev's
blocking-call detector would turn into failed runs). Nothing happens at import time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from graphs.novel import build_graph
from nodes.context import ScribeContext
from nodes.state import NovelInput, NovelState

__all__ = ["ContextBoundGraph", "make_graph", "shared_context"]


class _Shared:
    """The process-wide context and what keeps its stores open."""

    context: ScribeContext | None = None
    stack: AsyncExitStack | None = None
    lock: asyncio.Lock | None = None
    graph: ContextBoundGraph | None = None


async def shared_context() -> ScribeContext:
    """The context every run of this process uses, opened on first use.

    The stores are bound to the event loop that opens them, so this runs inside a run
    (on the server's loop), never at import or when the server only reads the graph.
    """
    if _Shared.context is not None:
        return _Shared.context
    if _Shared.lock is None:
        _Shared.lock = asyncio.Lock()
    async with _Shared.lock:
        if _Shared.context is None:
            from server.backends import open_backends
            from server.settings import load_settings

            stack = AsyncExitStack()
            backends = await stack.enter_async_context(open_backends(load_settings()))
            # Kept open for the life of the server process: its runs share the stores.
            _Shared.stack = stack
            _Shared.context = backends.context
        return _Shared.context


class ContextBoundGraph(CompiledStateGraph[NovelState, ScribeContext, NovelInput, Any]):
    """The compiled ``novel`` graph, running every stream with :func:`shared_context`.

    ``langgraph-api`` passes the run's JSON ``context`` (or a copy of its configurable
    values) to ``astream``; it can never hold open stores, so it is replaced. Every other
    entry point (``ainvoke``, ``astream_events``) goes through ``astream``. The server's
    ``graph.copy(update=...)`` keeps this class, since ``copy`` rebuilds ``type(self)``.
    """

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Stream the run with the shared context instead of the caller's."""
        kwargs["context"] = await shared_context()
        async for part in super().astream(input, config, **kwargs):
            yield part


def make_graph() -> ContextBoundGraph:
    """The graph factory ``langgraph.json`` names (called by the server for every run).

    The graph is compiled once; ``langgraph-api`` adds its own checkpointer and store to
    a copy of it per run.
    """
    if _Shared.graph is None:
        compiled = build_graph()
        attrs = {k: v for k, v in compiled.__dict__.items() if k != "__orig_class__"}
        _Shared.graph = ContextBoundGraph(**attrs)
    return _Shared.graph
