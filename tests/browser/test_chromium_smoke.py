"""The browser fixture itself works: Chromium reaches a loopback server, submits a form, keeps a
cookie, and each test starts with no cookies. Independent of the Authgear server, so a broken
Chromium setup shows up here rather than as a confusing failure in a login test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from playwright.sync_api import Page

FORM = b"""<!doctype html><html><head><title>Smoke</title></head><body>
<form method="post" action="/submit">
  <label for="email">Email</label><input id="email" name="email" type="email">
  <button type="submit">Continue</button>
</form></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    posted: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        if self.path == "/cookie":
            body = (self.headers.get("Cookie") or "none").encode()
            self._send(200, body, "text/plain")
        else:
            self._send(200, FORM, "text/html")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        fields = parse_qs(self.rfile.read(length).decode())
        _Handler.posted.append(fields)
        body = f"<p id='result'>hello {fields['email'][0]}</p>".encode()
        self._send(200, body, "text/html", cookie="smoke=1; HttpOnly; SameSite=Lax; Path=/")

    def _send(self, status: int, body: bytes, ctype: str, cookie: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_form_post_and_cookie(page: Page, site: str) -> None:
    page.goto(site + "/")
    assert page.title() == "Smoke"
    page.get_by_label("Email").fill("user@example.com")
    page.get_by_role("button", name="Continue").click()
    assert page.locator("#result").inner_text() == "hello user@example.com"
    assert _Handler.posted[-1] == {"email": ["user@example.com"]}
    page.goto(site + "/cookie")
    assert page.locator("body").inner_text() == "smoke=1"


def test_each_test_starts_without_cookies(page: Page, site: str) -> None:
    page.goto(site + "/cookie")
    assert page.locator("body").inner_text() == "none"
