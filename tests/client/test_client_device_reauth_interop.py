"""``authenticate_device()`` (RFC 8628) and ``reauthenticate()`` against a server no one here
wrote: npm oidc-provider with ``features.deviceFlow``, its device pages driven over HTTP like
a browser would (enter or confirm the code, log in, consent, or abort)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from client_support import (
    CALLBACK,
    OidcProvider,
    browser_in_thread,
    browser_login,
    device_approver,
    device_browser,
)

from authgear import (
    AccessDeniedError,
    AsyncAuthgear,
    Authgear,
    CancelError,
    CannotReauthenticateError,
    DeviceAuthorization,
    DeviceCodeExpiredError,
    IDTokenError,
    SessionState,
    SessionStateChangeReason,
)
from authgear.client import FileTokenStorage

pytestmark = pytest.mark.interop

SCOPES = ["openid", "offline_access", "email", "https://authgear.com/scopes/full-access"]


def make(op: OidcProvider, tmp_path: Path, client_id: str = "opaque-client") -> Authgear:
    ag = Authgear(client_id, op.issuer, token_storage=FileTokenStorage(tmp_path), scopes=SCOPES)
    ag.configure()
    return ag


def wait_for(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


# --- device authorization grant ---------------------------------------------------------------


def test_device_flow_approved_on_the_device_page_signs_in(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    ag = make(oidc_provider, tmp_path)
    grants = oidc_provider.stats()["device_code"]
    on_code, seen = device_approver("frank", on_error=ag.cancel_authentication)
    result = ag.authenticate_device(on_code)
    seen["thread"].join(30)
    assert "error" not in seen, seen.get("error")
    assert "Sign-in Success" in seen["page"]
    shown: DeviceAuthorization = seen["shown"]
    assert shown.verification_uri == oidc_provider.issuer + "/device"
    complete = f"{shown.verification_uri}?user_code={shown.user_code}"
    assert shown.verification_uri_complete == complete
    assert shown.interval == 1 and shown.expires_at > time.time()
    assert result.sub == "frank" and result.id_token_claims["aud"] == "opaque-client"
    assert (ag.session_state, ag.session_state_reason) == (
        SessionState.AUTHENTICATED,
        SessionStateChangeReason.AUTHENTICATED,
    )
    assert oidc_provider.stats()["device_code"] == grants + 1
    # stored like a browser sign-in: a new process finds it, and it works
    other = make(oidc_provider, tmp_path)
    assert other.session_state is SessionState.AUTHENTICATED
    assert other.fetch_user_info().email == "frank@example.test"
    assert ag.can_reauthenticate and ag.auth_time is not None


def test_device_flow_denied_on_the_device_page_is_access_denied_and_stores_nothing(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    ag = make(oidc_provider, tmp_path)
    on_code, seen = device_approver(deny=True, on_error=ag.cancel_authentication)
    with pytest.raises(AccessDeniedError) as e:
        ag.authenticate_device(on_code)
    assert e.value.error == "access_denied"
    seen["thread"].join(30)
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.token_storage.load(ag.storage_key) is None


def test_device_flow_polling_too_fast_gets_slow_down_and_the_sdk_backs_off(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """strict-device-client answers interval 1 but wants 2 s between polls: the SDK's
    second poll gets slow_down. Had the SDK not added 5 s, its next poll would get
    slow_down again; exactly one slow_down, then success, shows it backed off."""
    ag = make(oidc_provider, tmp_path, client_id="strict-device-client")
    before = oidc_provider.stats()["slow_down"]
    on_code, seen = device_approver(
        "grace",
        on_error=ag.cancel_authentication,
        before=lambda: wait_for(
            lambda: oidc_provider.stats()["slow_down"] > before, "the SDK to be told slow_down"
        ),
    )
    assert ag.authenticate_device(on_code).sub == "grace"
    seen["thread"].join(30)
    assert "error" not in seen, seen.get("error")
    assert oidc_provider.stats()["slow_down"] == before + 1


def test_device_flow_expired_code_is_typed(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    """short-device-client's codes expire after 3 s while it says 60: oidc-provider itself
    answers expired_token (the SDK's own expiry check is covered by the core tests)."""
    ag = make(oidc_provider, tmp_path, client_id="short-device-client")
    shown: list[DeviceAuthorization] = []
    with pytest.raises(DeviceCodeExpiredError) as e:
        ag.authenticate_device(shown.append)
    assert e.value.error == "expired_token"
    assert shown[0].expires_in == 60 and time.time() < shown[0].expires_at
    assert ag.session_state is SessionState.NO_SESSION


def test_device_flow_wrong_user_code_is_refused_by_the_page_then_the_right_one_works(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    ag = make(oidc_provider, tmp_path)
    seen: dict[str, Any] = {}

    def on_code(authorization: DeviceAuthorization) -> None:
        def run() -> None:
            try:
                uri = authorization.verification_uri
                seen["wrong"] = device_browser(uri, user_code="BCDF-GHJK")
                seen["right"] = device_browser(
                    authorization.verification_uri, "heidi", user_code=authorization.user_code
                )
            except Exception as e:
                seen["error"] = e
                ag.cancel_authentication()

        threading.Thread(target=run, daemon=True).start()

    assert ag.authenticate_device(on_code).sub == "heidi", seen.get("error")
    assert "incorrect" in seen["wrong"] and "Sign-in Success" in seen["right"]


def test_device_flow_cancel_from_another_thread_stops_polling(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    ag = make(oidc_provider, tmp_path)
    polls = lambda: len(oidc_provider.stats()["device_polls"].get("opaque-client", []))  # noqa: E731
    start = polls()
    threading.Thread(
        target=lambda: (wait_for(lambda: polls() > start, "a poll"), ag.cancel_authentication()),
        daemon=True,
    ).start()
    with pytest.raises(CancelError):
        ag.authenticate_device(lambda _a: None)
    after = polls()
    time.sleep(1.5)  # longer than the interval: a poll would have happened by now
    assert polls() == after
    assert ag.token_storage.load(ag.storage_key) is None


async def test_device_flow_async_with_a_coroutine_callback(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    async with AsyncAuthgear(
        "opaque-client", oidc_provider.issuer, token_storage=FileTokenStorage(tmp_path)
    ) as ag:
        await ag.configure()
        approve, _seen = device_approver("ivan", on_error=ag.cancel_authentication)

        async def on_code(authorization: DeviceAuthorization) -> None:
            await asyncio.sleep(0)
            approve(authorization)

        result = await ag.authenticate_device(on_code)
        assert result.sub == "ivan"
        assert (await ag.fetch_user_info()).sub == "ivan"


async def test_device_flow_async_task_cancellation_leaves_nothing_stored(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    async with AsyncAuthgear(
        "opaque-client", oidc_provider.issuer, token_storage=FileTokenStorage(tmp_path)
    ) as ag:
        await ag.configure()
        shown = asyncio.Event()
        task = asyncio.create_task(ag.authenticate_device(lambda _a: shown.set()))
        await asyncio.wait_for(shown.wait(), 30)
        await asyncio.sleep(1.5)  # at least one poll went out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ag.session_state is SessionState.NO_SESSION
        assert ag.token_storage.load(ag.storage_key) is None
        # no session file and no temp file (the refresh lock file may stay, as always)
        assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


# --- reauthentication -------------------------------------------------------------------------


def signed_in(op: OidcProvider, tmp_path: Path, user: str = "judy") -> Authgear:
    ag = make(op, tmp_path)
    ag.finish_authentication(browser_login(ag.make_authorize_url(CALLBACK, prompt="consent"), user))
    return ag


def test_reauthenticate_moves_auth_time_forward_and_keeps_the_refresh_token(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    ag = signed_in(oidc_provider, tmp_path)
    before = ag.token_storage.load(ag.storage_key)
    assert before is not None and ag.can_reauthenticate
    first = ag.auth_time
    assert first is not None
    time.sleep(1.1)  # auth_time has whole seconds: let one pass
    urls: list[str] = []
    open_browser, seen = browser_in_thread("judy")
    refreshes = oidc_provider.stats()["refresh_token"]
    result = ag.reauthenticate(
        open_browser=lambda url: (urls.append(url), open_browser(url)), timeout=60
    )
    seen["thread"].join(30)
    assert "You are signed in" in seen["page"]
    query = dict(parse_qsl(urlsplit(urls[0]).query))
    assert query["max_age"] == "0" and query["id_token_hint"] == before.id_token
    assert "offline_access" not in query["scope"].split()
    assert result.sub == "judy" and result.auth_time is not None and result.auth_time > first
    assert ag.auth_time == result.auth_time
    after = ag.token_storage.load(ag.storage_key)
    assert after is not None
    assert (after.refresh_token, after.access_token) == (before.refresh_token, before.access_token)
    assert after.id_token != before.id_token
    assert oidc_provider.stats()["refresh_token"] == refreshes  # a fresh ID token: no refresh
    assert ag.refresh_access_token() is not None  # the session still works


def test_reauthenticate_as_another_user_is_refused_and_the_session_kept(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    ag = signed_in(oidc_provider, tmp_path, "ken")
    before = ag.token_storage.load(ag.storage_key)
    url = ag.make_reauthenticate_url(CALLBACK)
    with pytest.raises(IDTokenError, match="another user"):
        ag.finish_authentication(browser_login(url, "mallory"))
    assert ag.token_storage.load(ag.storage_key) == before
    assert ag.session_state is SessionState.AUTHENTICATED


def test_reauthenticate_a_user_who_cannot_opens_nothing(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    ag = signed_in(oidc_provider, tmp_path, "passwordless-leo")
    assert not ag.can_reauthenticate
    opened: list[str] = []
    with pytest.raises(CannotReauthenticateError):
        ag.reauthenticate(open_browser=opened.append, timeout=5)
    assert opened == []


async def test_reauthenticate_async(oidc_provider: OidcProvider, tmp_path: Path) -> None:
    signed_in(oidc_provider, tmp_path, "mia")
    async with AsyncAuthgear(
        "opaque-client",
        oidc_provider.issuer,
        token_storage=FileTokenStorage(tmp_path),
        scopes=SCOPES,
    ) as ag:
        await ag.configure()
        first = ag.auth_time
        assert first is not None
        await asyncio.sleep(1.1)
        open_browser, _seen = browser_in_thread("mia")
        result = await ag.reauthenticate(open_browser=open_browser, timeout=60)
        assert result.auth_time is not None and result.auth_time > first
        assert ag.auth_time == result.auth_time


def test_id_token_hint_is_accepted_by_the_provider(
    oidc_provider: OidcProvider, tmp_path: Path
) -> None:
    """oidc-provider validates id_token_hint (signature, audience): a reauthentication URL
    it did not like would answer an error page instead of the login prompt."""
    ag = signed_in(oidc_provider, tmp_path, "nina")
    r = httpx2.get(ag.make_reauthenticate_url(CALLBACK), follow_redirects=False)
    assert r.status_code in (302, 303) and "/interaction/" in r.headers["location"]
