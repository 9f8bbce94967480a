"""Interop: npm openid-client v6's device-flow functions (RFC 8628) against our real server.

The Node script (node/openid_client_device_flow.mjs, same package.json as
test_openid_client.py) calls ``initiateDeviceAuthorization`` and prints the user code, then
``pollDeviceAuthorizationGrant`` polls at our interval while this test, as a person already
signed in to our server in a browser, enters that code on /device and approves (or denies) over
HTTP. openid-client must end with tokens for that user, or with ``access_denied``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from agtest.device import approve_as
from agtest.server import DEVICE, Browser, ServerProcess, new_email

pytestmark = pytest.mark.interop

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "openid_client_device_flow.mjs"
PASSWORD = "correct horse battery"
# Generous: the Node script gives up polling after 90 s on its own.
LINE_TIMEOUT = 120


class NodeDevice:
    """The running Node script: its JSON lines, read one at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def next_line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), LINE_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"no output from the Node script within {LINE_TIMEOUT} s: {self.lines}")
        if not raw:
            err = await self.stderr()
            pytest.fail(f"the Node script ended early (after {self.lines}); stderr:\n{err}")
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def expect_event(self, event: str) -> dict[str, Any]:
        line = await self.next_line()
        assert line.get("event") == event, f"wanted {event!r}, got {json.dumps(line, indent=2)}"
        return line

    async def stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode(errors="replace")

    async def finish(self) -> tuple[int, dict[str, Any]]:
        result = await self.next_line()
        code = await asyncio.wait_for(self.proc.wait(), LINE_TIMEOUT)
        return code, result


async def start_node(server: ServerProcess, expect: str) -> NodeDevice:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node not found: run scripts/test, which installs what the suite needs")
    if not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        pytest.fail(f"npm packages missing in {NODE_DIR}: run scripts/test (it runs npm ci)")
    env = {**os.environ, "ISSUER": server.url, "CLIENT_ID": DEVICE, "EXPECT": expect}
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        cwd=NODE_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeDevice(proc)


def signed_in_browser(server: ServerProcess, email: str) -> Browser:
    browser = Browser(server.url)
    r = browser.submit("/login?next=/", email, PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text[:300]
    return browser


async def run_device_flow(
    server: ServerProcess, decision: str, expect: str
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """openid-client asks for a code; once it has been told authorization_pending, a signed-in
    browser enters the code and decides. The user's id, the codes line and the result line."""
    email = new_email()
    user_id = server.create_user(email, PASSWORD)
    browser = await asyncio.to_thread(signed_in_browser, server, email)
    node = await start_node(server, expect)
    try:
        codes = await node.expect_event("device_authorization")
        await node.expect_event("pending")
        page = await asyncio.to_thread(
            approve_as, server, codes["user_code"], email, PASSWORD, decision, browser
        )
        assert page.status_code == 200, page.text[:500]
        code, result = await node.finish()
    finally:
        if node.proc.returncode is None:
            node.proc.kill()
            await node.proc.wait()
        browser.close()
    err = "" if code == 0 else await node.stderr()
    assert code == 0 and result["ok"], (
        f"openid-client failed at step {result.get('step')!r}: {result.get('error')}\n"
        f"result: {json.dumps(result, indent=2)}\nstderr:\n{err}"
    )
    return user_id, codes, result


async def test_openid_client_device_flow_gets_tokens_for_the_user_who_approved(
    authgear_server: ServerProcess,
) -> None:
    user_id, codes, result = await run_device_flow(authgear_server, "approve", "tokens")
    assert codes["verification_uri"] == authgear_server.url + "/device"
    assert codes["verification_uri_complete"].startswith(authgear_server.url + "/device?user_code=")
    assert codes["expires_in"] == 600 and codes["interval"] == 1
    assert result["steps"] == ["discovery", "device_authorization", "poll", "userinfo",
                               "refresh_token_grant"]  # fmt: skip
    # openid-client waited through authorization_pending at our interval, never too fast.
    answers = result["token_answers"]
    assert answers[0] == "authorization_pending" and answers[-1] == 200, answers
    assert set(answers[:-1]) == {"authorization_pending"}, answers
    # the tokens are the approving user's, for the device's client
    assert result["sub"] == user_id
    assert result["id_token_iss"] == authgear_server.url
    assert result["id_token_aud"] in (DEVICE, [DEVICE])
    assert result["id_token_amr"] == ["pwd", "x_primary_password"]
    assert result["has_refresh_token"] is True
    assert result["userinfo_sub"] == user_id
    assert result["refreshed_sub"] in (user_id, None)


async def test_openid_client_device_flow_denied_on_the_page_surfaces_access_denied(
    authgear_server: ServerProcess,
) -> None:
    user_id, _, result = await run_device_flow(authgear_server, "deny", "access_denied")
    assert result["steps"] == ["discovery", "device_authorization", "poll"]
    assert result["poll_error"] == "access_denied" and result["poll_error_status"] == 400
    answers = result["token_answers"]
    assert answers[0] == "authorization_pending" and answers[-1] == "access_denied", answers
    assert "slow_down" not in answers and 200 not in answers
    # (query() runs its own event loop for PostgreSQL: off this test's loop)
    grants = await asyncio.to_thread(
        authgear_server.query,
        "SELECT COUNT(*) FROM offline_grants WHERE user_id = ? AND client_id = ?",
        user_id,
        DEVICE,
    )
    assert grants == [(0,)]
