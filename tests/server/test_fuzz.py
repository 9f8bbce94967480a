"""Generated hostile input against every endpoint of the running server: never a 500."""

from __future__ import annotations

import httpx2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agtest.server import NATIVE, ServerProcess

NAMES = st.sampled_from(
    [
        "client_id",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
        "nonce",
        "prompt",
        "max_age",
        "code_challenge",
        "code_challenge_method",
        "response_mode",
        "grant_type",
        "code",
        "code_verifier",
        "refresh_token",
        "client_secret",
        "token",
        "id_token_hint",
        "post_logout_redirect_uri",
        "x_page",
        "login_hint",
        "flow",
        "acr_values",
        "credential",
        "trust_device",
        "next",
    ]
)
VALUES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            NATIVE,
            "http://127.0.0.1/callback",
            "code",
            "openid offline_access",
            "none",
            "S256",
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "a.b",
            "form_post",
            "-1",
            "99999999999999999999",
        ]
    ),
)
PARAMS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
PATHS = st.sampled_from(
    [
        "/oauth2/authorize",
        "/oauth2/token",
        "/oauth2/userinfo",
        "/oauth2/revoke",
        "/oauth2/end_session",
        "/_resolver/resolve",
        "/login",
        "/signup",
        "/logout",
        "/flow/totp",
        "/flow/passkey",
        "/flow/passkey/options",
        "/flow/reauth",
        "/flow/nope",
        "/settings/security",
        "/settings/security/totp/add",
    ]
)
HEADERS = st.dictionaries(
    st.sampled_from(["Authorization", "Cookie", "Content-Type", "Origin"]),
    # h11 refuses to send values with surrounding whitespace, so strip them.
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
        str.strip
    ),
    max_size=3,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=PATHS, method=st.sampled_from(["GET", "POST"]), params=PARAMS, headers=HEADERS)
def test_no_input_makes_a_500(
    authgear_server: ServerProcess,
    path: str,
    method: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
) -> None:
    with httpx2.Client(base_url=authgear_server.url, timeout=10) as http:
        if method == "GET":
            r = http.get(path, params=params, headers=headers)
        else:
            r = http.post(path, data=dict(params), headers=headers)
    assert r.status_code < 500, (path, method, params, headers, r.text[:300])
    assert "Traceback" not in r.text
