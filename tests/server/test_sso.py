"""Sign in with an upstream identity provider (issue 15) over HTTP, against a real
oidc-provider and a GitHub-like stub, on SQLite and PostgreSQL."""

from __future__ import annotations

import jwt
from sso_support import SsoServer, new_login, sign_in_app, sso  # noqa: F401

from agtest.server import exchange


def test_first_sign_in_creates_a_user_then_the_same_user_again(sso: SsoServer) -> None:
    login = new_login()
    c, cb, flow = sign_in_app(sso, "good", login)
    r = exchange(sso.server, cb["code"], flow)
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["id_token"], options={"verify_signature": False})
    assert "amr" not in claims  # an upstream sign-in adds no amr (Authgear)
    rows = sso.identities("good", login)
    assert len(rows) == 1 and rows[0][0] == claims["sub"]
    assert sso.users_with_email(f"{login}@example.test") == [(claims["sub"], True, True)]
    c.close()
    c2, cb2, flow2 = sign_in_app(sso, "good", login)
    r2 = exchange(sso.server, cb2["code"], flow2)
    sub2 = jwt.decode(r2.json()["id_token"], options={"verify_signature": False})["sub"]
    assert sub2 == claims["sub"]
    assert len(sso.identities("good", login)) == 1
