"""The sign-in flow record: what started it, who is signing in, the steps done, and the state
a step keeps between showing and submitting. Stored in ``auth_flows`` (``data`` JSON, ``rev``
for compare-and-set, ``binding`` = SHA-256 of the browser-binding cookie)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from authgear.server.authorization import AuthorizationRequest, redirect_uri_allowed
from authgear.server.config import DEVICE_CODE_GRANT
from authgear.server.state import ServerState

# A flow unfinished after this long is gone (the authorize request's lifetime).
FLOW_LIFETIME = 3600
VERSION = 1
BINDING_COOKIE = "authgear_flow"
# RFC 6265bis §4.1.3.2: under https the cookie cannot be set by a sibling host or over http.
HOST_BINDING_COOKIE = "__Host-authgear_flow"
UNSAVED = -1

# Intents: what the flow is for.
LOGIN = "login"
SIGNUP = "signup"
REAUTH = "reauth"
SETTINGS = "settings"
INTENTS = frozenset({LOGIN, SIGNUP, REAUTH, SETTINGS})
# The starter kind of a device approval (RFC 8628 §3.3, the /device page).
DEVICE = "device"


@dataclass(frozen=True, slots=True)
class StepDone:
    step: str
    amr: list[str]
    # What authenticated: "password", an authenticators row id, "recovery_code",
    # "device_token", or None (a step that proves nothing, e.g. viewing recovery codes).
    authenticator: str | None
    at: int


@dataclass(slots=True)
class LoginFlow:
    id: str
    rev: int
    intent: str
    # {"kind": "authorize", "request": {...}} | {"kind": "next", "next": "/path"}
    # | {"kind": "settings", "action": "add_totp" | "add_passkey"}
    # | {"kind": "device", "device": <device_codes id>, "client_id": ...[, "session": <id>]}
    #   (a device approval at /device; "session": approved by the browser's signed-in session)
    starter: dict[str, Any]
    created_at: int
    user_id: str | None = None
    # An id_token_hint's subject: only this user may sign in.
    expected_user: str | None = None
    # The browser session a reauthentication refreshes (if still this browser's), and the app
    # session (offline grant) the hint named.
    reauth_session: str | None = None
    reauth_grant: str | None = None
    # The app asked for a second factor (acr_values).
    require_mfa: bool = False
    steps: list[StepDone] = field(default_factory=list)
    # Step state between show and submit (a pending TOTP secret, a WebAuthn challenge, ...).
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def saved(self) -> bool:
        return self.rev != UNSAVED

    def done(self, step: str) -> bool:
        return any(s.step == step for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["id"], data["rev"]
        return {"v": VERSION, **data}

    @classmethod
    def from_json(cls, flow_id: str, rev: int, data: dict[str, Any]) -> LoginFlow:
        """Raises TypeError/KeyError/ValueError for a row this version cannot read."""
        if data.get("v") != VERSION:
            # A flow stored before sign-in had steps: its data is the authorize request.
            req = AuthorizationRequest.from_json(data)
            intent = SIGNUP if req.page == SIGNUP else LOGIN
            return cls(flow_id, rev, intent, {"kind": "authorize", "request": req.to_json()}, 0)
        fields = {k: v for k, v in data.items() if k != "v"}
        fields["steps"] = [StepDone(**s) for s in fields.get("steps", [])]
        flow = cls(id=flow_id, rev=rev, **fields)
        if flow.intent not in INTENTS:
            raise ValueError("unknown intent")
        return flow

    @property
    def device_approval(self) -> str | None:
        """The device code (its row id) this flow approves or denies, if it is a device's."""
        if self.starter.get("kind") != DEVICE:
            return None
        return str(self.starter.get("device") or "")

    @property
    def authorization(self) -> AuthorizationRequest | None:
        if self.starter.get("kind") != "authorize":
            return None
        return AuthorizationRequest.from_json(self.starter["request"])


def new_flow(intent: str, starter: dict[str, Any], now: int, **extra: Any) -> LoginFlow:
    return LoginFlow(secrets.token_urlsafe(32), UNSAVED, intent, starter, now, **extra)


def starter_valid(state: ServerState, flow: LoginFlow) -> bool:
    """The client's registration may have changed since the flow began: the code goes only to
    a redirect URI that is still registered (and passes today's rules)."""
    req = flow.authorization
    if flow.device_approval is not None:
        # The client may no longer be configured, or no longer allowed the device grant.
        device_client = state.config.client(str(flow.starter.get("client_id", "")))
        return device_client is not None and device_client.allows(DEVICE_CODE_GRANT)
    if req is None:
        return flow.starter.get("kind") in ("next", "settings")
    client = state.config.client(req.client_id)
    return client is not None and redirect_uri_allowed(client, req.redirect_uri)


# -- the browser binding ------------------------------------------------------------------------


def binding_cookie_name(state: ServerState) -> str:
    return HOST_BINDING_COOKIE if state.config.secure_cookies else BINDING_COOKIE


def browser_binding(state: ServerState, request: Request) -> str:
    """This browser's binding value (its cookie's, else a new one); the response to a request
    that starts a flow (re)sets the cookie with it, see :func:`set_binding_cookie`."""
    value: str | None = getattr(request.state, "flow_binding", None)
    if value is None:
        existing = request.cookies.get(binding_cookie_name(state))
        ok = existing is not None and 32 <= len(existing) <= 100 and existing.isascii()
        value = existing if ok and existing else secrets.token_urlsafe(32)
        request.state.flow_binding = value
    return value


def binding_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def bound_to_this_browser(state: ServerState, request: Request, stored: str | None) -> bool:
    value = request.cookies.get(binding_cookie_name(state))
    if not stored or not value or len(value) > 100:
        return False
    return hmac.compare_digest(stored, binding_hash(value))


def set_binding_cookie(state: ServerState, request: Request, response: Response) -> None:
    """(Re)set the binding cookie when this request started a flow, for the flow's lifetime.
    ``SameSite=Lax``: a flow starts with a cross-site navigation from the app
    (/oauth2/authorize), and Lax cookies are sent on it and the redirect that follows."""
    value = getattr(request.state, "flow_binding", None)
    if value is None:
        return
    response.set_cookie(
        binding_cookie_name(state),
        value,
        max_age=FLOW_LIFETIME,
        path="/",
        httponly=True,
        samesite="lax",
        secure=state.config.secure_cookies,
    )
