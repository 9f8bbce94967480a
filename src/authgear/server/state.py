"""Everything a request handler needs, built once per app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from authgear.server.config import ServerConfig, Settings
from authgear.server.keys import KeySet
from authgear.server.ratelimit import RateLimiter
from authgear.server.storage import AdminRepository, Repository

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class ServerState:
    settings: Settings
    repo: Repository
    keys: KeySet
    limiter: RateLimiter
    # Derives a rotated refresh token from its predecessor, so a retry gets the same one.
    rotation_key: bytes = field(repr=False, default=b"")
    # Signs the pages' CSRF tokens (security/csrf.py); shared by every process.
    csrf_key: bytes = field(repr=False, default=b"")
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES))
    )
    # Process-local memo of when this process last recorded activity for a session.
    touched: dict[str, int] = field(default_factory=dict)

    @property
    def config(self) -> ServerConfig:
        return self.settings.config

    @property
    def issuer(self) -> str:
        return self.config.issuer

    def url(self, path: str) -> str:
        return self.issuer + path

    @property
    def admin(self) -> AdminRepository:
        """Session-management storage (admin API, portal), on the repository's database."""
        return self.repo.admin


def get_state(request: Request) -> ServerState:
    state: Any = request.app.state.authgear
    assert isinstance(state, ServerState)
    return state
