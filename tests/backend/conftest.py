from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_support import BackendProcess, example_backend

from agtest.server import ServerProcess


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
