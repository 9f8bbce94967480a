"""Which step comes next: a pure function of the flow and what is known about the user and the
configuration. The engine shows only a step this allows; adding a step means adding its rule.

Rules (Authgear's, accounts spec §1.7, §2.2, §3, with our extensions marked):
- Nobody identified yet: the entry page (``login`` or ``signup``), or a passkey.
- Reauthentication (intent ``reauth``, or a settings action on a stale session): the user is
  known; ``reauth`` (their password) or a passkey.
- A passkey signs in alone: no second factor after it.
- Second factor (mode ``if_exists``): required when the user has a TOTP authenticator;
  ``totp`` or, if they have unused codes, ``recovery_code``; a trusted device (cookie) passes it
  on a plain sign-in, not on a reauthentication or an acr demand. Mode ``required``, or an app's
  ``acr_values`` demanding MFA (ours; Authgear ignores acr_values): a user without one enrols
  (``enroll_totp``) and then sees their recovery codes (``recovery_codes``). Mode ``disabled``:
  never.
- Email verification (``verification: required``, issue 12): once the primary factor is done,
  an unverified address is verified (``verify_email``) before anything else, on sign-up and on
  sign-in alike.
- A device approval (RFC 8628, starter ``device``; ours) ends with ``approve_device`` once the
  user is signed in: by this flow's steps, or by the browser's session when the code was entered
  while signed in (then nothing is asked again).
- Settings actions run after any reauthentication: ``enroll_totp`` (+ ``recovery_codes``),
  ``create_passkey`` or ``link_sso``.
- Upstream identity providers (issue 15): ``sso`` identifies anyone (when providers are
  configured), and confirms a known user who has linked one. No second factor follows it
  (Authgear), unless the app demands one (``acr_values``): then the user's TOTP, or enrolment.
  A login_and_link pending from ``sso`` links (``link_identity``, automatic) once the user has
  signed in to the account, second factor included.
"""

from __future__ import annotations

from dataclasses import dataclass

from authgear.server.signin.flow import LOGIN, REAUTH, SETTINGS, SIGNUP, LoginFlow

# Steps that authenticate the user first (identify + primary factor).
PRIMARY = frozenset({"login", "signup", "reauth", "passkey", "sso"})
# Steps that pass the second factor.
SECONDARY = frozenset({"totp", "recovery_code", "device_token", "enroll_totp"})
SETTINGS_ACTIONS = {
    "add_totp": "enroll_totp",
    "add_passkey": "create_passkey",
    "link_identity": "link_sso",
}
# flow.scratch key of a provider account waiting to be linked (login_and_link).
PENDING_LINK = "sso_link"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the policy reads besides the flow (gathered by the engine)."""

    mode: str  # disabled | if_exists | required
    passwords: bool
    passkeys: bool  # enabled and possible on this origin
    totp: bool  # TOTP is a configured second factor and the mode is not disabled
    recovery_codes_enabled: bool
    device_tokens_enabled: bool
    has_password: bool = False
    has_totp: bool = False
    has_recovery_codes: bool = False
    has_passkeys: bool = False
    device_trusted: bool = False
    # verification: required, and the identified user's address is not verified yet.
    must_verify_email: bool = False
    # Upstream identity providers are configured; the identified user's linked ones (aliases
    # of configured providers).
    sso: bool = False
    identity_providers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Next:
    """The step to show now and the ones the user may take instead; ``step`` None: done."""

    step: str | None
    alternatives: tuple[str, ...] = ()

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(([self.step] if self.step else []) + list(self.alternatives))


DONE = Next(None)


def next_step(flow: LoginFlow, facts: Facts) -> Next:
    if flow.user_id is None:
        return _identify(flow, facts)
    by_session = flow.device_approval is not None and bool(flow.starter.get("session"))
    if (flow.intent != SETTINGS or flow.reauth_session is not None) and not by_session:
        auth = _authenticate(flow, facts)
        if auth is not DONE:
            return auth
    if flow.scratch.get(PENDING_LINK) and not flow.done("link_identity"):
        return Next("link_identity")
    codes_pending = flow.done("enroll_totp") and not flow.done("recovery_codes")
    if codes_pending and flow.scratch.get("new_codes"):
        return Next("recovery_codes")
    if flow.intent == SETTINGS:
        step = SETTINGS_ACTIONS.get(str(flow.starter.get("action")))
        if step is not None and not flow.done(step):
            return Next(step)
    if flow.device_approval is not None and not flow.done("approve_device"):
        return Next("approve_device")
    return DONE


def _identify(flow: LoginFlow, facts: Facts) -> Next:
    passkey = ("passkey",) if facts.passkeys else ()
    sso = ("sso",) if facts.sso else ()
    # A sign-in an id_token_hint asked for is that user's: no new account instead.
    signup = ("signup",) if facts.passwords and flow.expected_user is None else ()
    if flow.intent == SIGNUP and signup:
        return Next("signup", ("login", *passkey, *sso))
    if flow.intent in (LOGIN, SIGNUP):
        return Next("login", (*signup, *passkey, *sso))
    return DONE if flow.intent == SETTINGS else Next("login", (*passkey, *sso))


def _authenticate(flow: LoginFlow, facts: Facts) -> Next:
    done = {s.step for s in flow.steps}
    if not done & PRIMARY:
        passkey = ("passkey",) if facts.passkeys and facts.has_passkeys else ()
        others = (*passkey, *(("sso",) if facts.identity_providers else ()))
        if facts.has_password or not others:
            return Next("reauth", others)
        return Next(others[0], others[1:])
    if facts.must_verify_email and "verify_email" not in done:
        return Next("verify_email")
    if "passkey" in done or done & SECONDARY or not facts.totp:
        return DONE
    if "sso" in done and not flow.require_mfa:
        # Authgear: no second factor after an upstream sign-in.
        return DONE
    needed = facts.has_totp or facts.mode == "required" or flow.require_mfa
    if not needed:
        return DONE
    if not facts.has_totp:
        return Next("enroll_totp")
    fresh_proof = flow.intent == REAUTH or flow.reauth_session is not None or flow.require_mfa
    if facts.device_trusted and facts.device_tokens_enabled and not fresh_proof:
        return Next("device_token")
    codes = ("recovery_code",) if facts.recovery_codes_enabled and facts.has_recovery_codes else ()
    return Next("totp", codes)
