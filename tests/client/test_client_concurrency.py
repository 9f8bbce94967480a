"""Single flight at three levels, counted at the server (npm oidc-provider, rotation on and
reuse of a rotated refresh token revoking the grant: a lost race would log everyone out)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from client_support import CALLBACK, HERE, OidcProvider, browser_login, key_for

from authgear import AsyncAuthgear, Authgear, SessionState
from authgear.client import FileTokenStorage

WORKER = str(HERE / "client_worker.py")


def logged_in_store(op: OidcProvider, directory: Path, user: str) -> FileTokenStorage:
    """Sign in once, then mark the stored access token expired."""
    storage = FileTokenStorage(directory)
    ag = Authgear("opaque-client", op.issuer, token_storage=storage)
    ag.configure()
    url = ag.make_authorize_url(CALLBACK, prompt="consent")
    ag.finish_authentication(browser_login(url, user))
    expire(storage, ag.storage_key)
    ag.close()
    return storage


def expire(storage: FileTokenStorage, key: str) -> None:
    record = storage.load(key)
    assert record is not None
    storage.save(key, dataclasses.replace(record, expires_at=0.0, refresh_after=0.0))


def test_16_threads_one_refresh(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    storage = logged_in_store(oidc_provider, tmp_path, "t16")
    ag = Authgear("opaque-client", oidc_provider.issuer, token_storage=storage)
    ag.configure()
    before = oidc_provider.stats()["refresh_token"]
    barrier = threading.Barrier(16)

    def call() -> str | None:
        barrier.wait()
        return ag.refresh_access_token_if_needed()

    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda _: call(), range(16)))
    assert oidc_provider.stats()["refresh_token"] == before + 1
    assert len(set(tokens)) == 1 and tokens[0] is not None
    assert ag.fetch_user_info().sub == "t16"


async def test_200_tasks_one_refresh(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    storage = logged_in_store(oidc_provider, tmp_path, "t200")
    ag = AsyncAuthgear("opaque-client", oidc_provider.issuer, token_storage=storage)
    await ag.configure()
    before = oidc_provider.stats()["refresh_token"]
    tokens = await asyncio.gather(*(ag.refresh_access_token_if_needed() for _ in range(200)))
    assert oidc_provider.stats()["refresh_token"] == before + 1
    assert len(set(tokens)) == 1 and tokens[0] is not None
    assert (await ag.fetch_user_info()).sub == "t200"
    await ag.aclose()


def test_16_threads_with_refused_token_one_refresh(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """Threads that all saw the same token refused (a 401) still cause one refresh."""
    storage = logged_in_store(oidc_provider, tmp_path, "t401")
    ag = Authgear("opaque-client", oidc_provider.issuer, token_storage=storage)
    ag.configure()
    refused = ag.refresh_access_token_if_needed()
    assert refused is not None
    before = oidc_provider.stats()["refresh_token"]
    barrier = threading.Barrier(16)

    def call() -> str | None:
        barrier.wait()
        return ag.refresh_access_token(rejected=refused)

    with ThreadPoolExecutor(16) as pool:
        tokens = list(pool.map(lambda _: call(), range(16)))
    assert oidc_provider.stats()["refresh_token"] == before + 1
    assert len(set(tokens)) == 1 and tokens[0] != refused


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *args], stdout=subprocess.PIPE, text=True, cwd=HERE
    )


def test_4_processes_one_refresh(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    store = tmp_path / "store"
    logged_in_store(oidc_provider, store, "p4")
    go = tmp_path / "go"
    before = oidc_provider.stats()["refresh_token"]
    procs = [
        _spawn("refresh-once", oidc_provider.issuer, "opaque-client", str(store), str(go))
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    go.touch()
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert oidc_provider.stats()["refresh_token"] == before + 1
    assert {r["state"] for r in results} == {"AUTHENTICATED"}
    assert len({r["token"] for r in results}) == 1


def test_4_processes_rotating_in_a_loop_nobody_logged_out(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    logged_in_store(oidc_provider, store, "rot")
    stats = oidc_provider.stats()
    procs = [
        _spawn("rotate-loop", oidc_provider.issuer, "opaque-client", str(store), "8")
        for _ in range(4)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert results == [{"sub": "rot", "state": "AUTHENTICATED"}] * 4
    after = oidc_provider.stats()
    assert after["refresh_token_errors"] == stats["refresh_token_errors"]
    assert after["refresh_token"] > stats["refresh_token"]
    # the store still holds a working session
    ag = Authgear("opaque-client", oidc_provider.issuer, token_storage=FileTokenStorage(store))
    ag.configure()
    assert ag.fetch_user_info().sub == "rot"
    assert ag.session_state is SessionState.AUTHENTICATED


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_while_writing_never_corrupts_the_store(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for round_ in range(15):
        directory = tmp_path / f"r{round_}"
        p = _spawn("crash-writer", str(directory))
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        # let it write for a random number of records, then kill it mid-flight
        for _ in range(rng.randint(0, 40)):
            os.sched_yield()
        threading.Event().wait(rng.random() * 0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        storage = FileTokenStorage(directory)
        record = storage.load("worker")
        assert record is not None
        assert record.refresh_token.startswith("rt-")
        assert not list(directory.glob("*.corrupt-*"))
        assert (storage.path("worker").stat().st_mode & 0o777) == 0o600


async def test_cancelled_refresher_task_still_stores_the_rotated_token(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """The task that happens to run the refresh is cancelled (a timeout, a dropped request)
    after the server rotated the refresh token: the answer must still be stored, or the next
    refresh reuses the rotated token and the server revokes the whole grant."""
    import httpx2

    storage = logged_in_store(oidc_provider, tmp_path, "cancel")
    key = key_for(oidc_provider.issuer, "opaque-client")
    old = storage.load(key)
    assert old is not None
    answered = asyncio.Event()

    async def on_response(response: httpx2.Response) -> None:
        if response.request.url.path.endswith("/token") and not answered.is_set():
            answered.set()  # the server has rotated by now
            await asyncio.sleep(0.5)

    async with httpx2.AsyncClient(event_hooks={"response": [on_response]}) as http:
        ag = AsyncAuthgear(
            "opaque-client", oidc_provider.issuer, token_storage=storage, http_client=http
        )
        await ag.configure()
        task = asyncio.create_task(ag.refresh_access_token_if_needed())
        await asyncio.wait_for(answered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        rotated = False
        for _ in range(100):  # the refresh finishes in the background
            record = storage.load(key)
            rotated = record is not None and record.refresh_token != old.refresh_token
            if rotated:
                break
            await asyncio.sleep(0.02)
        assert rotated, "the rotated refresh token was lost"
        before = oidc_provider.stats()
        assert (await ag.fetch_user_info()).sub == "cancel"
        assert ag.session_state is SessionState.AUTHENTICATED
        assert oidc_provider.stats()["refresh_token"] == before["refresh_token"]
