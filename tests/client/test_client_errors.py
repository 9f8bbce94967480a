"""Bad input and failures, from small real local HTTP servers: typed errors with clear
messages, and the session kept where it should be."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from client_support import Reply, ScriptedServer

from authgear import (
    AsyncAuthgear,
    Authgear,
    AuthgearError,
    CancelError,
    LoginTimeoutError,
    OAuthError,
    ServerError,
    SessionState,
    SessionStateChangeReason,
    TransientError,
)
from authgear.client import FileTokenStorage, MemoryTokenStorage, NetworkError, StoredSession
from authgear.client._errors import NotConfiguredError


def stale_session(rt: str = "rt-1") -> StoredSession:
    return StoredSession(refresh_token=rt, access_token="at-old", expires_at=0, refresh_after=0)


def fresh_session(rt: str = "rt-1", at: str = "at-1") -> StoredSession:
    now = time.time()
    return StoredSession(
        refresh_token=rt, access_token=at, expires_at=now + 3600, refresh_after=now + 3000
    )


def client(server: ScriptedServer, record: StoredSession | None) -> Authgear:
    storage = MemoryTokenStorage()
    ag = Authgear("app", server.url, token_storage=storage)
    if record is not None:
        storage.save(ag.storage_key, record)
    ag.configure()
    return ag


def token_ok(rt: str | None = "rt-2", at: str = "at-2", expires_in: int = 1800) -> Reply:
    body: dict[str, object] = {"access_token": at, "token_type": "Bearer", "expires_in": expires_in}
    if rt:
        body["refresh_token"] = rt
    return Reply(200, body)


def test_not_configured_is_an_error(scripted: ScriptedServer) -> None:
    ag = Authgear("app", scripted.url, token_storage=MemoryTokenStorage())
    with pytest.raises(NotConfiguredError):
        ag.refresh_access_token_if_needed()


def test_configure_makes_no_network_call(scripted: ScriptedServer) -> None:
    client(scripted, stale_session())
    assert scripted.seen == []


def test_refresh_rule_and_rotation_off(scripted: ScriptedServer) -> None:
    """Rotation off (parity): the refresh response has no refresh_token; the old one stays."""
    scripted.routes["/oauth2/token"] = lambda s: token_ok(rt=None)
    ag = client(scripted, stale_session("rt-keep"))
    assert ag.refresh_access_token_if_needed() == "at-2"
    form = scripted.seen[-1].form
    assert form == {"grant_type": "refresh_token", "client_id": "app", "refresh_token": "rt-keep"}
    record = ag.token_storage.load(ag.storage_key)
    assert record is not None and record.refresh_token == "rt-keep"
    assert record.refresh_after is not None and record.expires_at is not None
    # 0.9 x expires_in
    assert record.expires_at - record.refresh_after == pytest.approx(180, abs=1)


def test_non_json_token_response_keeps_session(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/token"] = lambda s: Reply(
        200, "<html>proxy login</html>", {"content-type": "text/html"}
    )
    ag = client(scripted, stale_session())
    with pytest.raises(ServerError, match=r"not JSON \(text/html\)"):
        ag.refresh_access_token_if_needed()
    assert ag.session_state is SessionState.AUTHENTICATED
    assert ag.token_storage.load(ag.storage_key) == stale_session()


def test_missing_expires_in_keeps_session(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/token"] = lambda s: Reply(
        200, {"access_token": "x", "token_type": "Bearer"}
    )
    ag = client(scripted, stale_session())
    with pytest.raises(ServerError, match="expires_in"):
        ag.refresh_access_token_if_needed()
    assert ag.session_state is SessionState.AUTHENTICATED
    assert ag.token_storage.load(ag.storage_key) == stale_session()


def test_discovery_without_endpoints(scripted: ScriptedServer) -> None:
    scripted.routes["/.well-known/openid-configuration"] = lambda s: Reply(
        200, {"issuer": scripted.url}
    )
    ag = client(scripted, stale_session())
    with pytest.raises(ServerError, match="lacks authorization_endpoint, token_endpoint"):
        ag.refresh_access_token_if_needed()
    assert ag.session_state is SessionState.AUTHENTICATED


def test_unreachable_server_is_transient_and_keeps_session(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = FileTokenStorage(tmp_path)
    ag = Authgear("app", f"http://127.0.0.1:{port}", token_storage=storage)
    storage.save(ag.storage_key, stale_session())
    ag.configure()
    with pytest.raises(NetworkError, match=r"GET http://127\.0\.0\.1:\d+/\.well-known"):
        ag.refresh_access_token_if_needed()
    assert isinstance(NetworkError("x"), TransientError)
    assert ag.session_state is SessionState.AUTHENTICATED
    assert storage.load(ag.storage_key) == stale_session()


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_5xx_and_429_are_transient(scripted: ScriptedServer, status: int) -> None:
    scripted.routes["/oauth2/token"] = lambda s: Reply(status, {"error": "server_error"})
    ag = client(scripted, stale_session())
    with pytest.raises(TransientError) as e:
        ag.refresh_access_token_if_needed()
    assert e.value.status_code == status
    assert ag.session_state is SessionState.AUTHENTICATED


def test_invalid_grant_clears_without_raising(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/token"] = lambda s: Reply(
        400, {"error": "invalid_grant", "error_description": "invalid refresh token"}
    )
    ag = client(scripted, stale_session())
    assert ag.refresh_access_token_if_needed() is None
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.INVALID
    assert ag.token_storage.load(ag.storage_key) is None


def test_other_oauth_errors_raise_and_keep_session(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/token"] = lambda s: Reply(
        400,
        {
            "error": "invalid_client",
            "error_description": "invalid client ID",
            "error_uri": "https://e/x",
        },
    )
    ag = client(scripted, stale_session())
    with pytest.raises(OAuthError) as e:
        ag.refresh_access_token_if_needed()
    assert (e.value.error, e.value.error_description, e.value.error_uri) == (
        "invalid_client",
        "invalid client ID",
        "https://e/x",
    )
    assert ag.session_state is SessionState.AUTHENTICATED


def test_invalid_grant_after_another_process_rotated_keeps_session(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """We hold rt-1; meanwhile another holder of the store rotated to rt-2 (it wrote the store
    without our lock, as a keyring-only peer could). The server refuses rt-1: the SDK re-reads
    the store, finds rt-2 and uses it, instead of logging the user out."""
    storage = FileTokenStorage(tmp_path)
    ag = Authgear("app", scripted.url, token_storage=storage)
    storage.save(ag.storage_key, stale_session("rt-1"))
    ag.configure()

    def token(s: object) -> Reply:
        rt = s.form["refresh_token"]  # type: ignore[attr-defined]
        if rt == "rt-1":
            storage.save(ag.storage_key, stale_session("rt-2"))  # the other process, just in time
            return Reply(400, {"error": "invalid_grant"})
        return token_ok(rt="rt-3", at="at-3")

    scripted.routes["/oauth2/token"] = token
    assert ag.refresh_access_token_if_needed() == "at-3"
    assert ag.session_state is SessionState.AUTHENTICATED
    record = storage.load(ag.storage_key)
    assert record is not None and record.refresh_token == "rt-3"


def test_userinfo_invalid_grant_clears_and_raises(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/userinfo"] = lambda s: Reply(
        401,
        {"error": "invalid_grant", "error_description": "invalid session"},
        {"www-authenticate": 'Bearer error="invalid_grant", error_description="invalid session"'},
    )
    ag = client(scripted, fresh_session())
    with pytest.raises(OAuthError) as e:
        ag.fetch_user_info()
    assert e.value.error == "invalid_grant"
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.INVALID


def test_userinfo_typed(scripted: ScriptedServer) -> None:
    p = "https://authgear.com/claims/user/"
    scripted.routes["/oauth2/userinfo"] = lambda s: Reply(
        200,
        {
            "sub": "u1",
            "email": "a@b.c",
            "email_verified": True,
            p + "is_anonymous": False,
            p + "is_verified": True,
            p + "can_reauthenticate": True,
            p + "roles": ["admin", "staff"],
            "custom_attributes": {"plan": "pro"},
            "updated_at": 1700000000,
        }
        if s.headers.get("authorization") == "Bearer at-1"
        else {"error": "bad"},
    )
    info = client(scripted, fresh_session()).fetch_user_info()
    assert (info.sub, info.email, info.is_verified, info.can_reauthenticate) == (
        "u1",
        "a@b.c",
        True,
        True,
    )
    assert info.roles == ("admin", "staff")
    assert info.custom_attributes == {"plan": "pro"}
    assert info.updated_at == 1700000000


def test_fetch_retries_once_on_bearer_401(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/token"] = lambda s: token_ok(rt="rt-2", at="at-2")
    scripted.routes["/api"] = lambda s: (
        Reply(200, {"ok": s.body.decode()})
        if s.headers.get("authorization") == "Bearer at-2"
        else Reply(401, {}, {"www-authenticate": 'Bearer error="invalid_token"'})
    )
    ag = client(scripted, fresh_session())
    r = ag.fetch("POST", scripted.url + "/api", content=b"payload")
    assert r.status_code == 200 and r.json() == {"ok": "payload"}
    assert scripted.count("/api") == 2
    assert scripted.count("/oauth2/token") == 1


def test_fetch_does_not_retry_without_bearer_challenge(scripted: ScriptedServer) -> None:
    scripted.routes["/api"] = lambda s: Reply(401, {})
    ag = client(scripted, fresh_session())
    assert ag.fetch("GET", scripted.url + "/api").status_code == 401
    assert scripted.count("/api") == 1
    assert scripted.count("/oauth2/token") == 0


def test_fetch_401_then_invalid_grant_returns_401_and_no_session(
    scripted: ScriptedServer,
) -> None:
    scripted.routes["/oauth2/token"] = lambda s: Reply(400, {"error": "invalid_grant"})
    scripted.routes["/api"] = lambda s: Reply(401, {}, {"www-authenticate": "Bearer"})
    ag = client(scripted, fresh_session())
    assert ag.fetch("GET", scripted.url + "/api").status_code == 401
    assert scripted.count("/api") == 1
    assert ag.session_state is SessionState.NO_SESSION


def test_fetch_does_not_retry_streaming_body(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/token"] = lambda s: token_ok()
    scripted.routes["/api"] = lambda s: Reply(401, {}, {"www-authenticate": "Bearer"})
    ag = client(scripted, fresh_session())

    def body():  # a generator cannot be sent twice
        yield b"chunk"

    assert ag.fetch("POST", scripted.url + "/api", content=body()).status_code == 401
    assert scripted.count("/api") == 1


def test_logout_revokes_then_clears(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/revoke"] = lambda s: Reply(200, b"")
    ag = client(scripted, fresh_session("rt-9"))
    ag.logout()
    assert scripted.seen[-1].form == {"token": "rt-9", "client_id": "app"}
    assert ag.session_state_reason is SessionStateChangeReason.LOGOUT


def test_logout_failure_keeps_session_unless_forced(scripted: ScriptedServer) -> None:
    scripted.routes["/oauth2/revoke"] = lambda s: Reply(503, b"")
    ag = client(scripted, fresh_session())
    with pytest.raises(TransientError):
        ag.logout()
    assert ag.session_state is SessionState.AUTHENTICATED
    ag.logout(force=True)
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.LOGOUT


def test_clear_session_state_is_local(scripted: ScriptedServer) -> None:
    ag = client(scripted, fresh_session())
    ag.clear_session_state()
    assert scripted.seen == []
    assert ag.session_state_reason is SessionStateChangeReason.CLEAR
    assert ag.token_storage.load(ag.storage_key) is None
    assert ag.access_token is None


def test_listener_exceptions_are_logged_not_raised(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    ag = client(scripted, fresh_session())
    seen: list[SessionStateChangeReason] = []

    def bad(_c: object) -> None:
        raise RuntimeError("listener bug")

    ag.on_session_state_change(bad)
    remove = ag.on_session_state_change(lambda c: seen.append(c.reason))
    ag.clear_session_state()
    assert seen == [SessionStateChangeReason.CLEAR]
    assert "listener bug" in caplog.text
    remove()


def test_login_timeout(scripted: ScriptedServer) -> None:
    ag = client(scripted, None)
    urls: list[str] = []
    with pytest.raises(LoginTimeoutError):
        ag.authenticate(open_browser=urls.append, timeout=0.2)
    assert urls and urls[0].startswith(scripted.url + "/oauth2/authorize?")
    assert isinstance(LoginTimeoutError("x"), TimeoutError)


def test_cancel_authentication_from_another_thread(scripted: ScriptedServer) -> None:
    ag = client(scripted, None)
    ready = threading.Event()

    def open_browser(url: str) -> None:
        ready.set()

    t = threading.Thread(target=lambda: (ready.wait(10), ag.cancel_authentication()))
    t.start()
    with pytest.raises(CancelError):
        ag.authenticate(open_browser=open_browser, timeout=30)
    t.join()
    assert ag.session_state is SessionState.NO_SESSION


async def test_async_authenticate_cancelled_closes_listener(scripted: ScriptedServer) -> None:
    import asyncio

    import httpx2

    ag = AsyncAuthgear("app", scripted.url, token_storage=MemoryTokenStorage())
    await ag.configure()
    urls: list[str] = []
    task = asyncio.create_task(ag.authenticate(open_browser=urls.append, timeout=30))
    while not urls:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    redirect = httpx2.URL(urls[0]).params["redirect_uri"]
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(redirect + "?code=x&state=y")
    await ag.aclose()


def test_callback_error_is_oauth_error(scripted: ScriptedServer) -> None:
    ag = client(scripted, None)
    url = ag.make_authorize_url("http://127.0.0.1:9/cb")
    import httpx2

    state = httpx2.URL(url).params["state"]
    with pytest.raises(OAuthError) as e:
        ag.finish_authentication(
            f"http://127.0.0.1:9/cb?error=access_denied&error_description=no&state={state}"
        )
    assert (e.value.error, e.value.error_description) == ("access_denied", "no")


def test_secrets_not_in_repr(scripted: ScriptedServer) -> None:
    ag = client(scripted, fresh_session("rt-SECRET", "at-SECRET"))
    record = ag.token_storage.load(ag.storage_key)
    for text in (repr(ag), repr(record), repr(ag.token_storage), str(record)):
        assert "SECRET" not in text
    assert isinstance(ServerError("x"), AuthgearError)


def test_authenticate_sends_the_redirect_uri_it_was_given(scripted: ScriptedServer) -> None:
    """A fixed redirect URI registered as http://localhost:PORT/... must be sent as given
    (servers compare it exactly); the listener still binds 127.0.0.1 only."""
    import httpx2

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    given = f"http://localhost:{port}/callback"
    ag = client(scripted, None)
    urls: list[str] = []
    with pytest.raises(LoginTimeoutError):
        ag.authenticate(open_browser=urls.append, timeout=0.2, redirect_uri=given)
    assert httpx2.URL(urls[0]).params["redirect_uri"] == given


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_authenticate_on_ipv6_loopback(scripted: ScriptedServer) -> None:
    """redirect_uri=http://[::1]:PORT/... is accepted, so the listener must bind ::1."""
    import httpx2

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    ag = client(scripted, None)
    urls: list[str] = []
    with pytest.raises(LoginTimeoutError):
        ag.authenticate(open_browser=urls.append, timeout=0.2, redirect_uri="http://[::1]/cb")
    assert httpx2.URL(urls[0]).params["redirect_uri"].startswith("http://[::1]:")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e999"])
def test_non_finite_expires_in_is_refused(scripted: ScriptedServer, value: str) -> None:
    """Python's json reads NaN and Infinity: such an expiry would mean "never refresh"."""
    scripted.routes["/oauth2/token"] = lambda s: Reply(
        200,
        '{"access_token": "x", "token_type": "Bearer", "expires_in": ' + value + "}",
        {"content-type": "application/json"},
    )
    ag = client(scripted, stale_session())
    with pytest.raises(ServerError, match="expires_in"):
        ag.refresh_access_token_if_needed()
    assert ag.token_storage.load(ag.storage_key) == stale_session()


def test_stray_request_to_the_loopback_does_not_abort_sign_in(scripted: ScriptedServer) -> None:
    """Any local process (or page) can hit the listener first: a request without our state is
    refused there, and the real redirect that follows still completes the sign-in."""
    import httpx2

    ag = client(scripted, None)
    stray: list[int] = []

    def browser(url: str) -> None:
        params = httpx2.URL(url).params
        redirect, state = params["redirect_uri"], params["state"]

        def run() -> None:
            stray.append(httpx2.get(redirect + "?code=evil&state=forged", timeout=5).status_code)
            httpx2.get(f"{redirect}?error=access_denied&state={state}", timeout=5)

        threading.Thread(target=run, daemon=True).start()

    with pytest.raises(OAuthError) as e:
        ag.authenticate(open_browser=browser, timeout=10)
    assert e.value.error == "access_denied"
    assert stray == [400]


# --- transport errors, user agent (issue 17.5) ------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fetch_with_no_response_raises_network_error_and_keeps_session(
    scripted: ScriptedServer,
) -> None:
    ag = client(scripted, fresh_session())
    url = f"http://127.0.0.1:{_closed_port()}/api?secret=x"
    with pytest.raises(NetworkError, match=r"GET http://127\.0\.0\.1:\d+/api failed") as e:
        ag.fetch("GET", url)
    assert "secret" not in str(e.value)  # the query string may carry secrets
    assert ag.session_state is SessionState.AUTHENTICATED


async def test_async_fetch_with_no_response_raises_network_error(scripted: ScriptedServer) -> None:
    from authgear import AsyncAuthgear

    storage = MemoryTokenStorage()
    ag = AsyncAuthgear("app", scripted.url, token_storage=storage)
    storage.save(ag.storage_key, fresh_session())
    await ag.configure()
    with pytest.raises(NetworkError, match="failed: ConnectError"):
        await ag.fetch("POST", f"http://127.0.0.1:{_closed_port()}/api", content=b"x")
    await ag.aclose()


def test_plain_httpx_fetch_with_no_response_raises_network_error(scripted: ScriptedServer) -> None:
    import httpx

    with httpx.Client() as http:
        ag = Authgear("app", scripted.url, token_storage=MemoryTokenStorage(), http_client=http)
        ag.configure()
        with pytest.raises(NetworkError):
            ag.fetch("GET", f"http://127.0.0.1:{_closed_port()}/")


def test_every_request_names_the_sdk_in_its_user_agent(scripted: ScriptedServer) -> None:
    import httpx2

    import authgear

    ua = f"authgear-python/{authgear.__version__}"
    scripted.routes["/oauth2/token"] = lambda s: token_ok()
    scripted.routes["/api"] = lambda s: Reply(200, {})
    ag = client(scripted, stale_session())
    ag.fetch("GET", scripted.url + "/api")
    assert [(s.path, s.headers.get("user-agent")) for s in scripted.seen] == [
        ("/.well-known/openid-configuration", ua),
        ("/oauth2/token", ua),
        ("/api", ua),
    ]
    # with the application's own client, the SDK's requests still say who they are, and the
    # application's requests keep the application's user agent
    with httpx2.Client(headers={"user-agent": "my-app/1"}) as http:
        storage = MemoryTokenStorage()
        mine = Authgear("app", scripted.url, token_storage=storage, http_client=http)
        storage.save(mine.storage_key, stale_session())
        mine.configure()
        mine.fetch("GET", scripted.url + "/api")
    assert [s.headers.get("user-agent") for s in scripted.seen[3:]] == [ua, ua, "my-app/1"]
