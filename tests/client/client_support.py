"""Real local servers and a scripted "browser" for the client SDK tests (no mocks)."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx2

from authgear.client._core import storage_key

HERE = Path(__file__).parent
OP_DIR = HERE / "oidc_provider"

CALLBACK = "http://127.0.0.1/callback"


# --- npm oidc-provider -------------------------------------------------------------------


def ensure_node_modules() -> None:
    if (OP_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed for the oidc-provider tests")
    cmd = "ci" if (OP_DIR / "package-lock.json").exists() else "install"
    subprocess.run(
        [npm, cmd, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=OP_DIR,
        check=True,
        timeout=300,
    )


@dataclass
class OidcProvider:
    issuer: str
    process: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        return httpx2.get(self.issuer + "/__stats").json()


def start_oidc_provider() -> OidcProvider:
    ensure_node_modules()
    proc = subprocess.Popen(
        ["node", str(OP_DIR / "server.mjs"), "0"],
        cwd=OP_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("oidc-provider did not start")
    return OidcProvider(issuer=json.loads(line)["issuer"], process=proc)


class _FormParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag == "input" and a.get("name"):
            self.fields[a["name"] or ""] = a.get("value") or ""


def browser_login(authorize_url: str, user: str = "alice", stop_prefix: str = CALLBACK) -> str:
    """Play the user's browser against oidc-provider's dev interactions: follow redirects,
    post the login form, then the consent form. Returns the URL redirected to at the app
    (which is not fetched unless it is not ``stop_prefix``... see browser_login_and_visit)."""
    with httpx2.Client(follow_redirects=False, timeout=10) as b:
        url = authorize_url
        method, data = "GET", None
        for _ in range(20):
            r = b.request(method, url, data=data)
            method, data = "GET", None
            if r.is_redirect:
                url = urljoin(url, r.headers["location"])
                if url.startswith(stop_prefix):
                    return url
                continue
            assert r.status_code == 200, (r.status_code, r.text[:500])
            form = _FormParser()
            form.feed(r.text)
            assert form.action, r.text[:500]
            fields = dict(form.fields)
            if fields.get("prompt") == "login":
                fields["login"] = user
                fields["password"] = "any"
            url, method, data = urljoin(url, form.action), "POST", fields
        raise AssertionError("too many redirects")


def device_browser(
    verification_uri: str,
    user: str = "alice",
    *,
    user_code: str | None = None,
    deny: bool = False,
) -> str:
    """Play the user's browser on oidc-provider's device pages (RFC 8628 3.3): open
    ``verification_uri`` (``verification_uri_complete`` already carries the code; otherwise
    ``user_code`` is typed in), confirm (or abort with ``deny``), log in and consent. Returns
    the text of the last page (``Sign-in Success``, or the error page)."""
    typed = False
    with httpx2.Client(follow_redirects=False, timeout=10) as b:
        url, method, data = verification_uri, "GET", None
        for _ in range(20):
            r = b.request(method, url, data=data)
            method, data = "GET", None
            if r.is_redirect:
                url = urljoin(url, r.headers["location"])
                continue
            form = _FormParser()
            form.feed(r.text)
            asks_code = "user_code" in form.fields and "confirm" not in form.fields
            if not form.action or (typed and asks_code):
                return r.text  # the end, or the code input again: refused or aborted
            fields = dict(form.fields)
            if "user_code" in fields and not fields["user_code"] and user_code is not None:
                fields["user_code"] = user_code
                typed = True
            if fields.get("confirm"):
                typed = True  # the code is in; what follows is login or the end
                if deny:
                    del fields["confirm"]
                    fields["abort"] = "yes"
            if fields.get("prompt") == "login":
                fields["login"] = user
                fields["password"] = "any"
            url, method, data = urljoin(url, form.action), "POST", fields
        raise AssertionError("too many pages")


def device_approver(
    user: str = "alice",
    *,
    deny: bool = False,
    before: Callable[[], None] | None = None,
    on_error: Callable[[], None] | None = None,
) -> tuple[Callable[[Any], None], dict[str, Any]]:
    """An ``on_code`` callable for ``authenticate_device()``: in a thread, (waits for
    ``before()``, then) approves or denies on the device pages. ``result['page']`` is the
    last page the browser saw, ``result['shown']`` the DeviceAuthorization. When the
    browser fails, ``on_error()`` (e.g. ``cancel_authentication``) stops the waiting SDK."""
    result: dict[str, Any] = {}

    def run(authorization: Any) -> None:
        try:
            if before is not None:
                before()
            result["page"] = device_browser(
                authorization.verification_uri_complete, user, deny=deny
            )
        except Exception as e:  # surfaced by the test through result
            result["error"] = e
            if on_error is not None:
                on_error()

    def on_code(authorization: Any) -> None:
        result["shown"] = authorization
        t = threading.Thread(target=run, args=(authorization,), daemon=True)
        result["thread"] = t
        t.start()

    return on_code, result


def is_loopback_redirect(url: str) -> bool:
    parts = urlsplit(url)
    return parts.hostname == "127.0.0.1" and parts.path == "/oauth-redirect"


def browser_in_thread(user: str = "alice") -> tuple[Callable[[str], None], dict[str, Any]]:
    """An ``open_browser`` callable: logs in in a thread and then visits the loopback
    redirect like a browser would. ``result['page']`` is what the browser finally showed."""
    result: dict[str, Any] = {}

    def run(url: str) -> None:
        try:
            parts = urlsplit(url)
            redirect = dict(parse_qsl(parts.query))["redirect_uri"]
            callback = browser_login(url, user, stop_prefix=redirect)
            r = httpx2.get(callback, timeout=30)
            result["status"] = r.status_code
            result["page"] = r.text
        except Exception as e:  # surfaced by the test through result
            result["error"] = e

    def open_browser(url: str) -> None:
        t = threading.Thread(target=run, args=(url,), daemon=True)
        result["thread"] = t
        t.start()

    return open_browser, result


# --- a small scripted HTTP server ----------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[["Seen"], Reply]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


class ScriptedServer:
    """A real HTTP server on 127.0.0.1:0 answering from ``routes`` ({path: fn(Seen) -> Reply})
    and recording every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                seen = Seen(
                    self.command,
                    parts.path,
                    dict(parse_qsl(parts.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                with owner.lock:
                    owner.seen.append(seen)
                route = owner.routes.get(parts.path)
                reply = route(seen) if route else Reply(404, {"error": "not_found"})
                body = reply.body
                headers = dict(reply.headers)
                if isinstance(body, dict | list):
                    body = json.dumps(body)
                    headers.setdefault("content-type", "application/json")
                if isinstance(body, str):
                    body = body.encode()
                self.send_response(reply.status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def count(self, path: str, **form: str) -> int:
        with self.lock:
            return sum(
                1
                for s in self.seen
                if s.path == path and all(s.form.get(k) == v for k, v in form.items())
            )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def discovery(base: str) -> dict[str, Any]:
    return {
        "issuer": base,
        "authorization_endpoint": base + "/oauth2/authorize",
        "token_endpoint": base + "/oauth2/token",
        "userinfo_endpoint": base + "/oauth2/userinfo",
        "revocation_endpoint": base + "/oauth2/revoke",
        "jwks_uri": base + "/oauth2/jwks",
        "end_session_endpoint": base + "/oauth2/end_session",
    }


def free_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env


def key_for(endpoint: str, client_id: str = "app", name: str = "default") -> str:
    """The storage key an ``Authgear(client_id, endpoint, name=name)`` keeps its session under."""
    return storage_key(name, endpoint.rstrip("/"), client_id)
