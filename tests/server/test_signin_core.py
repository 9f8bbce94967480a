"""The sign-in's pure parts with canned input: Authgear's amr rules (its utils_amr_test.go
cases), the policy's choice of steps, and the flow record's round trip."""

from __future__ import annotations

import pytest

from authgear.server.signin.amr import (
    DEVICE_TOKEN,
    PASSKEY,
    PASSWORD,
    RECOVERY_CODE,
    TOTP,
    collect_amr,
    multi_factor,
)
from authgear.server.signin.flow import (
    LOGIN,
    REAUTH,
    SETTINGS,
    SIGNUP,
    LoginFlow,
    StepDone,
    new_flow,
)
from authgear.server.signin.policy import Facts, Next, next_step


def done(step: str, amr: tuple[str, ...], authenticator: str | None) -> StepDone:
    return StepDone(step, list(amr), authenticator, 0)


def test_amr_follows_authgears_rules() -> None:
    password = done("login", PASSWORD, "password")
    totp = done("totp", TOTP, "t1")
    assert collect_amr([password]) == ["pwd", "x_primary_password"]
    assert collect_amr([password, totp]) == [
        "mfa",
        "otp",
        "pwd",
        "x_primary_password",
        "x_secondary_totp",
    ]
    # One authenticator plus a recovery code is mfa; a trusted device never is.
    recovery = done("recovery_code", RECOVERY_CODE, "recovery_code")
    assert collect_amr([password, recovery]) == [
        "mfa",
        "pwd",
        "x_primary_password",
        "x_recovery_code",
    ]
    device = done("device_token", DEVICE_TOKEN, "device_token")
    assert collect_amr([password, device]) == ["pwd", "x_device_token", "x_primary_password"]
    # The same authenticator twice is one; steps that prove nothing add nothing.
    assert collect_amr([password, done("reauth", PASSWORD, "password"), done("x", (), None)]) == [
        "pwd",
        "x_primary_password",
    ]
    assert collect_amr([done("passkey", PASSKEY, "p1")]) == ["x_passkey", "x_primary_passkey"]
    assert collect_amr([]) == []
    assert multi_factor(["x_passkey", "x_primary_passkey"])
    assert multi_factor(["mfa", "otp"]) and not multi_factor(["pwd", "x_device_token"])


FACTS = Facts(
    mode="if_exists",
    passwords=True,
    passkeys=True,
    totp=True,
    recovery_codes_enabled=True,
    device_tokens_enabled=True,
    has_password=True,
)


def flow(
    intent: str = LOGIN, *, starter: dict[str, object] | None = None, **extra: object
) -> LoginFlow:
    return new_flow(intent, starter or {"kind": "next", "next": None}, 0, **extra)


def after(f: LoginFlow, *steps: StepDone) -> LoginFlow:
    f.steps.extend(steps)
    return f


PW = done("login", PASSWORD, "password")
DEVICE_STARTER: dict[str, object] = {"kind": "device", "device": "d1", "client_id": "c"}
SU_PK = ("signup", "passkey")


@pytest.mark.parametrize(
    ("name", "the_flow", "facts", "expected"),
    [
        ("entry", flow(), FACTS, Next("login", ("signup", "passkey"))),
        ("signup entry", flow(SIGNUP), FACTS, Next("signup", ("login", "passkey"))),
        (
            "hinted login: no sign-up instead",
            flow(expected_user="u"),
            FACTS,
            Next("login", ("passkey",)),
        ),
        (
            "no passkeys here",
            flow(),
            Facts("if_exists", True, False, True, True, True, True),
            Next("login", ("signup",)),
        ),
        ("password, no second factor", after(flow(user_id="u"), PW), FACTS, Next(None)),
        (
            "password, TOTP enrolled",
            after(flow(user_id="u"), PW),
            Facts("if_exists", True, True, True, True, True, True, True, True),
            Next("totp", ("recovery_code",)),
        ),
        (
            "trusted browser",
            after(flow(user_id="u"), PW),
            Facts("if_exists", True, True, True, True, True, True, True, False, False, True),
            Next("device_token"),
        ),
        (
            "required: enrol",
            after(flow(user_id="u"), PW),
            Facts("required", True, True, True, True, True, True),
            Next("enroll_totp"),
        ),
        (
            "acr demand: enrol",
            after(flow(user_id="u", require_mfa=True), PW),
            FACTS,
            Next("enroll_totp"),
        ),
        (
            "disabled: never",
            after(flow(user_id="u", require_mfa=True), PW),
            Facts("disabled", True, True, False, True, True, True, True),
            Next(None),
        ),
        (
            "a passkey is both factors",
            after(flow(user_id="u"), done("passkey", PASSKEY, "p1")),
            Facts("required", True, True, True, True, True, True, True),
            Next(None),
        ),
        ("reauth", flow(REAUTH, user_id="u"), FACTS, Next("reauth")),
        (
            "reauth with a passkey",
            flow(REAUTH, user_id="u"),
            Facts("if_exists", True, True, True, True, True, True, has_passkeys=True),
            Next("reauth", ("passkey",)),
        ),
        (
            "reauth: a trusted browser is not fresh proof",
            after(flow(REAUTH, user_id="u"), PW),
            Facts("if_exists", True, True, True, True, True, True, True, False, False, True),
            Next("totp"),
        ),
        (
            "settings on a fresh session",
            flow(SETTINGS, user_id="u", starter={"kind": "settings", "action": "add_totp"}),
            FACTS,
            Next("enroll_totp"),
        ),
        (
            "settings on an old session: confirm first",
            flow(SETTINGS, user_id="u", reauth_session="s"),
            FACTS,
            Next("reauth"),
        ),
        ("device: sign in first", flow(starter=DEVICE_STARTER), FACTS, Next("login", SU_PK)),
        (
            "device: signed in by the steps, then approve",
            after(flow(user_id="u", starter=DEVICE_STARTER), PW),
            FACTS,
            Next("approve_device"),
        ),
        (
            "device: the second factor comes before the approval",
            after(flow(user_id="u", starter=DEVICE_STARTER), PW),
            Facts("if_exists", True, True, True, True, True, True, True, True),
            Next("totp", ("recovery_code",)),
        ),
        (
            "device: entered while signed in, approve at once",
            flow(user_id="u", starter={**DEVICE_STARTER, "session": "s"}),
            Facts("if_exists", True, True, True, True, True, True, True, True),
            Next("approve_device"),
        ),
        (
            "device: approved, done",
            after(flow(user_id="u", starter=DEVICE_STARTER), PW, done("approve_device", (), None)),
            FACTS,
            Next(None),
        ),
    ],
)
def test_policy(name: str, the_flow: LoginFlow, facts: Facts, expected: Next) -> None:
    assert next_step(the_flow, facts) == expected, name


def test_recovery_codes_follow_an_enrolment_that_made_some() -> None:
    f = after(flow(user_id="u"), PW, done("enroll_totp", TOTP, "t1"))
    f.scratch["new_codes"] = "sealed"
    assert next_step(f, FACTS) == Next("recovery_codes")
    f.steps.append(done("recovery_codes", (), None))
    assert next_step(f, FACTS) == Next(None)


def test_flow_round_trip_and_a_stored_authorize_request_of_before() -> None:
    f = after(flow(user_id="u", require_mfa=True), PW)
    again = LoginFlow.from_json(f.id, 3, f.to_json())
    assert again.steps == f.steps and again.require_mfa and again.rev == 3
    legacy = {
        "client_id": "c",
        "redirect_uri": "http://127.0.0.1/cb",
        "response_type": "code",
        "response_mode": "query",
        "scopes": ["openid"],
        "state": None,
        "nonce": None,
        "code_challenge": None,
        "prompt": [],
        "max_age": None,
        "login_hint": None,
        "ui_locales": None,
        "page": "signup",
    }
    old = LoginFlow.from_json("id", 0, legacy)
    assert old.intent == SIGNUP and old.authorization is not None
    with pytest.raises((TypeError, ValueError, KeyError)):
        LoginFlow.from_json("id", 0, {"v": 1, "intent": "nope", "starter": {}, "created_at": 0})
