"""Session management: the admin API (/_api/admin/), the portal (/portal) and the user's own
session list (/settings/sessions)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount

from authgear.server.admin.api import WithState, build_api
from authgear.server.admin.portal import portal_routes


def admin_routes() -> list[BaseRoute]:
    return [Mount("/_api/admin", app=WithState(build_api())), *portal_routes()]


__all__ = ["admin_routes"]
