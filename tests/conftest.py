"""Shared fixtures: the real server on a free loopback port with a temp data folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agtest.server import ServerProcess, free_port, test_config


@pytest.fixture(scope="session")
def authgear_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the session (rate limits off); tests create their own users."""
    port = free_port()
    server = ServerProcess(tmp_path_factory.mktemp("authgear"), port, test_config(port))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, for tests that restart it or change its config."""
    port = free_port()
    server = ServerProcess(tmp_path / "data", port, test_config(port))
    yield server
    server.stop()
