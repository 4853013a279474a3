"""FastAPI dependencies as ``Annotated`` aliases, so routes stay thin."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.auth.deps import current_principal
from server.auth.principal import Principal
from server.services import AppServices


def get_services(request: Request) -> AppServices:
    """The process's services, opened in the lifespan."""
    services: AppServices = request.app.state.services
    return services


Services = Annotated[AppServices, Depends(get_services)]
CurrentUser = Annotated[Principal, Depends(current_principal)]
"""The caller, from ``Authorization: Bearer <jwt>`` or ``x-api-key``; 401 otherwise."""
