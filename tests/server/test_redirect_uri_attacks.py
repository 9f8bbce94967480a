"""Redirect URI attacks (issue 9, RFC 9700 §2.1, RFC 8252 §7.3/§8.3) against the real server.

The headline attack: ``http://evil.example\\@127.0.0.1:9999/cb`` passed the old check (urllib
reads host 127.0.0.1) while a browser, following WHATWG URL where ``\\`` is ``/``, sends the code
to evil.example. Each test names the attack and the refusal. The differential tests check every
URI we accept against Node's WHATWG ``URL`` (one long-lived ``node`` process).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from agtest.server import Flow, ServerProcess, free_port, server_config
from agtest.whatwg import WhatwgURL
from authgear.server.config import ConfigError, load_settings
from authgear.server.security import redirect_uris

NATIVE = "redir-native"  # public, loopback literals without a port: any port (RFC 8252 §7.3)
PORTED = "redir-ported"  # public, a loopback literal *with* a port: that port only
LOCALHOST = "redir-localhost"  # public, localhost without a port: no port exception
CONFIDENTIAL = "redir-confidential"  # confidential, loopback without a port: exact
WEB = "redir-web"  # public https app
APP = "redir-app"  # public, RFC 8252 §7.1 private-use scheme

REGISTERED = {
    NATIVE: ["http://127.0.0.1/callback", "http://[::1]/callback", "http://127.0.0.1/q?x=1"],
    PORTED: ["http://127.0.0.1:8000/auth/callback"],
    LOCALHOST: ["http://localhost/callback"],
    CONFIDENTIAL: ["http://127.0.0.1/cb"],
    WEB: ["https://app.example.com/callback"],
    APP: ["com.example.app:/oauth-redirect"],
}
SECRET_HASH = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Storage plays no part here, so one SQLite server for the module."""
    port = free_port()
    clients = [
        {"id": cid, "redirect_uris": uris}
        | (
            {"type": "confidential", "client_secret_hash": SECRET_HASH}
            if cid == CONFIDENTIAL
            else {}
        )
        for cid, uris in REGISTERED.items()
    ]
    proc = ServerProcess(
        tmp_path_factory.mktemp("redirect"), port, server_config(port, clients=clients)
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def whatwg() -> Iterator[WhatwgURL]:
    parser = WhatwgURL()
    yield parser
    parser.close()


def authorize(
    server: ServerProcess, client_id: str, redirect_uri: str, **extra: str
) -> httpx2.Response:
    params = Flow.new(client_id, redirect_uri).params(scope="openid", **extra)
    return httpx2.get(server.url + "/oauth2/authorize", params=params)


def assert_accepted(r: httpx2.Response) -> None:
    assert r.status_code == 303, r.text[:300]
    assert r.headers["location"].startswith("/login?flow="), r.headers["location"]


def assert_error_page(r: httpx2.Response) -> None:
    """Refused on our own origin: an HTML error page, never a redirect to the asked URI."""
    assert r.status_code == 400, (r.status_code, r.headers.get("location"))
    assert "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html")
    assert "redirect URI" in r.text


HOSTILE = [
    # The issue's attack: urllib sees host 127.0.0.1, a browser sees evil.example.
    (NATIVE, "http://evil.example\\@127.0.0.1:9999/callback"),
    (NATIVE, "http://evil.example:9999\\@127.0.0.1:9999/callback"),
    (NATIVE, "http://127.0.0.1:9999\\@evil.example/callback"),
    (NATIVE, "http://127.0.0.1:9999/\\evil.example/callback"),
    # Userinfo, plain and encoded.
    (NATIVE, "http://user:pw@127.0.0.1:9999/callback"),
    (NATIVE, "http://evil.example@127.0.0.1/callback"),
    (NATIVE, "http://evil.example%40127.0.0.1:9999/callback"),
    (NATIVE, "http://evil.example%5c@127.0.0.1:9999/callback"),
    (NATIVE, "http://127.0.0.1%2f@evil.example/callback"),
    # Whitespace and control characters (WHATWG strips tabs and newlines, urllib keeps them).
    (NATIVE, "http://127.0.0.1:9999/callback\t"),
    (NATIVE, "http://127.0.0.1:99\n99/callback"),
    (NATIVE, " http://127.0.0.1:9999/callback"),
    (NATIVE, "http://127.0.0.1:9999/call\x00back"),
    # Fragments, dot segments, other spellings of the loopback address.
    (NATIVE, "http://127.0.0.1:9999/callback#x"),
    (NATIVE, "http://127.0.0.1:9999/x/../callback"),
    (NATIVE, "http://127.0.0.1:9999/%2e%2e/callback"),
    (NATIVE, "http://127.1:9999/callback"),
    (NATIVE, "http://2130706433:9999/callback"),
    (NATIVE, "http://0x7f.0.0.1:9999/callback"),
    (NATIVE, "http://127.0.0.1.:9999/callback"),
    (NATIVE, "http://[::ffff:127.0.0.1]:9999/callback"),
    (NATIVE, "http://[0:0:0:0:0:0:0:1]:9999/callback"),
    (NATIVE, "HTTP://127.0.0.1:9999/callback"),
    (NATIVE, "http:/127.0.0.1:9999/callback"),
    (NATIVE, "http:///127.0.0.1:9999/callback"),
    # Ports: none of these is a port 1-65535 as written.
    (NATIVE, "http://127.0.0.1:0/callback"),
    (NATIVE, "http://127.0.0.1:09999/callback"),
    (NATIVE, "http://127.0.0.1:99999/callback"),
    (NATIVE, "http://127.0.0.1:/callback"),
    # Not the registered path or query.
    (NATIVE, "http://127.0.0.1:9999/callback/"),
    (NATIVE, "http://127.0.0.1:9999/q?x=1&y=2"),
    (NATIVE, "https://127.0.0.1:9999/callback"),
    # localhost is not registered for this client, and gets no port exception anyway.
    (NATIVE, "http://localhost:9999/callback"),
    # A registered port is exact, for every client type.
    (PORTED, "http://127.0.0.1:8001/auth/callback"),
    (PORTED, "http://127.0.0.1/auth/callback"),
    # No port exception for localhost (RFC 8252 §8.3) nor for a confidential client.
    (LOCALHOST, "http://localhost:9999/callback"),
    (CONFIDENTIAL, "http://127.0.0.1:9999/cb"),
    # https: exact string.
    (WEB, "https://app.example.com@evil.example/callback"),
    (WEB, "https://evil.example\\@app.example.com/callback"),
    (WEB, "https://app.example.com:443/callback"),
    (WEB, "https://app.example.com./callback"),
    (WEB, "https://APP.example.com/callback"),
    (WEB, "https://app.example.com/callback?"),
    (WEB, "https://app.example.com/callback#"),
    (APP, "com.example.app://evil.example/oauth-redirect"),
    (APP, "com.example.app:/oauth-redirect/../x"),
]


@pytest.mark.parametrize("mode", ["query", "fragment", "form_post"])
@pytest.mark.parametrize(("client_id", "uri"), HOSTILE)
def test_hostile_redirect_uri_is_refused_with_an_error_page_never_a_redirect(
    server: ServerProcess, client_id: str, uri: str, mode: str
) -> None:
    assert_error_page(authorize(server, client_id, uri, response_mode=mode))


@pytest.mark.parametrize(
    ("client_id", "uri"),
    [
        (NATIVE, "http://127.0.0.1:1/callback"),
        (NATIVE, "http://127.0.0.1:51234/callback"),
        (NATIVE, "http://127.0.0.1:65535/callback"),
        (NATIVE, "http://127.0.0.1/callback"),
        (NATIVE, "http://[::1]:51234/callback"),
        (NATIVE, "http://127.0.0.1:51234/q?x=1"),
        (PORTED, "http://127.0.0.1:8000/auth/callback"),
        (LOCALHOST, "http://localhost/callback"),
        (CONFIDENTIAL, "http://127.0.0.1/cb"),
        (WEB, "https://app.example.com/callback"),
        (APP, "com.example.app:/oauth-redirect"),
    ],
)
def test_registered_uri_and_public_loopback_literal_on_any_port_are_accepted(
    server: ServerProcess, client_id: str, uri: str
) -> None:
    assert_accepted(authorize(server, client_id, uri))


def test_invalid_request_errors_redirect_only_to_the_validated_uri(server: ServerProcess) -> None:
    """An error after the URI is validated goes back to exactly that string, query kept."""
    r = authorize(server, NATIVE, "http://127.0.0.1:5555/q?x=1", response_type="token")
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("http://127.0.0.1:5555/q?x=1&")
    query = parse_qs(urlsplit(location).query)
    assert query["x"] == ["1"] and query["error"] == ["unsupported_response_type"]


def _signed_in_browser(server: ServerProcess) -> httpx2.Client:
    """A browser with a live session (so authorize answers at once: silent SSO)."""
    from agtest.server import Browser, new_email

    browser = Browser(server.url)
    r = browser.authorize(
        **Flow.new(NATIVE, "http://127.0.0.1:5555/callback").params(x_page="signup")
    )
    r = browser.submit(r.headers["location"], new_email(), "correct horse battery")
    assert r.status_code == 303, r.text
    return browser.http


@pytest.mark.parametrize("mode", ["query", "fragment", "form_post"])
def test_every_response_mode_answers_to_the_validated_string(
    server: ServerProcess, mode: str
) -> None:
    http = _signed_in_browser(server)
    uri = "http://127.0.0.1:5555/q?x=1"
    r = http.get("/oauth2/authorize", params=Flow.new(NATIVE, uri).params(response_mode=mode))
    if mode == "form_post":
        assert r.status_code == 200
        assert f'action="{uri}"' in r.text.replace("&amp;", "&")
    else:
        sep = "&" if mode == "query" else "#"
        assert r.status_code == 303
        assert r.headers["location"].startswith(uri + sep)
    http.close()


@pytest.mark.parametrize(
    ("uri", "form_action"),
    [
        ("http://127.0.0.1:5555/callback", "form-action http://127.0.0.1:5555;"),
        # CSP has no syntax for IPv6 literals: the scheme is the narrowest source there is.
        ("http://[::1]:5555/callback", "form-action http:;"),
    ],
)
def test_form_post_page_limits_form_action_to_the_redirect_origin(
    server: ServerProcess, uri: str, form_action: str
) -> None:
    http = _signed_in_browser(server)
    r = http.get(
        "/oauth2/authorize", params=Flow.new(NATIVE, uri).params(response_mode="form_post")
    )
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert form_action in csp + ";"
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    # The code must not leak to the target through a Referer header (RFC 9700 §4.2).
    assert r.headers["referrer-policy"] == "no-referrer"
    http.close()


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://evil.example\\@127.0.0.1/cb", "backslash"),
        ("http://user@127.0.0.1/cb", "userinfo"),
        ("https://app.example.com/cb#x", "fragment"),
        ("https://app.example.com/c b", "printable ASCII"),
        ("https://APP.example.com/cb", "lower-case"),
        ("http://127.1/cb", "IPv4"),
        ("https://app.example.com:0/cb", "port"),
        ("javascript:alert(1)", "scheme"),
        ("app/callback", "absolute"),
        ("https://a%2eexample.com/cb", "percent-encoding"),
        ("https://app.example.com/a/../cb", "segment"),
    ],
)
def test_config_refuses_a_hostile_registered_uri_with_one_line(
    tmp_path: Path, uri: str, reason: str
) -> None:
    (tmp_path / "authgear.yaml").write_text(
        f"clients:\n  - id: c\n    redirect_uris: [{uri!r}]\n    post_logout_redirect_uris: []\n"
    )
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path, environ={})
    message = str(e.value)
    assert "\n" not in message
    assert "clients.0.redirect_uris" in message and reason in message, message


# -- the differential tests -------------------------------------------------------------------

HOSTILE_PIECES = [
    "\\",
    "/",
    "//",
    "@",
    ":",
    "%",
    "#",
    "?",
    ".",
    "..",
    " ",
    "\t",
    "\n",
    "\x00",
    "\x7f",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%40",
    "%3a",
    "%00",
    "%zz",
    "[",
    "]",
    "[::1]",
    "'",
    '"',
    "<",
    "`",
    "{",
    "|",
    "^",
    ";",
    ",",
    "=",
    "&",
    "+",
    "~",
    "!",
    "$",
    "*",
    "(",
    ")",
    "\u3002",
    "\uff0e",
    "\uff0f",
    "\u200b",
    "\u00a0",
    "\u2028",
    "\ufeff",
    "\u0130",
    "\u212a",
    "ß",
    "é",
    "xn--",
    "xn--bcher-kva",
    "0x",
    "0x7f",
    "017",
    "127.1",
    "2130706433",
    "255",
    "256",
    "-",
    "_",
    "evil.example",
    "evil.example\\@",
    "user:pw@",
    "http:",
    "https:",
    "localhost",
    "LOCALHOST",
    "127.0.0.1",
    ":80",
    ":443",
    ":0",
    ":65536",
    ":0080",
    ":1",
]
SCHEMES = ["http", "https", "HTTP", "hTtPs", "com.example.app", "javascript", "ftp", "ws", "x"]
SEPARATORS = ["://", ":/", ":", ":///", ":\\\\", ":/\\", "://\\", ":\\/"]
HOSTS = [
    "127.0.0.1",
    "[::1]",
    "localhost",
    "app.example.com",
    "evil.example",
    "127.1",
    "0x7f.0.0.1",
    "2130706433",
    "127.0.0.01",
    "0177.0.0.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:0:0:1]",
    "[::1%25lo]",
    "[::1]]",
    "APP.example.com",
    "app.example.com.",
    "\uff41pp.example.com",
    "evil。example",
    "127。0。0。1",
    "%31%32%37.0.0.1",
    "a..b",
    "-a-.b_c",
    "xn--bcher-kva.example",
    "xn--a.example",
    "xn--Bcher-kva.example",
    "a" * 70 + ".example",
    "255.255.255.255",
    "256.0.0.1",
    "1.2.3",
    "1.2.3.4.5",
    "example.0x1",
    "example.1",
    "1e3",
]
PORTS = ["", ":", ":0", ":1", ":80", ":443", ":5555", ":05555", ":65535", ":65536", ":+1", ":1.0"]
PATHS = [
    "",
    "/",
    "/callback",
    "/a/../callback",
    "/%2e%2e/callback",
    "/./callback",
    "/.%2e/x",
    "//evil.example/callback",
    "/call back",
    "/call%20back",
    "/callback;x=1",
    "/%2F%5C",
    "/\uff43allback",
    "/callback%00",
    "/a@b:c",
    "/~user/!$&'()*+,;=",
    "/%zz",
    "/%",
    "/é",
]
QUERIES = ["", "?", "?a=1", "?a=1&b=2", "?a='", '?a="', "?a=<b>", "?a=%zz", "??", "?a=/?@:"]
FRAGMENTS = ["", "", "", "#", "#f"]


def _label(name: str) -> str:
    return "xn--" + codecs.encode(name, "punycode").decode("ascii")


PARTS = st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(min_size=1, max_size=3))
COMPOSED = st.builds(
    lambda *p: "".join(p),
    st.sampled_from(SCHEMES),
    st.sampled_from(SEPARATORS),
    st.one_of(st.just(""), st.sampled_from(["user@", "user:pw@", "evil.example\\@", "@"])),
    st.one_of(
        st.sampled_from(HOSTS),
        st.builds(lambda n: _label(n) + ".example", st.text(min_size=1, max_size=6)),
        st.from_regex(r"[a-z0-9._-]{1,12}", fullmatch=True),
    ),
    st.sampled_from(PORTS),
    st.one_of(
        st.sampled_from(PATHS),
        st.from_regex(r"(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,6}){0,3}", fullmatch=True),
    ),
    st.sampled_from(QUERIES),
    st.sampled_from(FRAGMENTS),
)


PLAUSIBLE = st.builds(
    lambda *p: "".join(p),
    st.sampled_from(["http://", "https://", "com.example.app://", "org.example.x-y+z://"]),
    st.one_of(
        st.from_regex(r"[a-z0-9_-]{1,10}(\.[a-z0-9_-]{1,10}){0,3}", fullmatch=True),
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
        st.builds(lambda n: _label(n) + ".example", st.text(min_size=1, max_size=6)),
    ),
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda p: f":{p}")),
    st.from_regex(r"(/([A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2}){0,8}){0,4}", fullmatch=True),
    st.one_of(
        st.just(""),
        st.from_regex(r"\?([A-Za-z0-9\-._~!$&()*+,;=:@/?]|%[0-9A-Fa-f]{2}){0,12}", fullmatch=True),
    ),
)


@st.composite
def mutated(draw: st.DrawFn, bases: list[str]) -> str:
    """A registered URI with hostile pieces inserted or characters replaced."""
    uri = draw(st.sampled_from(bases))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(uri)))
        piece = draw(PARTS)
        if draw(st.booleans()):
            uri = uri[:at] + piece + uri[at:]
        else:
            uri = uri[:at] + piece + uri[at + 1 :]
    return uri


ALL_REGISTERED = [u for uris in REGISTERED.values() for u in uris]


def _expected(parsed: redirect_uris.RedirectURI) -> dict[str, str]:
    """Our parse, in the shape of WHATWG URL's fields."""
    web = parsed.scheme in redirect_uris.WEB_SCHEMES
    default = redirect_uris.DEFAULT_PORTS.get(parsed.scheme)
    return {
        "protocol": parsed.scheme + ":",
        "username": "",
        "password": "",
        "hostname": parsed.host or "",
        "port": "" if parsed.port in (None, default) else str(parsed.port),
        "pathname": (parsed.path or "/") if web else parsed.path,
        "search": f"?{parsed.query}" if parsed.query else "",
        "hash": "",
    }


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uri=st.one_of(COMPOSED, mutated(ALL_REGISTERED), PLAUSIBLE))
@example(uri="http://evil.example\\@127.0.0.1:9999/cb")
@example(uri="http://127.0.0.1:5555/callback")
@example(uri="http://[::1]:5555/callback")
@example(uri="http://xn--bcher-kva.example/cb")
@example(uri="com.example.app:/oauth-redirect")
def test_every_uri_the_parser_accepts_reads_the_same_in_whatwg_url(
    whatwg: WhatwgURL, uri: str
) -> None:
    """The parser the matcher relies on: whatever it accepts, a browser reads identically."""
    try:
        parsed = redirect_uris.parse(uri)
    except redirect_uris.InvalidRedirectURI:
        event("refused by our parser")
        return
    event("accepted by our parser")
    browser = whatwg.parse(uri)
    assert browser["ok"], (uri, browser)
    assert {k: browser[k] for k in _expected(parsed)} == _expected(parsed), uri


def test_the_parser_accepts_the_plain_uris_the_differential_test_needs(whatwg: WhatwgURL) -> None:
    """So the property above is not vacuous: ordinary URIs pass and agree."""
    for uri in [*ALL_REGISTERED, "http://127.0.0.1:5555/callback", "https://a.example:8443/x?y=z"]:
        parsed = redirect_uris.parse(uri)
        assert {k: whatwg.parse(uri)[k] for k in _expected(parsed)} == _expected(parsed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    client_id=st.sampled_from([NATIVE, PORTED, CONFIDENTIAL, WEB]),
    data=st.data(),
)
def test_hostile_redirect_uris_over_http_are_refused_or_read_the_same_by_a_browser(
    server: ServerProcess, whatwg: WhatwgURL, client_id: str, data: st.DataObject
) -> None:
    """Whatever the server accepts for a client, a browser reads as one of its registered URIs:
    same scheme, host, path and query, and the same port unless the registration is a public
    client's loopback literal without a port. Everything else is an error page."""
    registered = REGISTERED[client_id]
    uri = data.draw(st.one_of(mutated(registered), COMPOSED, st.sampled_from(registered)))
    uri_ports = data.draw(st.sampled_from(["", ":1", ":5555", ":65535"]))
    if uri_ports and uri.startswith("http://127.0.0.1/"):
        uri = uri.replace("127.0.0.1", "127.0.0.1" + uri_ports, 1)
    r = authorize(server, client_id, uri)
    if r.status_code != 303:
        event("refused by the server")
        assert_error_page(r)
        return
    event("accepted by the server")
    assert_accepted(r)
    browser = whatwg.parse(uri)
    assert browser["ok"] and not browser["username"] and not browser["password"], uri
    fields = ("protocol", "hostname", "pathname", "search", "hash")
    for reg in registered:
        theirs = whatwg.parse(reg)
        if all(browser[f] == theirs[f] for f in fields):
            any_port = (
                client_id != CONFIDENTIAL and redirect_uris.parse(reg).is_loopback_without_port
            )
            assert any_port or browser["port"] == theirs["port"], (uri, reg)
            return
    raise AssertionError(f"accepted {uri!r}, which a browser reads as none of {registered}")


def test_generated_config_keeps_the_sdk_and_the_example_app_working(tmp_path: Path) -> None:
    """The first-run config: the native client takes the SDK's http://127.0.0.1:<any port>/
    oauth-redirect (and `authgear login`'s), the example web app exactly its port 8000."""
    from authgear.server.config import default_config_text
    from authgear.server.endpoints.authorize import redirect_uri_allowed

    text, ids = default_config_text("127.0.0.1", 3000)
    (tmp_path / "authgear.yaml").write_text(text)
    config = load_settings(tmp_path, environ={}).config
    native, web = config.client(ids["native"]), config.client(ids["web"])
    assert native is not None and web is not None
    assert native.refresh_token_rotation and native.pkce_required
    assert redirect_uri_allowed(native, "http://127.0.0.1:51234/oauth-redirect")
    assert not redirect_uri_allowed(native, "http://localhost:51234/oauth-redirect")
    assert not redirect_uri_allowed(native, "http://evil.example\\@127.0.0.1:1/oauth-redirect")
    assert redirect_uri_allowed(web, "http://127.0.0.1:8000/auth/callback")
    assert not redirect_uri_allowed(web, "http://127.0.0.1:8001/auth/callback")


def test_a_login_flow_whose_redirect_uri_was_unregistered_meanwhile_issues_no_code(
    fresh_server: ServerProcess,
) -> None:
    from agtest.server import NATIVE as TEST_NATIVE
    from agtest.server import Browser

    server = fresh_server
    server.start()
    browser = Browser(server.url)
    try:
        r = browser.authorize(**Flow.new(TEST_NATIVE).params(x_page="signup"))
        page = r.headers["location"]
        assert browser.http.get(page).status_code == 200
        server.stop()
        native = next(c for c in server.config["clients"] if c["id"] == TEST_NATIVE)
        native["redirect_uris"] = ["http://127.0.0.1/elsewhere"]
        server.start()
        r = browser.http.get(page)
        assert r.status_code == 400 and "expired" in r.text and "location" not in r.headers
    finally:
        browser.close()


def test_a_refused_request_tells_the_developer_what_to_register(server: ServerProcess) -> None:
    """Issue 17.5: the page and the log name the client and the refused URI (escaped), and
    say where to register it; an unknown client is named too."""
    asked = "http://127.0.0.1:9999/not-registered<script>"
    r = authorize(server, NATIVE, asked)
    assert_error_page(r)
    assert f"client id “{NATIVE}”" in r.text
    assert "http://127.0.0.1:9999/not-registered&lt;script&gt;" in r.text
    assert "not-registered<script>" not in r.text
    assert "redirect_uris" in r.text and "authgear.yaml" in r.text
    r = authorize(server, NATIVE, "http://127.0.0.1:9999/not-registered")
    assert_error_page(r)
    assert "not registered for this client" in r.text
    r = authorize(server, NATIVE, "http://evil.example\\@127.0.0.1:9999/callback")
    assert_error_page(r)
    assert "not registered for this client" not in r.text  # the parser's own reason
    r = authorize(server, "no-such-client", "http://127.0.0.1:9999/callback")
    assert r.status_code == 400
    assert "client id “no-such-client”" in r.text and "not registered" in r.text
    log = server.log()
    assert "authorize refused: redirect_uri" in log and NATIVE in log
    assert "authorize refused: unknown client_id 'no-such-client'" in log
