"""Shared fixtures: the real server on a free loopback port with a temp data folder, on SQLite
and on PostgreSQL (a throwaway cluster started for the session)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from agtest.server import ServerProcess, free_port, server_config
from agtest.services import Postgres, Redis, start_postgres, start_redis

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = start_postgres(tmp_path_factory.mktemp("postgres") / "cluster")
    yield pg
    pg.stop("immediate")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    redis = start_redis(tmp_path_factory.mktemp("redis"))
    yield redis
    redis.stop()


def _config(request: pytest.FixtureRequest, port: int) -> dict[str, object]:
    config = server_config(port)
    if request.param == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        config["database_url"] = pg.create_database(f"ag_{secrets.token_hex(6)}")
    return config


@pytest.fixture(scope="session", params=BACKENDS)
def authgear_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per storage backend for the session (rate limits off); tests create their
    own users."""
    port = free_port()
    server = ServerProcess(tmp_path_factory.mktemp("authgear"), port, _config(request, port))
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def fresh_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, for tests that restart it or change its config."""
    port = free_port()
    server = ServerProcess(tmp_path / "data", port, _config(request, port))
    yield server
    server.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A module that tests the protocol's shape rather than storage (request validation,
    error bodies, fuzzing) declares ``STORAGES = ("sqlite",)`` and runs on SQLite only: the
    suite's storage behaviour is covered on both databases by the other modules, and these
    runs cost CI minutes without covering any more SQL."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        storages = getattr(item.module, "STORAGES", None) if hasattr(item, "module") else None
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec is not None else ()
        if storages is not None and any(p in BACKENDS and p not in storages for p in params):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
