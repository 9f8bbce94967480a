"""The sans-IO core, driven directly: canned HTTP responses in, requests and storage
operations out, no network (the way httpx tests its auth flows). The refresh, sign-in
(authorize + finish), logout, configure/migration and bearer (401 -> refresh -> retry) flows."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authgear.client import (
    AuthgearError,
    NetworkError,
    OAuthError,
    SessionState,
    SessionStateChangeReason,
    StateMismatchError,
    StoredSession,
    TransientError,
)
from authgear.client._core import (
    USER_AGENT,
    DeleteStore,
    GetToken,
    HTTPRequest,
    HTTPResponse,
    LoadStore,
    Locked,
    SaveStore,
    SendWithToken,
    SessionCore,
    bearer_flow,
)

EP = "https://auth.example"
CLIENT = "app"


def ok(body: object, status: int = 200, **headers: str) -> HTTPResponse:
    return HTTPResponse(
        status, {"content-type": "application/json", **headers}, json.dumps(body).encode()
    )


DISCOVERY = ok(
    {
        "issuer": EP,
        "authorization_endpoint": EP + "/oauth2/authorize",
        "token_endpoint": EP + "/oauth2/token",
        "userinfo_endpoint": EP + "/oauth2/userinfo",
        "revocation_endpoint": EP + "/oauth2/revoke",
        "jwks_uri": EP + "/oauth2/jwks",
        "id_token_signing_alg_values_supported": ["RS256"],
        "authorization_response_iss_parameter_supported": True,
    }
)

Answer = HTTPResponse | Exception | Callable[[HTTPRequest], HTTPResponse]


@dataclass
class Canned:
    """Runs a flow the way the drivers do: each HTTPRequest gets the next canned answer (an
    exception is thrown into the flow, as a driver does with a network error), storage
    effects act on ``store``, Locked runs the nested flow and is recorded."""

    answers: list[Answer]
    store: dict[str, StoredSession] = field(default_factory=dict)
    requests: list[HTTPRequest] = field(default_factory=list)
    effects: list[object] = field(default_factory=list)
    locked: int = 0

    def run(self, flow: Generator[Any, Any, Any]) -> Any:
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            self.effects.append(effect)
            error, value = None, None
            try:
                value = self.perform(effect)
            except Exception as e:
                error = e

    def perform(self, effect: object) -> Any:
        if isinstance(effect, HTTPRequest):
            self.requests.append(effect)
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer(effect) if callable(answer) else answer
        if isinstance(effect, LoadStore):
            return self.store.get(effect.key)
        if isinstance(effect, SaveStore):
            self.store[effect.key] = effect.record
            return None
        if isinstance(effect, DeleteStore):
            self.store.pop(effect.key, None)
            return None
        if isinstance(effect, Locked):
            self.locked += 1
            return self.run(effect.flow)
        raise AssertionError(f"unexpected effect {effect!r}")

    def form(self, i: int) -> dict[str, str]:
        return dict(parse_qsl((self.requests[i].body or b"").decode()))


def core_with(record: StoredSession | None, answers: list[Answer]) -> tuple[SessionCore, Canned]:
    core = SessionCore(CLIENT, EP)
    canned = Canned(answers)
    if record is not None:
        canned.store[core.storage_key] = record
    canned.run(core.configure_flow())
    canned.effects.clear()
    return core, canned


def stale(rt: str = "rt-1") -> StoredSession:
    return StoredSession(rt, "at-old", expires_at=0.0, refresh_after=0.0)


def fresh(rt: str = "rt-1", at: str = "at-1") -> StoredSession:
    now = time.time()
    return StoredSession(rt, at, expires_at=now + 3600, refresh_after=now + 3000)


def token(
    at: str = "at-2", rt: str | None = None, expires_in: int = 600, **extra: str
) -> HTTPResponse:
    body: dict[str, object] = {"access_token": at, "token_type": "Bearer", "expires_in": expires_in}
    if rt is not None:
        body["refresh_token"] = rt
    body.update(extra)
    return ok(body)


# --- refresh ----------------------------------------------------------------------------------


def test_core_refresh_sends_the_refresh_grant_under_the_lock_and_stores_a_bound_record() -> None:
    core, canned = core_with(stale("rt-keep"), [DISCOVERY, token(at="at-2")])
    assert canned.run(core.refresh_if_needed_flow()) == "at-2"
    assert canned.locked == 1
    assert [(r.method, r.url) for r in canned.requests] == [
        ("GET", EP + "/.well-known/openid-configuration"),
        ("POST", EP + "/oauth2/token"),
    ]
    assert canned.form(1) == {
        "grant_type": "refresh_token",
        "client_id": CLIENT,
        "refresh_token": "rt-keep",
    }
    assert all(("user-agent", USER_AGENT) in r.headers for r in canned.requests)
    record = canned.store[core.storage_key]
    assert (record.access_token, record.refresh_token) == ("at-2", "rt-keep")  # no rotation
    assert (record.endpoint, record.client_id) == (EP, CLIENT)
    assert record.expires_at is not None and record.refresh_after is not None
    assert record.expires_at - record.refresh_after == pytest.approx(60, abs=1)  # 0.9 x 600


def test_core_fresh_token_makes_no_request_and_takes_no_lock() -> None:
    core, canned = core_with(fresh(at="at-1"), [])
    assert canned.run(core.refresh_if_needed_flow()) == "at-1"
    assert canned.requests == [] and canned.locked == 0


def test_core_rejected_token_is_refreshed_once_even_if_fresh() -> None:
    core, canned = core_with(fresh(at="at-1"), [DISCOVERY, token(at="at-2")])
    assert canned.run(core.refresh_if_needed_flow(rejected="at-1")) == "at-2"
    # a caller that saw the same old token refused later gets the new one without a request
    assert canned.run(core.refresh_if_needed_flow(rejected="at-1")) == "at-2"
    assert len(canned.requests) == 2


def test_core_refresh_invalid_grant_rereads_the_store_then_clears() -> None:
    core, canned = core_with(stale(), [DISCOVERY, ok({"error": "invalid_grant"}, 400)])
    assert canned.run(core.refresh_if_needed_flow()) is None
    loads = [e for e in canned.effects if isinstance(e, LoadStore)]
    assert len(loads) == 2  # before refreshing, and again before clearing
    assert core.storage_key not in canned.store
    assert (core.state, core.reason) == (SessionState.NO_SESSION, SessionStateChangeReason.INVALID)


def test_core_refresh_invalid_grant_after_rotation_by_another_holder_keeps_the_session() -> None:
    def refused_then_rotated(_req: HTTPRequest) -> HTTPResponse:
        canned.store[core.storage_key] = stale("rt-2")  # the other holder, just in time
        return ok({"error": "invalid_grant"}, 400)

    core, canned = core_with(stale("rt-1"), [DISCOVERY, refused_then_rotated, token(at="at-3")])
    assert canned.run(core.refresh_if_needed_flow()) == "at-3"
    assert canned.form(2)["refresh_token"] == "rt-2"
    assert core.state is SessionState.AUTHENTICATED


@pytest.mark.parametrize(
    "answer", [ok({"error": "server_error"}, 503), ok({}, 429), NetworkError("connect refused")]
)
def test_core_refresh_transient_failure_raises_and_keeps_the_session(answer: Answer) -> None:
    core, canned = core_with(stale(), [DISCOVERY, answer])
    with pytest.raises(TransientError):
        canned.run(core.refresh_if_needed_flow())
    assert canned.store[core.storage_key] == stale()
    assert core.state is SessionState.AUTHENTICATED


def test_core_refresh_logs_at_debug_without_tokens(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="authgear.client")
    core, canned = core_with(stale("rt-SECRET"), [DISCOVERY, token(at="at-SECRET")])
    canned.run(core.refresh_if_needed_flow())
    messages = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert any(m.startswith("refreshing the access token") for m in messages)
    assert any(m.startswith("refreshed the access token") for m in messages)
    assert "SECRET" not in caplog.text


# --- sign-in ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_of(key: rsa.RSAPrivateKey) -> HTTPResponse:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return ok({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})


def id_token(key: rsa.RSAPrivateKey, nonce: str, **claims: object) -> str:
    now = int(time.time())
    body = {"iss": EP, "aud": CLIENT, "sub": "user-1", "iat": now, "exp": now + 300}
    body["nonce"] = nonce
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def start_sign_in(core: SessionCore, canned: Canned) -> dict[str, str]:
    url = canned.run(core.authorize_flow("http://127.0.0.1:5000/cb", page="signup", state="s"))
    return dict(parse_qsl(urlsplit(url).query))


def test_core_finish_authentication_exchanges_the_code_and_verifies_the_id_token(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    core, canned = core_with(None, [DISCOVERY])
    params = start_sign_in(core, canned)
    assert params["x_page"] == "signup" and params["code_challenge_method"] == "S256"
    nonce = params["nonce"]
    canned.answers += [
        token(at="at-1", rt="rt-1", id_token=id_token(signing_key, nonce)),
        jwks_of(signing_key),
    ]
    callback = f"http://127.0.0.1:5000/cb?code=c0de&state={params['state']}&iss={EP}"
    result = canned.run(core.finish_authentication_flow(callback))
    assert (result.sub, result.state) == ("user-1", "s")
    form = canned.form(1)
    assert form["code"] == "c0de" and form["redirect_uri"] == "http://127.0.0.1:5000/cb"
    challenge = hashlib.sha256(form["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(challenge).rstrip(b"=").decode() == params["code_challenge"]
    assert canned.locked == 1
    assert canned.store[core.storage_key].refresh_token == "rt-1"
    assert (core.state, core.reason) == (
        SessionState.AUTHENTICATED,
        SessionStateChangeReason.AUTHENTICATED,
    )
    # the state is used once: replaying the redirect is refused before any request
    with pytest.raises(StateMismatchError):
        canned.run(core.finish_authentication_flow(callback))
    assert len(canned.requests) == 3


@pytest.mark.parametrize(
    ("claims", "iss", "match"),
    [
        ({"nonce": "other"}, EP, "nonce"),
        ({"aud": "another-client"}, EP, "(?i)audience"),
        ({}, "https://evil.example", "issuer"),
    ],
)
def test_core_finish_authentication_refuses_a_forged_response_and_stores_nothing(
    signing_key: rsa.RSAPrivateKey, claims: dict[str, str], iss: str, match: str
) -> None:
    core, canned = core_with(None, [DISCOVERY])
    params = start_sign_in(core, canned)
    claims = dict(claims)
    tok = id_token(signing_key, claims.pop("nonce", params["nonce"]), **claims)
    canned.answers += [token(rt="rt-1", id_token=tok), jwks_of(signing_key)]
    with pytest.raises(AuthgearError, match=match):
        canned.run(
            core.finish_authentication_flow(
                f"http://127.0.0.1:5000/cb?code=c&state={params['state']}&iss={iss}"
            )
        )
    assert canned.store == {} and core.state is SessionState.NO_SESSION


def test_core_finish_authentication_error_redirect_is_an_oauth_error() -> None:
    core, canned = core_with(None, [DISCOVERY])
    params = start_sign_in(core, canned)
    with pytest.raises(OAuthError) as e:
        canned.run(
            core.finish_authentication_flow(
                f"http://x/cb?error=access_denied&state={params['state']}"
            )
        )
    assert e.value.error == "access_denied" and len(canned.requests) == 1


# --- logout -----------------------------------------------------------------------------------


def test_core_logout_revokes_the_refresh_token_then_deletes() -> None:
    core, canned = core_with(fresh("rt-9"), [DISCOVERY, HTTPResponse(200, {}, b"")])
    canned.run(core.logout_flow(force=False))
    assert canned.requests[1].url == EP + "/oauth2/revoke"
    assert canned.form(1) == {"token": "rt-9", "client_id": CLIENT}
    assert canned.store == {} and canned.locked == 1
    assert core.reason is SessionStateChangeReason.LOGOUT


def test_core_logout_failure_keeps_the_session_unless_forced() -> None:
    core, canned = core_with(fresh(), [DISCOVERY, ok({}, 503)])
    with pytest.raises(TransientError):
        canned.run(core.logout_flow(force=False))
    assert core.storage_key in canned.store and core.state is SessionState.AUTHENTICATED
    canned.answers.append(NetworkError("unreachable"))
    canned.run(core.logout_flow(force=True))
    assert canned.store == {} and core.reason is SessionStateChangeReason.LOGOUT


# --- configure: isolation and migration -------------------------------------------------------


def test_core_record_bound_to_another_endpoint_is_never_used_or_sent() -> None:
    elsewhere = StoredSession("rt-other", "at-other", endpoint="https://other.example")
    core, canned = core_with(elsewhere, [])
    assert core.state is SessionState.NO_SESSION
    assert canned.run(core.refresh_if_needed_flow()) is None
    assert canned.requests == []
    assert canned.store[core.storage_key] == elsewhere  # not deleted either


def test_core_storage_key_names_the_endpoint_and_client() -> None:
    keys = {
        SessionCore(CLIENT, EP).storage_key,
        SessionCore(CLIENT, EP + "/").storage_key,  # same endpoint
        SessionCore(CLIENT, "https://AUTH.example").storage_key,  # host case does not matter
    }
    assert len(keys) == 1 and keys.pop().startswith("default.")
    assert SessionCore("other", EP).storage_key != SessionCore(CLIENT, EP).storage_key
    assert (
        SessionCore(CLIENT, "https://x.example").storage_key != SessionCore(CLIENT, EP).storage_key
    )
    with pytest.raises(ValueError, match="container name"):
        SessionCore(CLIENT, EP, name="../x")


def legacy_record(key: rsa.RSAPrivateKey, iss: str = EP, aud: str = CLIENT) -> StoredSession:
    return StoredSession("rt-legacy", "at-legacy", 0.0, 0.0, id_token(key, "n", iss=iss, aud=aud))


def test_core_configure_moves_a_legacy_session_of_this_issuer_and_client(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    core = SessionCore(CLIENT, EP)
    canned = Canned([], store={"default": legacy_record(signing_key)})
    canned.run(core.configure_flow())
    assert "default" not in canned.store
    moved = canned.store[core.storage_key]
    assert moved.refresh_token == "rt-legacy" and (moved.endpoint, moved.client_id) == (EP, CLIENT)
    assert canned.locked == 1 and core.state is SessionState.AUTHENTICATED


@pytest.mark.parametrize(
    ("iss", "aud"), [("https://other.example", CLIENT), (EP, "another-client")]
)
def test_core_configure_leaves_another_issuers_legacy_session_alone(
    signing_key: rsa.RSAPrivateKey, iss: str, aud: str
) -> None:
    core = SessionCore(CLIENT, EP)
    legacy = legacy_record(signing_key, iss=iss, aud=aud)
    canned = Canned([], store={"default": legacy})
    canned.run(core.configure_flow())
    assert canned.store == {"default": legacy}
    assert core.state is SessionState.NO_SESSION and canned.locked == 0


def test_core_configure_leaves_a_legacy_session_without_id_token_alone() -> None:
    core = SessionCore(CLIENT, EP)
    canned = Canned([], store={"default": stale()})
    canned.run(core.configure_flow())
    assert canned.store == {"default": stale()} and core.state is SessionState.NO_SESSION


# --- the bearer flow (fetch and every adapter) ------------------------------------------------


BEARER_BAD = (401, 'Bearer error="invalid_token"')


def drive_bearer(
    replayable: bool, tokens: list[str | None], answers: list[tuple[int, str | None]]
) -> list[object]:
    """Run bearer_flow, answering GetToken from ``tokens`` and sends from ``answers``."""
    flow = bearer_flow(replayable)
    seen: list[object] = []
    value: Any = None
    while True:
        try:
            effect = flow.send(value)
        except StopIteration:
            return seen
        seen.append(effect)
        value = tokens.pop(0) if isinstance(effect, GetToken) else answers.pop(0)


def test_core_bearer_flow_retries_once_after_a_bearer_401() -> None:
    seen = drive_bearer(True, ["at-1", "at-2"], [BEARER_BAD, BEARER_BAD])
    assert seen == [
        GetToken(),
        SendWithToken("at-1"),
        GetToken(rejected="at-1"),
        SendWithToken("at-2"),
    ]  # and not a third time, even though the retry got a 401 as well


@pytest.mark.parametrize(
    ("replayable", "tokens", "answer"),
    [
        (True, ["at-1"], (200, None)),  # success
        (True, [None], BEARER_BAD),  # no session: nothing to refresh
        (True, ["at-1"], (401, None)),  # not a Bearer challenge
        (True, ["at-1"], (401, 'Bearer error="insufficient_scope"')),  # a new token won't help
        (True, ["at-1"], (403, 'Bearer error="invalid_token"')),
        (False, ["at-1"], BEARER_BAD),  # a streamed body cannot be sent twice
    ],
)
def test_core_bearer_flow_sends_once_when_a_retry_cannot_help(
    replayable: bool, tokens: list[str | None], answer: tuple[int, str | None]
) -> None:
    seen = drive_bearer(replayable, tokens, [answer])
    assert [type(e) for e in seen] == [GetToken, SendWithToken]


@pytest.mark.parametrize("after_refresh", [None, "at-1"])
def test_core_bearer_flow_returns_the_401_when_the_refresh_gives_nothing_new(
    after_refresh: str | None,
) -> None:
    seen = drive_bearer(True, ["at-1", after_refresh], [BEARER_BAD])
    assert seen[-1] == GetToken(rejected="at-1")
