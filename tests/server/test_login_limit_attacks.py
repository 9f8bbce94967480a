"""Concurrent password guessing (issue 9 point 5): every guess is counted before argon2 runs.

The attack: 16 parallel wrong passwords were all checked, and the right one still signed in,
because the lockout and the per-IP failure limit were read before argon2 and written after it.
Now an attempt first reserves its place atomically (a locked row in SQLite or PostgreSQL, INCR
in Redis, a counter in memory) and is given back only when the password is right.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from agtest.server import CSRF_RE, ServerProcess, free_port, new_email, server_config
from agtest.services import Postgres, Redis

PASSWORD = "correct horse battery"
GUESSES = 24


def _server(
    request: pytest.FixtureRequest, tmp_path: Path, storage: str, **config: Any
) -> ServerProcess:
    port = free_port()
    cfg = server_config(port, **config)
    if storage == "postgresql":
        pg: Postgres = request.getfixturevalue("postgres")
        cfg["database_url"] = pg.create_database(f"ag_{secrets.token_hex(6)}")
    elif storage == "sqlite-2-workers":
        cfg["workers"] = 2
    elif storage == "redis":
        redis: Redis = request.getfixturevalue("redis_server")
        cfg["redis_url"] = redis.url.rsplit("/", 1)[0] + "/3"
        import redis as redis_client

        redis_client.Redis.from_url(cfg["redis_url"]).flushdb()
    server = ServerProcess(tmp_path / "data", port, cfg)
    server.start()
    return server


def _login_form(server: ServerProcess) -> tuple[dict[str, str], str]:
    """The cookies and CSRF token of one login page, shared by every concurrent guess."""
    with httpx2.Client(base_url=server.url) as http:
        page = http.get("/login")
        m = CSRF_RE.search(page.text)
        assert page.status_code == 200 and m
        return dict(http.cookies), m.group(1)


def _guesses(server: ServerProcess, pairs: list[tuple[str, str]]) -> Counter[int]:
    """POST every (email, password) at once; the status codes, counted."""
    cookies, token = _login_form(server)

    def attempt(pair: tuple[str, str]) -> int:
        data = {"csrf_token": token, "email": pair[0], "password": pair[1]}
        with httpx2.Client(base_url=server.url, cookies=cookies, timeout=60) as http:
            return http.post("/login", data=data).status_code

    with ThreadPoolExecutor(len(pairs)) as pool:
        return Counter(pool.map(attempt, pairs))


def _away_from_a_window_edge(needed: float = 20) -> None:
    """The shared per-IP limits count in fixed one-minute windows of the wall clock; a test
    that straddled two windows would see two budgets. Start where ``needed`` seconds fit."""
    if time.time() % 60 > 60 - needed:
        time.sleep(60 - time.time() % 60 + 0.5)


def _sign_in(server: ServerProcess, email: str, password: str) -> int:
    return _guesses(server, [(email, password)]).most_common(1)[0][0]


@pytest.mark.parametrize("storage", ["sqlite", "sqlite-2-workers", "postgresql"])
def test_24_concurrent_wrong_passwords_lock_the_account_then_the_right_one_is_refused(
    request: pytest.FixtureRequest, tmp_path: Path, storage: str
) -> None:
    server = _server(
        request,
        tmp_path,
        storage,
        rate_limits={"enabled": True, "password_failures_per_ip_per_minute": 1000},
        lockout={"max_attempts": 6, "history_duration": 300, "minimum_duration": 300},
    )
    try:
        email = new_email()
        server.create_user(email, PASSWORD)
        statuses = _guesses(server, [(email, f"wrong-{i}") for i in range(GUESSES)])
        # Exactly max_attempts guesses were checked; every other one was refused unchecked.
        assert statuses == Counter({401: 6, 429: GUESSES - 6}), statuses
        assert _sign_in(server, email, PASSWORD) == 429
        # Another account is not affected.
        other = new_email()
        server.create_user(other, PASSWORD)
        assert _sign_in(server, other, PASSWORD) == 303
    finally:
        server.stop()


def test_lockout_ends_after_its_duration_and_a_right_password_clears_the_count(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = _server(
        request,
        tmp_path,
        "sqlite",
        lockout={"max_attempts": 2, "history_duration": 300, "minimum_duration": 300},
    )
    try:
        email = new_email()
        server.create_user(email, PASSWORD)
        assert _guesses(server, [(email, "wrong-1"), (email, "wrong-2")]) == Counter({401: 2})
        assert _sign_in(server, email, PASSWORD) == 429
        # The lock's time passes (moved in the database: no waiting, no timed assertion).
        key = f"email:{email}"
        server.query("UPDATE login_failures SET locked_until = 1 WHERE key = ?", key)
        assert _sign_in(server, email, PASSWORD) == 303
        assert server.query("SELECT count FROM login_failures WHERE key = ?", key) == []
    finally:
        server.stop()


@pytest.mark.parametrize("storage", ["redis", "postgresql", "sqlite"])
def test_24_concurrent_guesses_from_one_ip_stop_at_the_per_ip_limit(
    request: pytest.FixtureRequest, tmp_path: Path, storage: str
) -> None:
    """Password spraying: one wrong guess for each of 24 accounts, at once."""
    server = _server(
        request,
        tmp_path,
        storage,
        rate_limits={"enabled": True, "password_failures_per_ip_per_minute": 5},
        lockout={"enabled": False},
    )
    try:
        email = new_email()
        server.create_user(email, PASSWORD)
        _away_from_a_window_edge()
        statuses = _guesses(server, [(new_email(), "wrong-password") for _ in range(GUESSES)])
        assert statuses == Counter({401: 5, 429: GUESSES - 5}), statuses
        assert _sign_in(server, email, PASSWORD) == 429
    finally:
        server.stop()


@pytest.mark.parametrize("storage", ["redis", "sqlite"])
def test_right_passwords_are_given_back_to_the_per_ip_budget(
    request: pytest.FixtureRequest, tmp_path: Path, storage: str
) -> None:
    server = _server(
        request,
        tmp_path,
        storage,
        rate_limits={"enabled": True, "password_failures_per_ip_per_minute": 3},
        lockout={"enabled": False},
    )
    try:
        email = new_email()
        server.create_user(email, PASSWORD)
        _away_from_a_window_edge(40)
        assert [_sign_in(server, email, PASSWORD) for _ in range(5)] == [303] * 5
        wrong = [_sign_in(server, new_email(), "wrong-password") for _ in range(4)]
        assert wrong == [401, 401, 401, 429]
    finally:
        server.stop()
