"""Discovery (OpenID Connect Discovery 1.0 and RFC 8414: both well-known paths) and the JWKS
(RFC 7517)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authgear.server.authorization import MFA_ACR
from authgear.server.config import DEVICE_CODE_GRANT
from authgear.server.endpoints.authorize import SUPPORTED_SCOPES
from authgear.server.keys import ALGORITHM
from authgear.server.state import ServerState, get_state
from authgear.server.tokens import (
    CLAIM_CAN_REAUTHENTICATE,
    CLAIM_IS_ANONYMOUS,
    CLAIM_IS_VERIFIED,
    CLAIM_ROLES,
)

# How clients authenticate at the token and revocation endpoints (oauth/client_auth.py).
CLIENT_AUTH_METHODS = ("none", "client_secret_post", "client_secret_basic")
# The claims our tokens and userinfo may carry (sessions.py, endpoints/userinfo.py).
CLAIMS_SUPPORTED = (
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "amr",
    "acr",
    "sid",
    "nonce",
    "email",
    "email_verified",
    CLAIM_IS_ANONYMOUS,
    CLAIM_IS_VERIFIED,
    CLAIM_CAN_REAUTHENTICATE,
    CLAIM_ROLES,
)


def discovery_document(state: ServerState) -> dict[str, Any]:
    url = state.url
    return {
        "issuer": state.issuer,
        "authorization_endpoint": url("/oauth2/authorize"),
        "token_endpoint": url("/oauth2/token"),
        "userinfo_endpoint": url("/oauth2/userinfo"),
        "revocation_endpoint": url("/oauth2/revoke"),
        "end_session_endpoint": url("/oauth2/end_session"),
        "jwks_uri": url("/oauth2/jwks"),
        # RFC 8628 §4: for the clients whose grant_types list the device grant.
        "device_authorization_endpoint": url("/oauth2/device_authorization"),
        "response_types_supported": ["code", "none"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            DEVICE_CODE_GRANT,
        ],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "scopes_supported": sorted(SUPPORTED_SCOPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_supported": list(CLAIMS_SUPPORTED),
        # Beyond Authgear (accounts spec §1.5): an app can demand a second factor.
        "acr_values_supported": [MFA_ACR],
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": ["en"],
    }


async def discovery_endpoint(request: Request) -> Response:
    state = get_state(request)
    return JSONResponse(discovery_document(state), headers={"Cache-Control": "public, max-age=300"})


async def jwks_endpoint(request: Request) -> Response:
    state = get_state(request)
    # Short cache: keys rotate, and verifiers refetch on an unknown kid anyway.
    return JSONResponse(state.keys.jwks, headers={"Cache-Control": "public, max-age=300"})
