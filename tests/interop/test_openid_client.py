"""Interop: npm openid-client v6, a certified OpenID relying party, against our real server.

The Node script (node/openid_client_flow.mjs) does discovery, code + PKCE through our login form,
refresh, userinfo and revocation, and prints one JSON line. scripts/test runs `npm ci` in node/.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "openid_client_flow.mjs"
EXPECTED_STEPS = [
    "discovery",
    "authorize",
    "login_page",
    "wrong_password",
    "login",
    "authorization_code_grant",
    "refresh_token_grant",
    "userinfo",
    "revocation",
    "refresh_after_revocation",
    "userinfo_after_revocation",
]


def _unused_port() -> int:
    # Only to vary the port of the loopback redirect URI (nothing listens on it): the client is
    # registered with http://127.0.0.1/callback, which must match on any port (RFC 8252 7.3).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _run_node(env: dict[str, str]) -> tuple[int, str, str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: run scripts/test, which installs what the suite needs")
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"npm packages missing in {NODE_DIR}: run scripts/test (it runs npm ci)")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        cwd=NODE_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("openid_client_flow.mjs did not finish within 120 s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_openid_client_code_flow_refresh_userinfo_revoke(authgear_server: Any) -> None:
    email = f"interop-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(18)
    created = authgear_server.create_user(email, password)
    if inspect.isawaitable(created):
        await created

    issuer = str(authgear_server.url).rstrip("/")
    env = {
        **os.environ,
        "ISSUER": issuer,
        "CLIENT_ID": authgear_server.native_client_id,
        "REDIRECT_URI": f"http://127.0.0.1:{_unused_port()}/callback",
        "EMAIL": email,
        "PASSWORD": password,
    }
    code, out, err = await _run_node(env)

    lines = out.strip().splitlines()
    assert lines, f"no output from the Node script (exit {code}); stderr:\n{err}"
    result = json.loads(lines[-1])
    assert code == 0 and result["ok"], (
        f"openid-client failed at step {result.get('step')!r}: {result.get('error')}\n"
        f"result: {json.dumps(result, indent=2)}\nstderr:\n{err}"
    )
    assert result["steps"] == EXPECTED_STEPS
    assert result["login_path"] == "/login"
    assert result["wrong_password_status"] in (200, 400, 401)
    assert "iss" in result["callback_params"]
    client_id = authgear_server.native_client_id
    assert result["id_token_aud"] in (client_id, [client_id])
    assert result["id_token_has_sid"] is True
    assert result["id_token_amr"] == ["pwd", "x_primary_password"]
    assert result["userinfo_email"] == email
    # Public clients rotate refresh tokens by default (RFC 9700 §4.14.2); the script goes on
    # with the new one, and revoking it ends the grant.
    assert result["refresh_rotated"] is True
    assert result["refresh_after_revocation_error"] == "invalid_grant"
    assert result["userinfo_after_revocation_status"] == 401


async def test_openid_client_answers_the_totp_step_of_a_user_with_two_factors(
    authgear_server: Any,
) -> None:
    """The same flow for a user with an authenticator app: after the password our server asks
    for the code (one wrong, then the right one computed in Node); the ID token's amr says mfa."""
    from agtest.mfa import enrol_totp, signed_in_browser

    email = f"interop-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(18)
    created = authgear_server.create_user(email, password)
    if inspect.isawaitable(created):
        await created

    def enrol() -> str:
        browser = signed_in_browser(authgear_server, email, password)
        try:
            # Enrolled with the previous step's code: the current one is left for Node.
            return enrol_totp(browser, steps_from_now=-1)[0]
        finally:
            browser.close()

    secret = await asyncio.to_thread(enrol)
    # Not within the last seconds of a time step (the code must still be current when sent).
    while time.time() % 30 > 20:
        await asyncio.sleep(0.5)
    env = {
        **os.environ,
        "ISSUER": str(authgear_server.url).rstrip("/"),
        "CLIENT_ID": authgear_server.native_client_id,
        "REDIRECT_URI": f"http://127.0.0.1:{_unused_port()}/callback",
        "EMAIL": email,
        "PASSWORD": password,
        "TOTP_SECRET": secret,
    }
    code, out, err = await _run_node(env)
    lines = out.strip().splitlines()
    assert lines, f"no output from the Node script (exit {code}); stderr:\n{err}"
    result = json.loads(lines[-1])
    assert code == 0 and result["ok"], f"failed: {json.dumps(result, indent=2)}\n{err}"
    expected = [*EXPECTED_STEPS]
    expected.insert(expected.index("login"), "totp")
    assert result["steps"] == expected
    assert result["totp_path"] == "/flow/totp"
    assert result["id_token_amr"] == ["mfa", "otp", "pwd", "x_primary_password", "x_secondary_totp"]
