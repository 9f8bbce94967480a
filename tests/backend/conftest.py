from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_support import BackendProcess, example_backend

from agtest.server import ServerProcess

# The backend tests run on the SQLite server only (they read and add signing keys in its
# database file, and storage is the server suite's concern), except the end-to-end story,
# whose revocation goes through storage and so runs on both.
BOTH_STORAGES = {"test_backend_story.py", "test_revocation_feed.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_pg = "postgresql" in (params.get("authgear_server"), params.get("fresh_server"))
        here = item.path.parent == Path(__file__).parent
        if here and on_pg and item.path.name not in BOTH_STORAGES:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _backend(
    kind: str, mode: str, server: ServerProcess, tmp: Path, *extra: str
) -> Iterator[BackendProcess]:
    backend = example_backend(kind, mode, server.url, tmp, *extra)
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def backend_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backends")


@pytest.fixture(scope="session")
def fastapi_jwt(authgear_server: ServerProcess, backend_tmp: Path) -> Iterator[BackendProcess]:
    yield from _backend("fastapi", "jwt", authgear_server, backend_tmp)


@pytest.fixture(scope="session")
def fastapi_resolver(authgear_server: ServerProcess, backend_tmp: Path) -> Iterator[BackendProcess]:
    yield from _backend("fastapi", "resolver", authgear_server, backend_tmp)


@pytest.fixture(scope="session")
def flask_jwt(authgear_server: ServerProcess, backend_tmp: Path) -> Iterator[BackendProcess]:
    yield from _backend("flask", "jwt", authgear_server, backend_tmp)


@pytest.fixture(scope="session")
def flask_resolver(authgear_server: ServerProcess, backend_tmp: Path) -> Iterator[BackendProcess]:
    yield from _backend("flask", "resolver", authgear_server, backend_tmp)
