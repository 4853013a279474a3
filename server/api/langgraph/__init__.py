"""The LangGraph Server compatible API: assistants, threads and runs at the root path.

The official ``langgraph_sdk`` client talks to it unchanged (``get_client(url=...)`` with
a bearer token or API key).
"""

from __future__ import annotations

from fastapi import APIRouter

from server.api.langgraph import assistants, runs, threads

router = APIRouter()
router.include_router(assistants.router)
router.include_router(threads.router)
router.include_router(runs.router)
