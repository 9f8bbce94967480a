"""A small app written against the documented API: every name it uses must be typed
(checked by tests/client/test_client_typing.py with mypy and pyright)."""

from __future__ import annotations

from datetime import datetime
from typing import assert_type

import httpx
import httpx2

from authgear import (
    AccessDeniedError,
    AsyncAuthgear,
    AuthenticateResult,
    Authgear,
    AuthgearAuth,
    AuthgearError,
    CannotReauthenticateError,
    DeviceAuthorization,
    DeviceCodeExpiredError,
    SessionState,
    UserInfo,
)


def show_code(code: DeviceAuthorization) -> None:
    assert_type(code.user_code, str)
    assert_type(code.verification_uri_complete, str | None)
    assert_type(code.expires_at, float)
    print(code.verification_uri, code.user_code)


def sync_app() -> None:
    authgear = Authgear(client_id="app", endpoint="https://myapp.authgear.cloud")
    assert_type(authgear, Authgear[httpx2.Response])
    authgear.configure()
    if authgear.session_state is not SessionState.AUTHENTICATED:
        result = authgear.authenticate(page="signup", timeout=60)
        assert_type(result, AuthenticateResult)
    user = authgear.fetch_user_info()
    assert_type(user, UserInfo)
    assert_type(user.email, str | None)
    assert_type(user.roles, tuple[str, ...])
    response = authgear.fetch("GET", "https://api.example.com/me")
    assert_type(response, httpx2.Response)
    assert_type(response.status_code, int)
    token = authgear.refresh_access_token_if_needed()
    assert_type(token, str | None)
    with httpx2.Client(auth=AuthgearAuth(authgear)) as client:
        assert_type(client.get("https://api.example.com/me"), httpx2.Response)
    with httpx.Client() as plain_client:
        plain = Authgear(client_id="app", endpoint="https://e.example", http_client=plain_client)
        assert_type(plain.fetch("GET", "https://api.example.com/me"), httpx.Response)
    try:
        assert_type(authgear.authenticate_device(show_code), AuthenticateResult)
    except (AccessDeniedError, DeviceCodeExpiredError) as e:
        assert_type(e.error, str)
    if authgear.can_reauthenticate:
        try:
            again = authgear.reauthenticate(max_age=0)
            assert_type(again.auth_time, datetime | None)
        except CannotReauthenticateError:
            pass
    assert_type(authgear.auth_time, datetime | None)
    try:
        authgear.logout()
    except AuthgearError as e:
        print(e)


async def async_app() -> None:
    async with AsyncAuthgear(client_id="app", endpoint="https://myapp.authgear.cloud") as authgear:
        assert_type(authgear, AsyncAuthgear[httpx2.Response])
        await authgear.configure()
        user = await authgear.fetch_user_info()
        assert_type(user, UserInfo)
        response = await authgear.fetch("POST", "https://api.example.com/x", content=b"{}")
        assert_type(response, httpx2.Response)
        assert_type(await authgear.refresh_access_token(), str | None)

        async def on_code(code: DeviceAuthorization) -> None:
            print(code.user_code)

        assert_type(await authgear.authenticate_device(on_code), AuthenticateResult)
        assert_type(await authgear.reauthenticate(), AuthenticateResult)
        await authgear.refresh_id_token()
        async for change in authgear.session_state_changes():
            assert_type(change.state, SessionState)
            break
