"""The relying party's pure steps: the authorization request (state, PKCE S256, nonce), the
authorization response (RFC 6749 §4.1.2, RFC 9207 ``iss``), the discovery document, the ID
token (OpenID Connect Core §3.1.3.7) and what a provider says about its user. No I/O:
sso/client.py fetches, this module decides.

The ID token is checked with Authlib's OpenID Connect rules (``CodeIDToken``: ``iss``,
``aud``, ``azp``, ``exp``, ``iat``, ``nonce``, ``at_hash``, ``auth_time``) on joserfc's JWS
verification, with an allow-list of asymmetric algorithms (never ``none`` or an HMAC: the
client secret is not a key). On top of them: ``iss`` is exact (Entra ID's multi-tenant template
is filled with the token's own ``tid``), an ID token issued before this sign-in began is a
replay, and a reauthentication's ``auth_time`` must be fresh. docs/decisions.md explains the
choice of Authlib.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry, extract_compact

from authgear.server.account_rules import normalize_email
from authgear.server.sso.config import (
    ENTRA_MULTI_TENANT,
    GUID_RE,
    IdentityProviderConfig,
    check_endpoint_url,
)
from authgear.server.storage.identities import Asserted

# Asymmetric JWS algorithms an ID token may use (RFC 7518, RFC 8037). HS* would make the
# client secret a signing key; "none" is no signature.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
# Clock skew allowed either way (seconds).
LEEWAY = 60
# An authorization request the provider has not answered within this long is dropped.
PENDING_LIFETIME = 600
# Entra ID's tenant of personal Microsoft accounts.
MSA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
MAX_CODE = 2048
MAX_SUBJECT = 255
MAX_NAME = 200
_ERROR_CODE_RE = re.compile(r"[a-z_]{1,64}")


class UpstreamError(Exception):
    """The provider's answer is refused (or the provider could not be reached). ``reason`` is
    a short code for the log and the tests; it never holds a token or a code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ProviderDenied(UpstreamError):
    """The provider answered the authorization request with an error (RFC 6749 §4.1.2.1),
    typically ``access_denied``: the user cancelled."""

    def __init__(self, code: str) -> None:
        super().__init__("provider_error", code)
        self.code = code


class UnknownKey(UpstreamError):
    """The ID token names a key the cached JWKS does not hold (a rotation: fetch it again)."""

    def __init__(self) -> None:
        super().__init__("unknown_kid")


# -- the authorization request ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """One authorization request in flight, kept in the sign-in flow until its answer."""

    alias: str
    # The step that sent it ("sso", or "link_sso" from the settings), which its answer ends.
    step: str
    secret: str = field(repr=False)
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)
    started_at: int
    # A reauthentication: max_age=0 was sent, so auth_time must be fresh.
    reauth: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Pending | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**data)
        except TypeError:
            return None

    @property
    def expired_at(self) -> int:
        return self.started_at + PENDING_LIFETIME


def new_pending(alias: str, step: str, now: int, *, reauth: bool = False) -> Pending:
    return Pending(
        alias=alias,
        step=step,
        secret=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        # RFC 7636 §4.1: 43-128 characters; 64 random bytes give 86.
        verifier=secrets.token_urlsafe(64),
        started_at=now,
        reauth=reauth,
    )


def state_value(flow_id: str, pending: Pending) -> str:
    """``state``: the flow's id (to find it again) and a secret only this request carries."""
    return f"{flow_id}.{pending.secret}"


def split_state(value: str | None) -> tuple[str, str] | None:
    if not value or len(value) > 300 or not value.isascii():
        return None
    flow_id, dot, secret = value.rpartition(".")
    if not dot or not flow_id or not secret:
        return None
    return flow_id, secret


def state_matches(pending: Pending, secret: str) -> bool:
    return hmac.compare_digest(pending.secret.encode(), secret.encode())


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(
    cfg: IdentityProviderConfig,
    endpoint: str,
    redirect_uri: str,
    state: str,
    pending: Pending,
    *,
    login_hint: str | None = None,
) -> str:
    params = {
        "response_type": "code",
        "client_id": cfg.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(cfg.scope_list),
        "state": state,
        "code_challenge": s256(pending.verifier),
        "code_challenge_method": "S256",
    }
    if cfg.is_oidc:
        params["nonce"] = pending.nonce
        if pending.reauth:
            # OIDC Core §3.1.2.1: ask the provider to sign the user in again; the ID token must
            # then carry a fresh auth_time.
            params["max_age"] = "0"
        if login_hint:
            params["login_hint"] = login_hint
    if cfg.type == "azureadv2":
        params["response_mode"] = "query"
    parts = urlsplit(endpoint)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


# -- the authorization response ----------------------------------------------------------------


def iss_param_check(cfg: IdentityProviderConfig, issuers: frozenset[str]) -> Callable[[str], bool]:
    """Which RFC 9207 ``iss`` values are this provider's: its issuer(s); for Entra ID's
    multi-tenant template, any ``<authority>/<tenant id>/v2.0`` (the ID token's ``tid`` and
    issuer are checked against each other later)."""
    exact = frozenset(i for i in issuers if "{tenantid}" not in i)
    if len(exact) == len(issuers):
        return exact.__contains__
    prefix = cfg.authority + "/"

    def check(value: str) -> bool:
        if value in exact:
            return True
        tenant = value.removeprefix(prefix).removesuffix("/v2.0")
        shaped = value.startswith(prefix) and value.endswith("/v2.0")
        return shaped and GUID_RE.fullmatch(tenant) is not None

    return check


def read_callback(
    params: Mapping[str, str], issuer_ok: Callable[[str], bool], *, iss_required: bool
) -> str:
    """The authorization code, after the RFC 9207 check: an ``iss`` parameter, when sent (or
    when the provider's metadata says it always sends one), must be this provider's issuer,
    or the answer came from another provider (mix-up attack, RFC 9700 §4.4)."""
    iss = params.get("iss")
    if iss is not None and not issuer_ok(iss):
        raise UpstreamError("iss_param", "the answer names another issuer")
    error = params.get("error")
    if error is not None:
        raise ProviderDenied(error if _ERROR_CODE_RE.fullmatch(error) else "invalid")
    if iss is None and iss_required:
        raise UpstreamError("iss_param", "the provider always sends iss, and this answer has none")
    code = params.get("code")
    if not code or len(code) > MAX_CODE or not code.isascii() or not code.isprintable():
        raise UpstreamError("code", "no usable authorization code")
    return code


# -- discovery -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metadata:
    """The provider's endpoints and capabilities (OpenID Connect Discovery, or GitHub's fixed
    endpoints). ``issuer`` may be Entra ID's template with ``{tenantid}``."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    iss_parameter: bool = False
    auth_methods: tuple[str, ...] = ()
    # Issuers also accepted in ID tokens (Google's "accounts.google.com" without https).
    issuer_aliases: tuple[str, ...] = ()


def _endpoint(doc: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise UpstreamError("discovery", f"{name} is missing")
    try:
        return check_endpoint_url(value)
    except ValueError as e:
        raise UpstreamError("discovery", f"{name} {e}") from None


def read_discovery(doc: Any, expected_issuer: str) -> Metadata:
    """A discovery document, checked: its ``issuer`` is exactly the one configured (OpenID
    Connect Discovery §4.3; otherwise a document from one provider could speak for another),
    and its endpoints are https URLs."""
    if not isinstance(doc, dict):
        raise UpstreamError("discovery", "not a JSON object")
    if doc.get("issuer") != expected_issuer:
        raise UpstreamError("discovery", "its issuer is not the configured one")
    offered = doc.get("id_token_signing_alg_values_supported")
    if isinstance(offered, list):
        algorithms = tuple(a for a in ALGORITHMS if a in offered)
    else:
        algorithms = ("RS256",)  # OIDC Discovery §3: RS256 MUST be supported
    if not algorithms:
        raise UpstreamError("discovery", "no supported ID token signing algorithm")
    methods = doc.get("token_endpoint_auth_methods_supported")
    return Metadata(
        issuer=expected_issuer,
        authorization_endpoint=_endpoint(doc, "authorization_endpoint") or "",
        token_endpoint=_endpoint(doc, "token_endpoint") or "",
        jwks_uri=_endpoint(doc, "jwks_uri"),
        userinfo_endpoint=_endpoint(doc, "userinfo_endpoint", required=False),
        algorithms=algorithms,
        iss_parameter=doc.get("authorization_response_iss_parameter_supported") is True,
        auth_methods=tuple(m for m in methods if isinstance(m, str))
        if isinstance(methods, list)
        else (),
    )


def client_auth_method(cfg: IdentityProviderConfig, meta: Metadata) -> str:
    """How to authenticate at the token endpoint: as configured, else Basic when offered (or
    nothing is said: RFC 6749 §2.3.1 makes it the default), else form parameters."""
    if cfg.auth_method is not None:
        return cfg.auth_method
    if not meta.auth_methods or "client_secret_basic" in meta.auth_methods:
        return "client_secret_basic"
    return "client_secret_post"


def read_keys(doc: Any) -> KeySet:
    """A JWKS as a joserfc key set: signing keys of known types only (``use`` absent or
    ``sig``); private parts are dropped, unknown key types skipped (RFC 7517 §5)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise UpstreamError("jwks", "not a JWK set")
    public_members = {
        "RSA": ("kty", "kid", "alg", "use", "n", "e"),
        "EC": ("kty", "kid", "alg", "use", "crv", "x", "y"),
        "OKP": ("kty", "kid", "alg", "use", "crv", "x"),
    }
    keys = []
    for key in doc["keys"]:
        if not isinstance(key, dict) or key.get("use", "sig") != "sig":
            continue
        members = public_members.get(str(key.get("kty")))
        if members is None:
            continue
        keys.append({k: key[k] for k in members if k in key})
    try:
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError) as e:
        raise UpstreamError("jwks", type(e).__name__) from None


# -- the token response ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str = field(repr=False)
    id_token: str | None = field(repr=False)


def read_token_response(status: int, body: Any, *, need_id_token: bool) -> TokenSet:
    if not isinstance(body, dict):
        raise UpstreamError("token_exchange", f"HTTP {status}, not JSON")
    if status != 200 or "error" in body:
        error = body.get("error")
        code = error if isinstance(error, str) and _ERROR_CODE_RE.fullmatch(error) else "?"
        raise UpstreamError("token_exchange", f"HTTP {status}, error {code}")
    access_token = body.get("access_token")
    token_type = body.get("token_type")
    if not isinstance(access_token, str) or not access_token:
        raise UpstreamError("token_exchange", "no access_token")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise UpstreamError("token_exchange", "token_type is not Bearer")
    id_token = body.get("id_token")
    if need_id_token and (not isinstance(id_token, str) or not id_token):
        raise UpstreamError("token_exchange", "no id_token")
    return TokenSet(access_token, id_token if isinstance(id_token, str) else None)


# -- the ID token -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expected:
    """What this ID token must say."""

    issuers: frozenset[str]
    client_id: str
    nonce: str = field(repr=False)
    started_at: int
    now: int
    access_token: str | None = field(default=None, repr=False)
    reauth: bool = False
    # Entra ID multi-tenant: the configured tenant and the tenants allowed (empty: any).
    entra_tenant: str | None = None
    allowed_tenants: tuple[str, ...] = ()


def token_kid(id_token: str) -> str | None:
    try:
        header = extract_compact(id_token.encode("ascii")).protected
    except (JoseError, ValueError, UnicodeError) as e:
        raise UpstreamError("id_token", f"unreadable ({type(e).__name__})") from None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def verify_id_token(
    id_token: str, keys: KeySet, algorithms: tuple[str, ...], expected: Expected
) -> dict[str, Any]:
    """The ID token's claims once its signature, issuer, audience, authorized party, times and
    nonce are right; :class:`UnknownKey` when its ``kid`` is not in ``keys``."""
    allowed = [a for a in algorithms if a in ALGORITHMS]
    registry = JWSRegistry(algorithms=allowed, strict_check_header=False)
    try:
        token = jwt.decode(id_token, keys, algorithms=allowed, registry=registry)
    except InvalidKeyIdError:
        raise UnknownKey() from None
    except JoseError as e:
        raise UpstreamError("signature", type(e).__name__) from None
    except (ValueError, TypeError, UnicodeError) as e:
        raise UpstreamError("id_token", type(e).__name__) from None
    claims = token.claims
    issuers = _issuers_for(claims, expected)
    options = {
        "iss": {"essential": True, "values": sorted(issuers)},
        "aud": {"essential": True, "value": expected.client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    params: dict[str, Any] = {"nonce": expected.nonce, "client_id": expected.client_id}
    if expected.access_token:
        params["access_token"] = expected.access_token
    try:
        CodeIDToken(claims, token.header, options, params).validate(now=expected.now, leeway=LEEWAY)
    except ExpiredTokenError:
        raise UpstreamError("exp", "the ID token has expired") from None
    except ClaimError as e:
        raise UpstreamError(_claim_of(e), e.description or e.error) from None
    except JoseError as e:
        raise UpstreamError("id_token", type(e).__name__) from None
    _check_times(claims, expected)
    return dict(claims)


def _claim_of(e: ClaimError) -> str:
    """Which claim an Authlib/joserfc claim error is about ("iss", "aud", "nonce", ...)."""
    claim = e.claim.split(",")[0] if isinstance(e.claim, str) else ""
    return claim if re.fullmatch(r"[a-z_]{1,20}", claim) else "id_token"


def _issuers_for(claims: Mapping[str, Any], expected: Expected) -> frozenset[str]:
    """The issuers this token may name. Entra ID's multi-tenant metadata names the template
    ``.../{tenantid}/v2.0``: the token's ``tid`` fills it (and must be an allowed tenant)."""
    templates = [i for i in expected.issuers if "{tenantid}" in i]
    if not templates:
        return expected.issuers
    tid = claims.get("tid")
    if not isinstance(tid, str) or not GUID_RE.fullmatch(tid):
        raise UpstreamError("tid", "the ID token names no tenant")
    tenant = expected.entra_tenant
    if tenant == "consumers" and tid != MSA_TENANT:
        raise UpstreamError("tid", "not a personal Microsoft account")
    if tenant == "organizations" and tid == MSA_TENANT:
        raise UpstreamError("tid", "a personal Microsoft account")
    if expected.allowed_tenants and tid not in expected.allowed_tenants:
        raise UpstreamError("tid", "a tenant that is not allowed")
    filled = {i.replace("{tenantid}", tid) for i in templates}
    return frozenset(filled | {i for i in expected.issuers if "{tenantid}" not in i})


def _check_times(claims: Mapping[str, Any], expected: Expected) -> None:
    """Beyond Authlib: an ID token issued before this sign-in began was not issued for it (the
    nonce already says so; this also holds for a provider that reuses nonces), and a
    reauthentication's ``auth_time`` is after the request (the user signed in again)."""
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or iat < expected.started_at - LEEWAY:
        raise UpstreamError("iat", "issued before this sign-in began")
    if expected.reauth:
        auth_time = claims.get("auth_time")
        if not isinstance(auth_time, int | float) or auth_time < expected.started_at - LEEWAY:
            raise UpstreamError("auth_time", "the provider did not sign the user in again")


def expected_issuers(cfg: IdentityProviderConfig, meta: Metadata) -> frozenset[str]:
    return frozenset({meta.issuer, *meta.issuer_aliases})


def entra_tenant(cfg: IdentityProviderConfig) -> str | None:
    return cfg.tenant if cfg.type == "azureadv2" and cfg.tenant in ENTRA_MULTI_TENANT else None


# -- what the provider says about its user -----------------------------------------------------


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] if value and value.isprintable() else None


def _truthy(value: Any) -> bool:
    # Some providers send the string "true" (Amazon Cognito); nothing else counts.
    return value is True or (isinstance(value, str) and value.lower() == "true")


def oidc_assertion(
    cfg: IdentityProviderConfig, claims: Mapping[str, Any], userinfo: Mapping[str, Any] | None
) -> Asserted:
    """The identity from the ID token's claims, completed by userinfo (whose ``sub`` must be the
    ID token's, OIDC Core §5.3.2). ``email_verified`` only from the provider's own word (or
    ``email_assume_verified``)."""
    mapping = cfg.claim_mapping
    subject = claims.get(mapping.subject)
    if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT:
        raise UpstreamError("sub", "no usable subject")
    merged: dict[str, Any] = {}
    if userinfo is not None:
        if userinfo.get("sub") != claims.get("sub"):
            raise UpstreamError("userinfo", "its sub is not the ID token's")
        merged.update(userinfo)
    merged.update({k: v for k, v in claims.items() if v is not None})
    return _asserted(cfg, subject, merged, mapping.email, mapping.email_verified, mapping.name)


def needs_userinfo(cfg: IdentityProviderConfig, claims: Mapping[str, Any]) -> bool:
    return not isinstance(claims.get(cfg.claim_mapping.email), str)


def _asserted(
    cfg: IdentityProviderConfig,
    subject: str,
    merged: Mapping[str, Any],
    email_key: str,
    verified_key: str | None,
    name_key: str,
) -> Asserted:
    raw_email = _text(merged.get(email_key), 320)
    email = normalize_email(raw_email) if raw_email else None
    said_verified = verified_key is not None and _truthy(merged.get(verified_key))
    kept: dict[str, Any] = {}
    name = _text(merged.get(name_key), MAX_NAME)
    if name:
        kept["name"] = name
    for extra in ("preferred_username", "tid", "login"):
        value = _text(merged.get(extra), MAX_NAME)
        if value:
            kept[extra] = value
    return Asserted(
        provider=cfg.alias,
        subject=subject,
        email=email,
        email_verified=email is not None and (said_verified or cfg.email_assume_verified),
        claims=kept,
    )


def github_assertion(cfg: IdentityProviderConfig, user: Any, emails: Any) -> Asserted:
    """GitHub's ``/user`` (the numeric ``id`` is the subject: a login can be renamed and then
    taken by someone else) and ``/user/emails`` (only the primary address, verified or not as
    GitHub says)."""
    if not isinstance(user, dict):
        raise UpstreamError("github_user", "not a JSON object")
    user_id = user.get("id")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or user_id <= 0:
        raise UpstreamError("github_user", "no numeric id")
    merged: dict[str, Any] = {
        "name": user.get("name") or user.get("login"),
        "login": user.get("login"),
    }
    if isinstance(emails, list):
        for entry in emails:
            if isinstance(entry, dict) and entry.get("primary") is True:
                merged["email"] = entry.get("email")
                merged["email_verified"] = entry.get("verified") is True
                break
    return _asserted(cfg, str(user_id), merged, "email", "email_verified", "name")
