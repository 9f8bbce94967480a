"""A mistake the type checkers must catch: a coroutine method called without ``await``."""

from authgear import AsyncAuthgear


async def main() -> None:
    authgear = AsyncAuthgear(client_id="app", endpoint="https://myapp.authgear.cloud")
    authgear.configure()  # expected: unused-coroutine (mypy), reportUnusedCoroutine (pyright)
