"""Dependencies of the LangGraph-compatible routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from server.deps import Services
from server.runs.service import RunService


def get_runs(services: Services) -> RunService:
    """The process's run service."""
    return services.runs


Runs = Annotated[RunService, Depends(get_runs)]
