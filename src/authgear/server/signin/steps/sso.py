"""Steps ``sso`` (sign in with an upstream identity provider: "Continue with Google") and
``link_sso`` (the settings action that links one), and the automatic ``link_identity``
(login_and_link: the account the provider's email belongs to, once the user signed in to it).

``submit`` (a button's POST) stores a pending authorization request in the flow (state, nonce,
PKCE verifier; sso/rp.py) and sends the browser to the provider. The provider's answer arrives
at ``/sso/oauth2/callback/<alias>`` (sso/routes.py), which takes the pending request out of the
flow (once), has sso/client.py redeem and verify it, and calls :func:`redeem` here, which
decides who the user is (accounts spec §8.2 and docs/server.md "Sign in with other identity
providers"):

- the provider account is linked to a user: that user (a reauthentication: only the user
  signing in; an id_token_hint or a pending link: only the expected user);
- otherwise a new user with the provider's email, unless an account has that email: then
  ``account_linking: error`` (Authgear's default) refuses, and ``login_and_link`` (only for an
  email the provider says is verified) has the user sign in to that account in this flow, and
  links afterwards. Nothing is ever linked on an email alone.

An upstream sign-in adds no ``amr`` (Authgear: an OAuth identity has none) and no second factor
follows, unless the app asked for one (``acr_values``); its step records the identity as the
authenticator, so an upstream sign-in plus TOTP counts as two (``mfa``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.responses import RedirectResponse, Response

from authgear.server.http import client_ip
from authgear.server.sessions import now_s
from authgear.server.signin.flow import set_binding_cookie
from authgear.server.signin.policy import PENDING_LINK
from authgear.server.signin.steps.base import Again, Done, Step, StepContext
from authgear.server.sso import rp
from authgear.server.sso.config import IdentityProviderConfig
from authgear.server.state import ServerState
from authgear.server.storage.admin import Actor
from authgear.server.storage.identities import Asserted, EmailTaken, Identity, IdentityTaken
from authgear.server.storage.models import User

log = logging.getLogger("authgear.sso")

PENDING = "sso_pending"
LINK = PENDING_LINK
NOTICE = "notice"
CALLBACK_PATH = "/sso/oauth2/callback/"
UNAVAILABLE = "{label} cannot be reached right now. Try again later, or use another way to sign in."
UNVERIFIABLE = (
    "Signing in with {label} did not work: its answer could not be verified. "
    "Try again, or use another way to sign in."
)
CANCELLED = "You did not sign in with {label}. Choose a way to sign in."
DENIED = "{label} did not sign you in ({code}). Try again, or use another way to sign in."
NO_EMAIL = (
    "{label} did not share an email address with us, and an account needs one. "
    "Allow access to your email address at {label}, or use another way to sign in."
)
CONFLICT = (
    "We could not create an account with the email address {label} gave us. If you already "
    "have an account, sign in to it, then link {label} from your security settings."
)
NOT_LINKED = "This {label} account is not linked to the account you are signing in to."
TAKEN = "This {label} account is already linked to another account."
REFUSED = "{label} could not sign you in. Use another way to sign in."
TOO_MANY = "Too many sign-ups from your network. Try again later."
LINK_NOTICE = (
    "There is already an account with {email}. Sign in to it to link your {label} account; "
    "after that you can also sign in with {label}."
)


def redirect_uri(state: ServerState, alias: str) -> str:
    """The callback registered at the provider (Authgear's path)."""
    return state.url(CALLBACK_PATH + alias)


def identity_ref(identity: Identity) -> str:
    """A flow step's authenticator id for an upstream sign-in (counts towards ``mfa``)."""
    return f"identity:{identity.id}"


def providers_for(ctx: StepContext, step: str) -> list[IdentityProviderConfig]:
    """The buttons this step may show: every provider to identify someone; a known user's own
    (linked) providers to confirm it is them; the settings action's chosen one to link."""
    configured = ctx.state.config.identity_providers
    if step == "link_sso":
        alias = ctx.flow.starter.get("alias")
        return [p for p in configured if p.alias == alias]
    if ctx.flow.user_id is not None:
        linked = set(ctx.facts.identity_providers)
        return [p for p in configured if p.alias in linked]
    return list(configured)


def buttons(ctx: StepContext) -> list[dict[str, str]]:
    return [{"alias": p.alias, "label": p.label} for p in providers_for(ctx, "sso")]


class SsoStep(Step):
    name = "sso"
    template = "sso.html"
    # Its button on /login?next=... posts before any flow is stored: the POST starts one.
    starts_flow = True

    async def show(self, ctx: StepContext) -> dict[str, Any]:
        values: dict[str, Any] = {
            "providers": [
                {"alias": p.alias, "label": p.label} for p in providers_for(ctx, self.name)
            ],
            "linking": self.name == "link_sso",
        }
        return values

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Again | Response:
        """A provider's button: store a pending request, send the browser to the provider."""
        from authgear.server.signin import engine  # engine imports the steps

        state = ctx.state
        alias = form.get("provider", "")
        cfg = next((p for p in providers_for(ctx, self.name) if p.alias == alias), None)
        if cfg is None:
            return Again("Choose one of the ways to sign in below.", 400)
        try:
            meta = await state.upstream.metadata(cfg)
        except rp.UpstreamError as e:
            log.warning("sso %s: metadata refused: %s", cfg.alias, e.reason)
            return Again(UNAVAILABLE.format(label=cfg.label), 502)
        reauth = self.name == "sso" and ctx.flow.user_id is not None
        pending = rp.new_pending(cfg.alias, self.name, now_s(), reauth=reauth)
        ctx.flow.scratch[PENDING] = pending.to_json()
        failed = await engine.save_flow(state, ctx.request, ctx.flow)
        if failed is not None:
            return failed
        hint = ctx.user.email if ctx.user is not None and reauth else None
        url = rp.authorization_url(
            cfg,
            meta.authorization_endpoint,
            redirect_uri(state, cfg.alias),
            rp.state_value(ctx.flow.id, pending),
            pending,
            login_hint=hint,
        )
        response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
        set_binding_cookie(state, ctx.request, response)
        return response

    async def redeem(
        self,
        ctx: StepContext,
        cfg: IdentityProviderConfig,
        pending: rp.Pending,
        params: dict[str, str],
    ) -> Done | Again | Response:
        """The provider's answer (already taken out of the flow): verify it, then decide."""
        state = ctx.state
        try:
            asserted = await state.upstream.identify(
                cfg, params, pending, redirect_uri(state, cfg.alias), int(time.time())
            )
        except rp.ProviderDenied as e:
            log.info("sso %s: the provider answered %s", cfg.alias, e.code)
            if e.code == "access_denied":
                return Again(CANCELLED.format(label=cfg.label), 400)
            return Again(DENIED.format(label=cfg.label, code=e.code), 400)
        except rp.UpstreamError as e:
            # The reason names the failed check (iss, aud, nonce, signature...), never a token.
            log.warning("sso %s: answer refused: %s", cfg.alias, e)
            message = UNAVAILABLE if e.reason == "unreachable" else UNVERIFIABLE
            return Again(message.format(label=cfg.label), 502 if e.reason == "unreachable" else 400)
        if self.name == "link_sso":
            return await _link_from_settings(ctx, cfg, asserted)
        return await _sign_in(ctx, cfg, asserted)


class LinkSsoStep(SsoStep):
    name = "link_sso"
    template = "sso.html"
    starts_flow = False


class LinkIdentityStep(Step):
    """login_and_link: once the user signed in to the account the email belongs to (and passed
    its second factor), the provider account the flow started with is linked to it."""

    name = "link_identity"
    auto = True

    async def submit(self, ctx: StepContext, form: dict[str, str]) -> Done | Again:
        data = ctx.flow.scratch.get(LINK)
        user = ctx.user
        if not isinstance(data, dict) or user is None or user.id != ctx.flow.expected_user:
            return Again("Nothing to link.", 400)
        try:
            asserted = Asserted(**data)
            identity = await ctx.state.identities.link(user.id, asserted, now_s())
        except (TypeError, IdentityTaken):
            return Again("That account was linked elsewhere meanwhile.", 409)
        await audit_link(ctx, user, identity)
        return Done()


async def audit_link(ctx: StepContext, user: User, identity: Identity) -> None:
    """The user linked a provider account to theirs (actor "self")."""
    ip = client_ip(ctx.request, ctx.state.config.trusted_proxies)
    await ctx.state.admin.audit(
        Actor("self", user.id, user.email, ip),
        "identity.link",
        now_s(),
        target_type="user",
        target_id=user.id,
        details={"identity_id": identity.id, "provider": identity.provider},
    )


async def _sign_in(
    ctx: StepContext, cfg: IdentityProviderConfig, asserted: Asserted
) -> Done | Again | Response:
    state, flow = ctx.state, ctx.flow
    label = cfg.label
    identity = await state.identities.find(asserted.provider, asserted.subject)
    expected = flow.user_id or flow.expected_user
    if identity is not None:
        if expected is not None and identity.user_id != expected:
            return Again(NOT_LINKED.format(label=label), 403)
        user = await state.repo.get_user(identity.user_id)
        if user is None or user.disabled:
            return Again(REFUSED.format(label=label), 403)
        await state.identities.record_use(identity.id, asserted, now_s())
        return Done((), identity_ref(identity), user if flow.user_id is None else None)
    if expected is not None:
        return Again(NOT_LINKED.format(label=label), 403)
    if asserted.email is None:
        return Again(NO_EMAIL.format(label=label), 400)
    existing = await state.repo.get_user_by_email(asserted.email)
    if existing is not None:
        return await _conflict(ctx, cfg, asserted, existing)
    ip = client_ip(ctx.request, state.config.trusted_proxies)
    if not await state.limiter.hit(
        "signup", ip, state.config.rate_limits.signup_per_ip_per_hour, 3600
    ):
        return Again(TOO_MANY, 429)
    try:
        user, identity = await state.identities.create_user(asserted, asserted.email, now_s())
    except IdentityTaken as e:
        # The same provider account signed up in a concurrent request: it is that user's.
        found = await state.repo.get_user(e.identity.user_id)
        if found is None or found.disabled:
            return Again(REFUSED.format(label=label), 403)
        return Done((), identity_ref(e.identity), found)
    except EmailTaken:
        taken = await state.repo.get_user_by_email(asserted.email)
        if taken is None:
            return Again(REFUSED.format(label=label), 409)
        return await _conflict(ctx, cfg, asserted, taken)
    log.info("sso %s: new user %s", cfg.alias, user.id)
    return Done((), identity_ref(identity), user)


async def _conflict(
    ctx: StepContext, cfg: IdentityProviderConfig, asserted: Asserted, existing: User
) -> Again | Response:
    """The provider's email belongs to an account. Only ``login_and_link`` with a verified
    email goes on, to that account's own sign-in; nothing is linked before it succeeds."""
    from authgear.server.signin import engine

    if cfg.account_linking != "login_and_link" or not asserted.email_verified or existing.disabled:
        return Again(CONFLICT.format(label=cfg.label), 409)
    flow = ctx.flow
    flow.expected_user = existing.id
    flow.scratch[LINK] = {
        "provider": asserted.provider,
        "subject": asserted.subject,
        "email": asserted.email,
        "email_verified": asserted.email_verified,
        "claims": asserted.claims,
    }
    flow.scratch[NOTICE] = LINK_NOTICE.format(email=existing.email, label=cfg.label)
    failed = await engine.save_flow(ctx.state, ctx.request, flow)
    if failed is not None:
        return failed
    return RedirectResponse(engine.step_url("login", flow), status_code=303)


async def _link_from_settings(
    ctx: StepContext, cfg: IdentityProviderConfig, asserted: Asserted
) -> Done | Again:
    user = ctx.user
    if user is None:
        return Again(REFUSED.format(label=cfg.label), 400)
    try:
        identity = await ctx.state.identities.link(user.id, asserted, now_s())
    except IdentityTaken:
        return Again(TAKEN.format(label=cfg.label), 409)
    await audit_link(ctx, user, identity)
    return Done()


SSO = SsoStep()
LINK_SSO = LinkSsoStep()
LINK_IDENTITY = LinkIdentityStep()
