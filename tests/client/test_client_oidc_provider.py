"""The seed's story against a server no one here wrote: npm oidc-provider (public client,
PKCE, refresh token rotation with reuse detection, JWT access tokens via resource indicators)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx2
import jwt
import pytest
from client_support import (
    CALLBACK,
    OidcProvider,
    Reply,
    ScriptedServer,
    browser_in_thread,
    browser_login,
)

from authgear import (
    AsyncAuthgear,
    Authgear,
    AuthgearError,
    OAuthError,
    SessionState,
    SessionStateChangeReason,
)
from authgear.client import FileTokenStorage, StoredSession

pytestmark = pytest.mark.interop

SCOPES = ["openid", "offline_access", "email", "https://authgear.com/scopes/full-access"]


def make(op: OidcProvider, tmp_path: Path, client_id: str = "opaque-client") -> Authgear:
    return Authgear(client_id, op.issuer, token_storage=FileTokenStorage(tmp_path), scopes=SCOPES)


def login(ag: Authgear, user: str = "alice") -> None:
    url = ag.make_authorize_url(CALLBACK, prompt="consent")
    ag.finish_authentication(browser_login(url, user))


def test_seed_story_sync(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    events: list[tuple[SessionState, SessionStateChangeReason]] = []
    ag = make(oidc_provider, tmp_path)
    ag.on_session_state_change(lambda c: events.append((c.state, c.reason)))
    assert ag.session_state is SessionState.UNKNOWN

    # configure: no network, no stored token
    ag.configure()
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.NO_TOKEN
    assert ag.access_token is None
    assert ag.refresh_access_token_if_needed() is None

    # sign in: the two halves
    url = ag.make_authorize_url(CALLBACK, prompt="consent", login_hint="alice", page="login")
    query = dict(httpx2.URL(url).params)
    assert query["code_challenge_method"] == "S256"
    assert query["x_page"] == "login"
    assert "offline_access" in query["scope"].split()
    result = ag.finish_authentication(browser_login(url, "alice"))
    assert result.sub == "alice"
    assert result.id_token_claims["aud"] == "opaque-client"
    assert ag.session_state is SessionState.AUTHENTICATED
    assert ag.session_state_reason is SessionStateChangeReason.AUTHENTICATED

    # a second SDK instance (a new process, say) finds the stored session
    other = make(oidc_provider, tmp_path)
    other.configure()
    assert other.session_state is SessionState.AUTHENTICATED
    assert other.session_state_reason is SessionStateChangeReason.FOUND_TOKEN

    # fetch_user_info
    info = ag.fetch_user_info()
    assert info.sub == "alice"
    assert info.email == "alice@example.test"
    assert info.email_verified is True
    assert info.raw["sub"] == "alice"

    # refresh: rotation gives a new refresh token, stored
    before = ag.token_storage.load(ag.storage_key)
    assert before is not None
    refreshes = oidc_provider.stats()["refresh_token"]
    token = ag.refresh_access_token()
    assert token is not None and token != before.access_token
    after = ag.token_storage.load(ag.storage_key)
    assert after is not None and after.refresh_token != before.refresh_token
    assert after.access_token == token
    assert oidc_provider.stats()["refresh_token"] == refreshes + 1
    # fresh now: no further request
    assert ag.refresh_access_token_if_needed() == token
    assert oidc_provider.stats()["refresh_token"] == refreshes + 1

    # logout revokes at the server
    revocations = oidc_provider.stats()["revocations"]
    ag.logout()
    assert oidc_provider.stats()["revocations"] == revocations + 1
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.LOGOUT
    assert ag.token_storage.load(ag.storage_key) is None

    # the revoked refresh token is refused: INVALID, no exception
    stale = FileTokenStorage(tmp_path / "stale")
    ghost = Authgear("opaque-client", oidc_provider.issuer, token_storage=stale)
    stale.save(ghost.storage_key, StoredSession(refresh_token=after.refresh_token))
    ghost.configure()
    assert ghost.refresh_access_token_if_needed() is None
    assert ghost.session_state_reason is SessionStateChangeReason.INVALID

    assert events == [
        (SessionState.NO_SESSION, SessionStateChangeReason.NO_TOKEN),
        (SessionState.AUTHENTICATED, SessionStateChangeReason.AUTHENTICATED),
        (SessionState.NO_SESSION, SessionStateChangeReason.LOGOUT),
    ]


def test_fetch_sends_bearer_to_app_server(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    app = ScriptedServer()
    app.routes["/api/me"] = lambda s: Reply(200, {"auth": s.headers.get("authorization")})
    try:
        ag = make(oidc_provider, tmp_path)
        ag.configure()
        # no session: sent without the header
        assert ag.fetch("GET", app.url + "/api/me").json() == {"auth": None}
        login(ag)
        r = ag.fetch("GET", app.url + "/api/me", headers={"Authorization": "Basic xx"})
        assert r.json() == {"auth": f"Bearer {ag.access_token}"}
    finally:
        app.close()


def test_jwt_access_tokens_verify_with_jwks(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    ag = make(oidc_provider, tmp_path, client_id="jwt-client")
    ag.configure()
    login(ag, "bob")
    token = ag.refresh_access_token_if_needed()
    assert token is not None
    jwks = httpx2.get(oidc_provider.issuer + "/jwks").json()
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(token, key=key, algorithms=["RS256"], audience="https://api.example.test/")
    assert claims["sub"] == "bob"
    assert claims["client_id"] == "jwt-client"
    # oidc-provider's userinfo refuses audience-bound tokens with invalid_token: an OAuthError,
    # but not invalid_grant, so the session is kept
    with pytest.raises(OAuthError) as e:
        ag.fetch_user_info()
    assert e.value.error == "invalid_token"
    assert ag.session_state is SessionState.AUTHENTICATED


def test_authenticate_with_loopback_listener(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    ag = make(oidc_provider, tmp_path)
    ag.configure()
    open_browser, seen = browser_in_thread("carol")
    result = ag.authenticate(open_browser=open_browser, prompt="consent", timeout=60)
    seen["thread"].join(30)
    assert "error" not in seen, seen.get("error")
    assert result.sub == "carol"
    assert ag.session_state is SessionState.AUTHENTICATED
    assert seen["status"] == 200
    assert "You are signed in" in seen["page"]
    assert ag.fetch_user_info().sub == "carol"


def test_authenticate_error_page_on_access_denied(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """The user aborts at the provider: an OAuthError, and the browser is told it failed."""
    ag = make(oidc_provider, tmp_path)
    ag.configure()
    seen: dict[str, object] = {}

    def abort(url: str) -> None:
        def run() -> None:
            with httpx2.Client(follow_redirects=False, timeout=10) as b:
                r = b.get(url)
                interaction = httpx2.URL(url).join(r.headers["location"])
                r = b.get(str(interaction) + "/abort")
                while r.is_redirect:
                    nxt = r.url.join(r.headers["location"])
                    if nxt.host == "127.0.0.1" and nxt.path == "/oauth-redirect":
                        page = httpx2.get(str(nxt), timeout=30)
                        seen["status"], seen["page"] = page.status_code, page.text
                        return
                    r = b.get(nxt)

        t = threading.Thread(target=run, daemon=True)
        seen["thread"] = t
        t.start()

    with pytest.raises(OAuthError) as e:
        ag.authenticate(open_browser=abort, timeout=60)
    assert e.value.error == "access_denied"
    seen["thread"].join(30)  # type: ignore[attr-defined]
    assert seen["status"] == 400
    assert "Sign-in failed" in str(seen["page"])
    assert ag.session_state is SessionState.NO_SESSION


async def test_seed_story_async(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    ag = AsyncAuthgear(
        "opaque-client",
        oidc_provider.issuer,
        token_storage=FileTokenStorage(tmp_path),
        scopes=SCOPES,
    )
    changes: list[SessionStateChangeReason] = []

    async def watch() -> None:
        async for change in ag.session_state_changes():
            changes.append(change.reason)
            if change.reason is SessionStateChangeReason.LOGOUT:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    await ag.configure()
    assert ag.session_state is SessionState.NO_SESSION
    open_browser, _seen = browser_in_thread("dave")
    result = await ag.authenticate(open_browser=open_browser, prompt="consent", timeout=60)
    assert result.sub == "dave"
    info = await ag.fetch_user_info()
    assert info.email == "dave@example.test"
    old = ag.access_token
    new = await ag.refresh_access_token()
    assert new is not None and new != old
    await ag.logout()
    await asyncio.wait_for(watcher, 10)
    assert changes == [
        SessionStateChangeReason.NO_TOKEN,
        SessionStateChangeReason.AUTHENTICATED,
        SessionStateChangeReason.LOGOUT,
    ]
    await ag.aclose()


def test_finish_rejects_unknown_state(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    ag = make(oidc_provider, tmp_path)
    ag.configure()
    url = ag.make_authorize_url(CALLBACK, prompt="consent")
    callback = browser_login(url)
    forged = callback.replace("state=", "state=x")
    with pytest.raises(AuthgearError, match="state"):
        ag.finish_authentication(forged)
    # the real one still works once, and only once
    assert ag.finish_authentication(callback).sub == "alice"
    with pytest.raises(AuthgearError, match="state"):
        ag.finish_authentication(callback)
