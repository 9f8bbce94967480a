"""RFC 8252 loopback redirect listener for native apps (CLIs, desktop apps, notebooks).

Listens on 127.0.0.1 (port 0 by default: the OS picks a free one) in a daemon thread. The
first request to the redirect path that carries the ``state`` of our authorization request
completes ``callback`` (others get a 400, so a stray local request cannot abort sign-in);
the browser then waits (up to a minute) for the app to finish the token exchange, so that
the page it shows says truthfully whether sign-in worked.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import html
import http.server
import socket
import threading
from urllib.parse import parse_qsl, urlsplit

from authgear.client._errors import CancelError

__all__ = ["LoopbackServer"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;display:flex;align-items:center;
justify-content:center;min-height:90vh;margin:0;background:#f6f7f9;color:#1d2129}}
main{{background:#fff;padding:2.5rem 3rem;border-radius:12px;box-shadow:0 2px 12px #0001;
max-width:32rem;text-align:center}}h1{{font-size:1.4rem;margin:0 0 .75rem}}
p{{margin:0;color:#555}}</style></head>
<body><main><h1>{title}</h1><p>{message}</p></main></body></html>
"""


def render_page(title: str, message: str) -> bytes:
    return _PAGE.format(title=html.escape(title), message=html.escape(message)).encode("utf-8")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LoopbackServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return  # the query string holds the authorization code: never log it

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        if parts.path != owner.path or not parts.query:
            self._send(404, render_page("Not found", "This address only receives sign-in."))
            return
        url = f"{owner.redirect_uri}?{parts.query}"
        state = dict(parse_qsl(parts.query, keep_blank_values=True)).get("state", "")
        expected = owner.expected_state
        if expected is None or not hmac.compare_digest(state.encode(), expected.encode()):
            # not the redirect of the sign-in we started: keep waiting for that one
            self._send(400, render_page("Not this sign-in", "This link is not for this app."))
            return
        first = False
        with owner.lock:
            if not owner.callback.done():
                owner.callback.set_result(url)
                first = True
        if not first:
            self._send(409, render_page("Already handled", "You can close this window."))
            return
        try:
            ok, message = owner.outcome.result(timeout=60)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            ok, message = False, "The application did not finish signing in."
        if ok:
            self._send(200, render_page("You are signed in", message))
        else:
            self._send(400, render_page("Sign-in failed", message))

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)


class LoopbackServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/oauth-redirect",
        *,
        uri_host: str | None = None,
    ):
        self.host = host
        # the host name written in redirect_uri: "localhost" stays "localhost" (servers
        # compare redirect URIs as strings), while the socket binds the loopback address
        self.uri_host = uri_host or host
        self.path = path if path.startswith("/") else "/" + path
        self.lock = threading.Lock()
        # the state of the authorization request; until it is set, every request is refused
        self.expected_state: str | None = None
        self.callback: concurrent.futures.Future[str] = concurrent.futures.Future()
        self.outcome: concurrent.futures.Future[tuple[bool, str]] = concurrent.futures.Future()
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _Handler)
        self._server.owner = self
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="authgear-loopback",
            daemon=True,
        )
        self._closed = False

    @classmethod
    def for_redirect_uri(cls, redirect_uri: str | None) -> LoopbackServer:
        if redirect_uri is None:
            return cls()
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError("a loopback redirect_uri must be http://127.0.0.1[:port]/path")
        host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
        return cls(host, parts.port or 0, parts.path or "/", uri_host=parts.hostname)

    @property
    def redirect_uri(self) -> str:
        host = f"[{self.uri_host}]" if ":" in self.uri_host else self.uri_host
        return f"http://{host}:{self.port}{self.path}"

    def __repr__(self) -> str:
        return f"LoopbackServer({self.redirect_uri})"

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        with self.lock:
            if not self.callback.done():
                self.callback.set_exception(CancelError("authentication was cancelled"))

    def finish(self, ok: bool, message: str) -> None:
        with self.lock:
            if not self.outcome.done():
                self.outcome.set_result((ok, message))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.finish(False, "Sign-in was abandoned.")
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
