"""Upstream identity providers for the "Continue with ..." tests (issue 15): npm oidc-provider
as an OpenID Connect provider (tests/client/oidc_provider/upstream_idp.mjs), a GitHub-like
plain OAuth 2.0 stub in a thread, and a walker that plays the user's browser across our pages
and the provider's (a cookie-keeping client, no JavaScript)."""

from __future__ import annotations

import html.parser
import json
import re
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit

import httpx2

OP_DIR = Path(__file__).parent.parent / "client" / "oidc_provider"
CALLBACK_PATH = "/sso/oauth2/callback/"


# -- oidc-provider -------------------------------------------------------------------------------


@dataclass
class UpstreamIdp:
    issuer: str
    process: subprocess.Popen[bytes]

    def provider(self, name: str, **extra: Any) -> dict[str, Any]:
        """Our config entry for the upstream client ``name`` (the alias is the name)."""
        return {
            "alias": name,
            "type": "oidc",
            "issuer": self.issuer,
            "client_id": name,
            "client_secret": f"secret-{name}",
            "display_name": f"Test IdP ({name})",
            **extra,
        }

    def stats(self) -> dict[str, Any]:
        return httpx2.get(self.issuer + "/__stats").json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_upstream_idp(our_base: str) -> UpstreamIdp:
    if not (OP_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=OP_DIR, check=True)
    proc = subprocess.Popen(
        ["node", str(OP_DIR / "upstream_idp.mjs"), our_base + CALLBACK_PATH],
        cwd=OP_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("upstream_idp.mjs did not start")
    return UpstreamIdp(json.loads(line)["issuer"], proc)


# -- a GitHub-like provider --------------------------------------------------------------------


@dataclass
class GithubUser:
    id: int
    login: str
    emails: list[dict[str, Any]] = field(default_factory=list)
    name: str | None = None


class GithubStub:
    """GitHub's OAuth app endpoints and user API, as far as a sign-in uses them:
    GET /login/oauth/authorize (approves at once for ``next_user``), POST
    /login/oauth/access_token (client_secret_post, PKCE S256 checked, codes single use),
    GET /api/user and /api/user/emails (Bearer). ``requests`` records what arrived."""

    def __init__(self, client_id: str = "gh-client", client_secret: str = "gh-secret") -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.next_user: GithubUser | None = None
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, GithubUser] = {}
        self.requests: list[tuple[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path))
                parts = urlsplit(self.path)
                if parts.path == "/login/oauth/authorize":
                    q = dict(parse_qsl(parts.query))
                    code = secrets.token_urlsafe(16)
                    stub.codes[code] = {**q, "user": stub.next_user}
                    target = (
                        q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
                    )
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.end_headers()
                    return
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                user = stub.tokens.get(token)
                if user is None:
                    self._json(401, {"message": "Bad credentials"})
                elif parts.path == "/api/user":
                    self._json(200, {"id": user.id, "login": user.login, "name": user.name})
                elif parts.path == "/api/user/emails":
                    self._json(200, user.emails)
                else:
                    self._json(404, {"message": "Not Found"})

            def do_POST(self) -> None:
                stub.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                grant = stub.codes.pop(form.get("code", ""), None)
                ok = (
                    grant is not None
                    and form.get("client_id") == stub.client_id
                    and form.get("client_secret") == stub.client_secret
                    and form.get("redirect_uri") == grant["redirect_uri"]
                    and _s256(form.get("code_verifier", "")) == grant["code_challenge"]
                )
                if not ok or grant is None or grant["user"] is None:
                    self._json(200, {"error": "bad_verification_code"})  # GitHub answers 200
                    return
                token = "gho_" + secrets.token_urlsafe(24)
                stub.tokens[token] = grant["user"]
                self._json(200, {"access_token": token, "token_type": "bearer", "scope": "user"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def provider(self, alias: str = "github", **extra: Any) -> dict[str, Any]:
        return {
            "alias": alias,
            "type": "github",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "github_url": self.url,
            "api_url": self.url + "/api",
            **extra,
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _s256(verifier: str) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# -- the user's browser -----------------------------------------------------------------------


class _Forms(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")


def forms_of(page: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


def sso_form(page: str, alias: str) -> tuple[str, dict[str, str]]:
    """The "Continue with ..." form for ``alias`` on one of our pages."""
    for form in forms_of(page):
        if form["fields"].get("provider") == alias:
            return html_unescape(form["action"]), dict(form["fields"])
    raise AssertionError(f"no button for {alias} on the page")


def html_unescape(value: str) -> str:
    import html

    return html.unescape(value)


def click_provider(client: httpx2.Client, page_url: str, alias: str) -> httpx2.Response:
    """Open our page and press its "Continue with <alias>" button: the answer redirects to the
    provider."""
    page = client.get(page_url)
    assert page.status_code == 200, (page.status_code, page.text[:500])
    action, fields = sso_form(page.text, alias)
    return client.post(urljoin(page_url, action), data=fields)


def upstream_login(client: httpx2.Client, response: httpx2.Response, login: str) -> str:
    """From our redirect to the provider, play oidc-provider's dev interactions (login with
    ``login``, then consent) until the provider redirects to our callback; that URL is returned
    unfetched (so a test may replay or alter it)."""
    assert response.status_code in (302, 303), (response.status_code, response.text[:500])
    url = urljoin(str(response.url), response.headers["location"])
    method, data = "GET", None
    for _ in range(20):
        if CALLBACK_PATH in urlsplit(url).path:
            return url
        r = client.request(method, url, data=data)
        method, data = "GET", None
        if r.is_redirect:
            url = urljoin(url, r.headers["location"])
            continue
        assert r.status_code == 200, (r.status_code, r.text[:500])
        forms = forms_of(r.text)
        assert forms, r.text[:500]
        fields = dict(forms[0]["fields"])
        if fields.get("prompt") == "login":
            fields["login"] = login
            fields["password"] = "any"
        url, method, data = urljoin(url, forms[0]["action"]), "POST", fields
    raise AssertionError("the provider never answered")


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    for k, v in changes.items():
        if v is None:
            q.pop(k, None)
        else:
            q[k] = v
    return parts._replace(query=urlencode(q)).geturl()


ERROR_RE = re.compile(r'<p class="error"[^>]*>(.*?)</p>', re.S)


def error_text(page: str) -> str:
    m = ERROR_RE.search(page)
    return html_unescape(m.group(1)).strip() if m else ""


def upstream_cancel(client: httpx2.Client, response: httpx2.Response) -> str:
    """From our redirect to the provider, press "Cancel" on oidc-provider's login page: the
    provider answers ``error=access_denied``; that callback URL is returned unfetched."""
    url = urljoin(str(response.url), response.headers["location"])
    for _ in range(10):
        r = client.get(url)
        if not r.is_redirect:
            break
        url = urljoin(url, r.headers["location"])
    url = url.rstrip("/") + "/abort"
    for _ in range(10):
        if CALLBACK_PATH in urlsplit(url).path:
            return url
        r = client.get(url)
        assert r.is_redirect, (r.status_code, r.text[:300])
        url = urljoin(url, r.headers["location"])
    raise AssertionError("the provider never answered")
