from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_support import OidcProvider, Reply, ScriptedServer, discovery, start_oidc_provider


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    op = start_oidc_provider()
    try:
        yield op
    finally:
        op.process.terminate()
        op.process.wait(timeout=10)


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    """A scripted Authgear-like server: discovery is served, the rest is up to the test."""
    server = ScriptedServer()
    doc = discovery(server.url)
    server.routes["/.well-known/openid-configuration"] = lambda _s: Reply(200, doc)
    try:
        yield server
    finally:
        server.close()
