"""The relying party's I/O: discovery documents and JWKS (cached per process), the token
exchange, userinfo and GitHub's user API, over one httpx2 client. Every answer is read with a
size cap and a timeout, never follows a redirect, and is judged by sso/rp.py.

JWKS cache: keys are kept until the provider rotates; an ID token naming an unknown ``kid``
fetches the set again, at most once per :data:`REFETCH_COOLDOWN` per provider (single-flight),
so forged ``kid`` values cannot make us hammer the provider; a failed fetch keeps the old keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx2
from joserfc.jwk import KeySet

from authgear.server.sso import rp
from authgear.server.sso.config import GUID_RE, IdentityProviderConfig
from authgear.server.storage.identities import Asserted

TIMEOUT = httpx2.Timeout(10.0, connect=5.0)
MAX_BODY = 1 << 20
# Discovery documents are fetched again after this long (keys: only on an unknown kid).
METADATA_TTL = 24 * 3600
REFETCH_COOLDOWN = 60
USER_AGENT = "authgear-python (+https://github.com/authgear)"
GOOGLE_ISSUER = "https://accounts.google.com"


def discovery_url(cfg: IdentityProviderConfig) -> str:
    if cfg.type == "google":
        return GOOGLE_ISSUER + "/.well-known/openid-configuration"
    if cfg.type == "azureadv2":
        return f"{cfg.authority}/{cfg.tenant}/v2.0/.well-known/openid-configuration"
    issuer = cfg.issuer or ""
    return cfg.discovery_url or issuer.rstrip("/") + "/.well-known/openid-configuration"


def configured_issuer(cfg: IdentityProviderConfig, doc_issuer: Any) -> str:
    """The issuer the discovery document must name: configured (oidc), Google's, or for Entra
    ID the tenant's (a tenant given by domain name is named by its id in the document, which
    is then taken as long as it is the authority's ``/<id>/v2.0`` or the multi-tenant
    template)."""
    if cfg.type == "google":
        return GOOGLE_ISSUER
    if cfg.type == "azureadv2":
        prefix = cfg.authority + "/"
        if isinstance(doc_issuer, str) and doc_issuer.startswith(prefix):
            tenant = doc_issuer[len(prefix) :].removesuffix("/v2.0")
            if doc_issuer.endswith("/v2.0") and (
                tenant == "{tenantid}" or GUID_RE.fullmatch(tenant)
            ):
                return doc_issuer
        return f"{cfg.authority}/{cfg.tenant}/v2.0"
    return cfg.issuer or ""


def github_metadata(cfg: IdentityProviderConfig) -> rp.Metadata:
    return rp.Metadata(
        issuer=cfg.github_url,
        authorization_endpoint=cfg.github_url + "/login/oauth/authorize",
        token_endpoint=cfg.github_url + "/login/oauth/access_token",
    )


@dataclass
class _Cache:
    meta: rp.Metadata | None = None
    meta_at: float = 0.0
    keys: KeySet | None = field(default=None, repr=False)
    keys_at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class UpstreamClients:
    """One per server process (ServerState.upstream)."""

    def __init__(self, providers: tuple[IdentityProviderConfig, ...]) -> None:
        self._providers = {p.alias: p for p in providers}
        self._caches: dict[str, _Cache] = {}
        self._http: httpx2.AsyncClient | None = None
        # How many times each provider's JWKS was fetched (for the tests' /metrics-free check).
        self.jwks_fetches: dict[str, int] = {}

    @property
    def http(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = httpx2.AsyncClient(
                timeout=TIMEOUT, follow_redirects=False, headers={"User-Agent": USER_AGENT}
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    def _cache(self, alias: str) -> _Cache:
        return self._caches.setdefault(alias, _Cache())

    # -- fetching ------------------------------------------------------------------------------

    async def _json(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """Status and JSON body (None when the body is not JSON); at most MAX_BODY bytes."""
        try:
            async with self.http.stream(method, url, **kwargs) as r:
                chunks: list[bytes] = []
                size = 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise rp.UpstreamError("unreachable", f"{url}: answer too large")
                    chunks.append(chunk)
                status = r.status_code
        except httpx2.HTTPError as e:
            raise rp.UpstreamError("unreachable", f"{url}: {type(e).__name__}") from None
        try:
            return status, json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            return status, None

    async def metadata(self, cfg: IdentityProviderConfig) -> rp.Metadata:
        if cfg.type == "github":
            return github_metadata(cfg)
        cache = self._cache(cfg.alias)
        if cache.meta is not None and time.monotonic() - cache.meta_at < METADATA_TTL:
            return cache.meta
        async with cache.lock:
            if cache.meta is not None and time.monotonic() - cache.meta_at < METADATA_TTL:
                return cache.meta
            try:
                status, doc = await self._json("GET", discovery_url(cfg))
                if status != 200:
                    raise rp.UpstreamError("discovery", f"HTTP {status}")
                issuer = configured_issuer(cfg, doc.get("issuer") if isinstance(doc, dict) else 0)
                meta = rp.read_discovery(doc, issuer)
            except rp.UpstreamError:
                if cache.meta is not None:
                    return cache.meta  # a stale document beats none while the provider is away
                raise
            if cfg.type == "google":
                # Google's ID tokens may name their issuer without the scheme.
                meta = dataclasses.replace(meta, issuer_aliases=("accounts.google.com",))
            cache.meta, cache.meta_at = meta, time.monotonic()
            return meta

    async def keys(
        self, cfg: IdentityProviderConfig, meta: rp.Metadata, *, refresh: bool = False
    ) -> KeySet:
        cache = self._cache(cfg.alias)
        if cache.keys is not None and not refresh:
            return cache.keys
        async with cache.lock:
            fresh = time.monotonic() - cache.keys_at < REFETCH_COOLDOWN
            if cache.keys is not None and (not refresh or fresh):
                return cache.keys
            try:
                if meta.jwks_uri is None:
                    raise rp.UpstreamError("jwks", "no jwks_uri")
                self.jwks_fetches[cfg.alias] = self.jwks_fetches.get(cfg.alias, 0) + 1
                cache.keys_at = time.monotonic()
                status, doc = await self._json("GET", meta.jwks_uri)
                if status != 200:
                    raise rp.UpstreamError("jwks", f"HTTP {status}")
                cache.keys = rp.read_keys(doc)
            except rp.UpstreamError:
                if cache.keys is not None:
                    return cache.keys
                raise
            return cache.keys

    async def exchange(
        self,
        cfg: IdentityProviderConfig,
        meta: rp.Metadata,
        code: str,
        redirect_uri: str,
        verifier: str,
    ) -> rp.TokenSet:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        auth: httpx2.BasicAuth | None = None
        method = rp.client_auth_method(cfg, meta)
        secret = cfg.client_secret.get_secret_value() if cfg.client_secret else ""
        if method == "client_secret_basic":
            # RFC 6749 §2.3.1: both parts form-urlencoded before Basic encoding.
            auth = httpx2.BasicAuth(quote(cfg.client_id, safe=""), quote(secret, safe=""))
        else:
            form["client_id"] = cfg.client_id
            if method == "client_secret_post":
                form["client_secret"] = secret
        status, body = await self._json(
            "POST",
            meta.token_endpoint,
            data=form,
            auth=auth,
            headers={"Accept": "application/json"},
        )
        return rp.read_token_response(status, body, need_id_token=cfg.is_oidc)

    async def userinfo(self, meta: rp.Metadata, access_token: str) -> Mapping[str, Any] | None:
        if meta.userinfo_endpoint is None:
            return None
        status, body = await self._json(
            "GET",
            meta.userinfo_endpoint,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        if status != 200 or not isinstance(body, dict):
            raise rp.UpstreamError("userinfo", f"HTTP {status}")
        return body

    async def github_user(self, cfg: IdentityProviderConfig, access_token: str) -> Asserted:
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        status, user = await self._json("GET", cfg.api_url + "/user", headers=headers)
        if status != 200:
            raise rp.UpstreamError("github_user", f"HTTP {status}")
        status, emails = await self._json("GET", cfg.api_url + "/user/emails", headers=headers)
        if status != 200:
            # Without user:email consent GitHub answers 404: then there is no address.
            emails = None
        return rp.github_assertion(cfg, user, emails)

    # -- the whole answer -------------------------------------------------------------------------

    async def identify(
        self,
        cfg: IdentityProviderConfig,
        params: Mapping[str, str],
        pending: rp.Pending,
        redirect_uri: str,
        now: int,
    ) -> Asserted:
        """The provider's authorization response, judged and redeemed: who the user is.
        Raises :class:`rp.UpstreamError` for anything refused."""
        meta = await self.metadata(cfg)
        issuers = rp.expected_issuers(cfg, meta)
        code = rp.read_callback(
            params, rp.iss_param_check(cfg, issuers), iss_required=meta.iss_parameter
        )
        tokens = await self.exchange(cfg, meta, code, redirect_uri, pending.verifier)
        if not cfg.is_oidc:
            return await self.github_user(cfg, tokens.access_token)
        assert tokens.id_token is not None
        expected = rp.Expected(
            issuers=issuers,
            client_id=cfg.client_id,
            nonce=pending.nonce,
            started_at=pending.started_at,
            now=now,
            access_token=tokens.access_token,
            reauth=pending.reauth,
            entra_tenant=rp.entra_tenant(cfg),
            allowed_tenants=cfg.allowed_tenants,
        )
        claims = await self._verified(cfg, meta, tokens.id_token, expected)
        info = None
        if rp.needs_userinfo(cfg, claims):
            info = await self.userinfo(meta, tokens.access_token)
        return rp.oidc_assertion(cfg, claims, info)

    async def _verified(
        self, cfg: IdentityProviderConfig, meta: rp.Metadata, id_token: str, expected: rp.Expected
    ) -> dict[str, Any]:
        keys = await self.keys(cfg, meta)
        try:
            return rp.verify_id_token(id_token, keys, meta.algorithms, expected)
        except rp.UnknownKey:
            # The provider may have rotated its keys: fetch them again (cooled down).
            keys = await self.keys(cfg, meta, refresh=True)
            try:
                return rp.verify_id_token(id_token, keys, meta.algorithms, expected)
            except rp.UnknownKey:
                raise rp.UpstreamError("signature", "no key with the token's kid") from None
