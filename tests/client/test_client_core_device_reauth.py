"""The sans-IO core's device authorization grant (RFC 8628) and reauthentication, driven
with canned HTTP answers and a fake clock that only moves when the flow sleeps: every
interval, slow_down, back-off and expiry decision is checked without waiting."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from test_client_core import CLIENT, DISCOVERY, EP, Answer, Canned, jwks_of, ok, token

from authgear.client import (
    AccessDeniedError,
    CannotReauthenticateError,
    DeviceAuthorization,
    DeviceCodeExpiredError,
    DeviceFlowUnsupportedError,
    IDTokenError,
    NetworkError,
    OAuthError,
    ServerError,
    SessionState,
    SessionStateChangeReason,
    StoredSession,
)
from authgear.client._core import (
    CAN_REAUTHENTICATE_CLAIM,
    DEFAULT_SCOPES,
    DEVICE_CODE_GRANT_TYPE,
    HTTPRequest,
    HTTPResponse,
    SessionCore,
    ShowDeviceCode,
    Sleep,
)

DEVICE_EP = EP + "/oauth2/device_authorization"
DISCOVERY_WITH_DEVICE = ok(
    {
        **json.loads(DISCOVERY.content),
        "device_authorization_endpoint": DEVICE_EP,
    }
)
PENDING = ok({"error": "authorization_pending"}, 400)
SLOW_DOWN = ok({"error": "slow_down"}, 400)


@dataclass
class FakeClock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class Device(Canned):
    """``Canned`` plus the device flow's effects: a Sleep moves the fake clock (and is
    recorded), a ShowDeviceCode is recorded as what the user was shown."""

    clock: FakeClock = field(default_factory=FakeClock)
    sleeps: list[float] = field(default_factory=list)
    shown: list[DeviceAuthorization] = field(default_factory=list)

    def perform(self, effect: object) -> Any:
        if isinstance(effect, Sleep):
            self.sleeps.append(effect.seconds)
            self.clock.now += effect.seconds
            return None
        if isinstance(effect, ShowDeviceCode):
            self.shown.append(effect.authorization)
            return None
        return super().perform(effect)

    def polls(self) -> list[HTTPRequest]:
        return [
            r for r in self.requests if dict(parse_qsl((r.body or b"").decode())).get("device_code")
        ]


def device_core(
    answers: list[Answer], record: StoredSession | None = None
) -> tuple[SessionCore, Device]:
    canned = Device(answers)
    core = SessionCore(CLIENT, EP, clock=canned.clock)
    if record is not None:
        canned.store[core.storage_key] = record
    canned.run(core.configure_flow())
    canned.effects.clear()
    return core, canned


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signed(key: rsa.RSAPrivateKey, **claims: object) -> str:
    now = int(time.time())
    body: dict[str, object] = {"iss": EP, "aud": CLIENT, "sub": "user-1", "iat": now}
    body["exp"] = now + 300
    body.update(claims)
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None},
        key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )


def device_code(interval: int | None = 5, expires_in: int = 600, **extra: object) -> HTTPResponse:
    body: dict[str, object] = {
        "device_code": "dc-SECRET",
        "user_code": "WDJB-MJHT",
        "verification_uri": EP + "/device",
        "verification_uri_complete": EP + "/device?user_code=WDJB-MJHT",
        "expires_in": expires_in,
    }
    if interval is not None:
        body["interval"] = interval
    body.update(extra)
    return ok(body)


def approved(key: rsa.RSAPrivateKey, **claims: object) -> list[Answer]:
    """The token answer of an approved device code, then the JWKS to verify it."""
    return [token(at="at-dev", rt="rt-dev", id_token=signed(key, **claims)), jwks_of(key)]


# --- the device authorization grant -----------------------------------------------------------


def test_device_flow_shows_the_code_polls_every_interval_and_stores_the_session(
    key: rsa.RSAPrivateKey,
) -> None:
    core, canned = device_core(
        [DISCOVERY_WITH_DEVICE, device_code(), PENDING, PENDING, *approved(key)]
    )
    result = canned.run(core.device_flow())
    assert result.sub == "user-1"
    # the device authorization request: client id and the sign-in scopes
    assert (canned.requests[1].method, canned.requests[1].url) == ("POST", DEVICE_EP)
    assert canned.form(1) == {"client_id": CLIENT, "scope": " ".join(DEFAULT_SCOPES)}
    [shown] = canned.shown
    assert (shown.user_code, shown.verification_uri) == ("WDJB-MJHT", EP + "/device")
    assert shown.verification_uri_complete == EP + "/device?user_code=WDJB-MJHT"
    assert (shown.expires_in, shown.interval) == (600, 5)
    # shown before the first poll, then one poll per interval
    assert isinstance(canned.effects[2], ShowDeviceCode)
    assert canned.sleeps == [5, 5, 5]
    polls = canned.polls()
    assert len(polls) == 3 and all(p.url == EP + "/oauth2/token" for p in polls)
    assert canned.form(2) == {
        "grant_type": DEVICE_CODE_GRANT_TYPE,
        "device_code": "dc-SECRET",
        "client_id": CLIENT,
    }
    assert canned.locked == 3  # each poll under the storage lock: stored whole or not at all
    stored = canned.store[core.storage_key]
    assert (stored.refresh_token, stored.access_token) == ("rt-dev", "at-dev")
    assert (core.state, core.reason) == (
        SessionState.AUTHENTICATED,
        SessionStateChangeReason.AUTHENTICATED,
    )


def test_device_flow_slow_down_adds_five_seconds_for_this_and_every_later_poll(
    key: rsa.RSAPrivateKey,
) -> None:
    core, canned = device_core(
        [
            DISCOVERY_WITH_DEVICE,
            device_code(interval=2),
            *(SLOW_DOWN, PENDING, SLOW_DOWN, PENDING),
            *approved(key),
        ]
    )
    canned.run(core.device_flow())
    assert canned.sleeps == [2, 7, 7, 12, 12]  # RFC 8628 3.5: +5 s each time, and it stays


def test_device_flow_default_interval_is_five_seconds_and_zero_is_one(
    key: rsa.RSAPrivateKey,
) -> None:
    core, canned = device_core([DISCOVERY_WITH_DEVICE, device_code(interval=None), *approved(key)])
    canned.run(core.device_flow())
    assert canned.sleeps == [5]
    core, canned = device_core([DISCOVERY_WITH_DEVICE, device_code(interval=0), *approved(key)])
    canned.run(core.device_flow())
    assert canned.sleeps == [1]  # a server saying 0 is not hammered


def test_device_flow_access_denied_is_typed_stops_polling_and_stores_nothing() -> None:
    core, canned = device_core(
        [DISCOVERY_WITH_DEVICE, device_code(), PENDING, ok({"error": "access_denied"}, 400)]
    )
    with pytest.raises(AccessDeniedError) as e:
        canned.run(core.device_flow())
    assert isinstance(e.value, OAuthError) and e.value.error == "access_denied"
    assert len(canned.polls()) == 2 and canned.store == {}
    assert core.state is SessionState.NO_SESSION


def test_device_flow_expired_token_from_the_server_is_typed() -> None:
    core, canned = device_core(
        [DISCOVERY_WITH_DEVICE, device_code(), ok({"error": "expired_token"}, 400)]
    )
    with pytest.raises(DeviceCodeExpiredError):
        canned.run(core.device_flow())
    assert canned.store == {}


def test_device_flow_expiry_on_the_clock_stops_without_another_poll() -> None:
    answers = [DISCOVERY_WITH_DEVICE, device_code(expires_in=12), PENDING, PENDING]
    core, canned = device_core(answers)
    with pytest.raises(DeviceCodeExpiredError, match="expired"):
        canned.run(core.device_flow())
    assert canned.sleeps == [5, 5, 2]  # the last wait ends at the expiry
    assert len(canned.polls()) == 2 and canned.answers == []


@pytest.mark.parametrize(
    "trouble", [NetworkError("connection reset"), ok({"error": "server_error"}, 503), ok({}, 429)]
)
def test_device_flow_backs_off_on_network_errors_5xx_and_429_and_keeps_polling(
    key: rsa.RSAPrivateKey, trouble: Answer
) -> None:
    core, canned = device_core(
        [DISCOVERY_WITH_DEVICE, device_code(interval=5), trouble, trouble, PENDING, *approved(key)]
    )
    assert canned.run(core.device_flow()).sub == "user-1"
    assert canned.sleeps == [5, 10, 20, 20]  # doubled after each failure (RFC 8628 3.5)


def test_device_flow_invalid_grant_for_the_device_code_is_an_oauth_error() -> None:
    core, canned = device_core(
        [DISCOVERY_WITH_DEVICE, device_code(), ok({"error": "invalid_grant"}, 400)]
    )
    with pytest.raises(OAuthError) as e:
        canned.run(core.device_flow())
    assert e.value.error == "invalid_grant" and canned.store == {}


def test_device_flow_without_a_device_endpoint_says_so_before_any_request() -> None:
    core, canned = device_core([DISCOVERY])
    with pytest.raises(DeviceFlowUnsupportedError, match="device_authorization_endpoint"):
        canned.run(core.device_flow())
    assert len(canned.requests) == 1  # discovery only


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"user_code": "\x1b[2J\x1b[HWDJB"}, "user_code"),  # terminal escape injection
        ({"user_code": ""}, "user_code"),
        ({"verification_uri": "javascript:alert(1)"}, "verification_uri"),
        ({"verification_uri": EP + "/device\x1b]8;;https://evil.example\x07"}, "verification_uri"),
        ({"verification_uri_complete": "file:///etc/passwd"}, "verification_uri_complete"),
        ({"device_code": None}, "device_code"),
        ({"expires_in": "soon"}, "expires_in"),
        ({"interval": "fast"}, "interval"),
    ],
)
def test_device_flow_hostile_device_authorization_is_refused_before_anything_is_shown(
    fields: dict[str, object], match: str
) -> None:
    core, canned = device_core([DISCOVERY_WITH_DEVICE, device_code(**fields)])
    with pytest.raises(ServerError, match=match):
        canned.run(core.device_flow())
    assert canned.shown == [] and canned.polls() == []


def test_device_flow_accepts_the_draft_name_verification_url(key: rsa.RSAPrivateKey) -> None:
    body = json.loads(device_code().content)
    body["verification_url"] = body.pop("verification_uri")
    core, canned = device_core([DISCOVERY_WITH_DEVICE, ok(body), *approved(key)])
    canned.run(core.device_flow())
    assert canned.shown[0].verification_uri == EP + "/device"


@pytest.mark.parametrize(
    "claims", [{"aud": "another-client"}, {"iss": "https://evil.example"}, {"exp": 1}]
)
def test_device_flow_forged_id_token_is_refused_and_nothing_is_stored(
    key: rsa.RSAPrivateKey, claims: dict[str, object]
) -> None:
    core, canned = device_core([DISCOVERY_WITH_DEVICE, device_code(), *approved(key, **claims)])
    with pytest.raises(IDTokenError):
        canned.run(core.device_flow())
    assert canned.store == {} and core.state is SessionState.NO_SESSION


def test_device_codes_never_appear_in_reprs() -> None:
    core, canned = device_core([DISCOVERY_WITH_DEVICE, device_code(), PENDING])
    with pytest.raises(IndexError):  # out of canned answers after the first poll
        canned.run(core.device_flow())
    shown = repr(canned.shown[0])
    assert "WDJB" not in shown and "SECRET" not in shown
    assert all("SECRET" not in repr(e) for e in canned.effects)


# --- reauthentication -------------------------------------------------------------------------


def session_with(key: rsa.RSAPrivateKey, **claims: object) -> StoredSession:
    now = time.time()
    claims.setdefault(CAN_REAUTHENTICATE_CLAIM, True)
    claims.setdefault("auth_time", int(now) - 3600)
    return StoredSession(
        "rt-keep",
        "at-keep",
        expires_at=now + 3600,
        refresh_after=now + 3000,
        id_token=signed(key, **claims),
    )


def reauth_url(core: SessionCore, canned: Device, **kwargs: Any) -> dict[str, str]:
    url = canned.run(core.reauthorize_flow("http://127.0.0.1:5000/cb", **kwargs))
    return dict(parse_qsl(urlsplit(url).query))


def finish(core: SessionCore, canned: Device, params: dict[str, str], answers: list[Answer]) -> Any:
    canned.answers += answers
    return canned.run(
        core.finish_authentication_flow(
            f"http://127.0.0.1:5000/cb?code=c0de&state={params['state']}&iss={EP}"
        )
    )


def test_reauthorize_sends_max_age_0_and_the_id_token_as_hint_without_offline_access(
    key: rsa.RSAPrivateKey,
) -> None:
    now = int(time.time())
    record = session_with(key, iat=now - 200, exp=now + 100)  # valid long enough: no refresh
    core, canned = device_core([DISCOVERY], record)
    params = reauth_url(core, canned, state="s")
    assert len(canned.requests) == 1  # discovery only
    assert params["max_age"] == "0"
    assert params["id_token_hint"] == record.id_token
    assert params["scope"].split() == ["openid", "https://authgear.com/scopes/full-access"]
    assert params["nonce"] and params["code_challenge_method"] == "S256"
    assert params["x_state"] == "s"
    assert "prompt" not in params  # as @authgear/web: max_age and id_token_hint only
    assert reauth_url(core, canned, max_age=30, prompt="login")["max_age"] == "30"


def test_reauthorize_without_a_session_raises_and_sends_nothing() -> None:
    core, canned = device_core([])
    with pytest.raises(CannotReauthenticateError, match="not signed in"):
        canned.run(core.reauthorize_flow("http://127.0.0.1:5000/cb"))
    assert canned.requests == []


@pytest.mark.parametrize("value", [False, None, "true"])
def test_reauthorize_refuses_a_user_who_cannot_reauthenticate_and_sends_nothing(
    key: rsa.RSAPrivateKey, value: object
) -> None:
    core, canned = device_core([], session_with(key, **{CAN_REAUTHENTICATE_CLAIM: value}))
    with pytest.raises(CannotReauthenticateError, match="cannot reauthenticate"):
        canned.run(core.reauthorize_flow("http://127.0.0.1:5000/cb"))
    assert canned.requests == []


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": int(time.time()) - 600, "exp": int(time.time()) - 300},  # expired
        {"iat": int(time.time()) - 270, "exp": int(time.time()) + 30},  # expires in 30 s
        {"iat": int(time.time()) - 300, "exp": None},  # no exp: 5 minutes from iat
    ],
)
def test_reauthorize_refreshes_an_id_token_past_its_lifetime_and_sends_the_new_one(
    key: rsa.RSAPrivateKey, claims: dict[str, object]
) -> None:
    old = session_with(key, **claims)
    new_id_token = signed(key, **{CAN_REAUTHENTICATE_CLAIM: True})
    core, canned = device_core(
        [DISCOVERY, token(at="at-2", id_token=new_id_token)],
        old,
    )
    params = reauth_url(core, canned)
    assert canned.form(1)["grant_type"] == "refresh_token"
    assert params["id_token_hint"] == new_id_token
    assert canned.store[core.storage_key].id_token == new_id_token


def test_reauthorize_checks_can_reauthenticate_on_the_refreshed_id_token(
    key: rsa.RSAPrivateKey,
) -> None:
    old = session_with(key, exp=int(time.time()) - 1)
    core, canned = device_core(
        [DISCOVERY, token(id_token=signed(key, **{CAN_REAUTHENTICATE_CLAIM: False}))], old
    )
    with pytest.raises(CannotReauthenticateError):
        canned.run(core.reauthorize_flow("http://127.0.0.1:5000/cb"))
    assert len(canned.requests) == 2  # discovery and the refresh; no authorization


def test_reauthorize_after_the_refresh_token_was_revoked_says_the_session_ended(
    key: rsa.RSAPrivateKey,
) -> None:
    old = session_with(key, exp=int(time.time()) - 1)
    core, canned = device_core([DISCOVERY, ok({"error": "invalid_grant"}, 400)], old)
    with pytest.raises(CannotReauthenticateError, match="session ended"):
        canned.run(core.reauthorize_flow("http://127.0.0.1:5000/cb"))
    assert core.reason is SessionStateChangeReason.INVALID


def test_reauthenticate_replaces_only_the_id_token(key: rsa.RSAPrivateKey) -> None:
    record = session_with(key)
    core, canned = device_core([DISCOVERY], record)
    params = reauth_url(core, canned)
    fresh_id = signed(key, nonce=params["nonce"], auth_time=int(canned.clock.now))
    result = finish(core, canned, params, [token(at="at-new", id_token=fresh_id), jwks_of(key)])
    assert result.sub == "user-1" and result.auth_time is not None
    stored = canned.store[core.storage_key]
    assert stored.id_token == fresh_id
    assert (stored.refresh_token, stored.access_token) == ("rt-keep", "at-keep")
    assert core.id_token_claims()["auth_time"] == int(canned.clock.now)
    assert core.reason is SessionStateChangeReason.FOUND_TOKEN  # no state change
    assert canned.form(1)["grant_type"] == "authorization_code"


def test_reauthenticate_as_another_user_is_refused_and_the_session_unchanged(
    key: rsa.RSAPrivateKey,
) -> None:
    record = session_with(key)
    core, canned = device_core([DISCOVERY], record)
    params = reauth_url(core, canned)
    other = signed(key, sub="mallory", nonce=params["nonce"], auth_time=int(canned.clock.now))
    with pytest.raises(IDTokenError, match="another user"):
        finish(core, canned, params, [token(id_token=other), jwks_of(key)])
    assert canned.store[core.storage_key] == record


@pytest.mark.parametrize(
    ("max_age", "age", "accepted"),
    [(0, 0, True), (0, 59, True), (0, 3600, False), (300, 350, True), (300, 400, False)],
)
def test_reauthenticate_refuses_an_auth_time_older_than_max_age(
    key: rsa.RSAPrivateKey, max_age: int, age: int, accepted: bool
) -> None:
    """A server (or a user agent that dropped max_age) answering without a new sign-in is
    caught by auth_time: older than the request minus max_age minus 60 s leeway."""
    record = session_with(key)
    core, canned = device_core([DISCOVERY], record)
    params = reauth_url(core, canned, max_age=max_age)
    new = signed(key, nonce=params["nonce"], auth_time=int(canned.clock.now) - age)
    answers: list[Answer] = [token(id_token=new), jwks_of(key)]
    if accepted:
        finish(core, canned, params, answers)
        assert canned.store[core.storage_key].id_token == new
    else:
        with pytest.raises(IDTokenError, match="did not sign the user in again"):
            finish(core, canned, params, answers)
        assert canned.store[core.storage_key] == record


def test_reauthenticate_without_auth_time_or_with_a_wrong_nonce_is_refused(
    key: rsa.RSAPrivateKey,
) -> None:
    record = session_with(key)
    core, canned = device_core([DISCOVERY], record)
    params = reauth_url(core, canned)
    no_auth_time = signed(key, nonce=params["nonce"], auth_time=None)
    with pytest.raises(IDTokenError, match="auth_time"):
        finish(core, canned, params, [token(id_token=no_auth_time), jwks_of(key)])
    params = reauth_url(core, canned)
    replayed = signed(key, nonce="an-old-nonce", auth_time=int(canned.clock.now))
    with pytest.raises(IDTokenError, match="nonce"):
        finish(core, canned, params, [token(id_token=replayed)])
    assert canned.store[core.storage_key] == record


def test_reauthenticate_revokes_a_refresh_token_the_server_should_not_have_issued(
    key: rsa.RSAPrivateKey,
) -> None:
    record = session_with(key)
    core, canned = device_core([DISCOVERY], record)
    params = reauth_url(core, canned)
    new = signed(key, nonce=params["nonce"], auth_time=int(canned.clock.now))
    revoked = HTTPResponse(200, {}, b"")
    finish(core, canned, params, [token(rt="rt-stray", id_token=new), revoked, jwks_of(key)])
    assert canned.requests[2].url == EP + "/oauth2/revoke"
    assert canned.form(2) == {"token": "rt-stray", "client_id": CLIENT}
    assert canned.store[core.storage_key].refresh_token == "rt-keep"


def test_reauthenticate_when_the_session_ended_meanwhile_stores_nothing(
    key: rsa.RSAPrivateKey,
) -> None:
    core, canned = device_core([DISCOVERY], session_with(key))
    params = reauth_url(core, canned)
    canned.store.clear()  # another process logged out while the browser was open
    new = signed(key, nonce=params["nonce"], auth_time=int(canned.clock.now))
    with pytest.raises(CannotReauthenticateError, match="nothing was stored"):
        finish(core, canned, params, [token(id_token=new), jwks_of(key)])
    assert canned.store == {}
