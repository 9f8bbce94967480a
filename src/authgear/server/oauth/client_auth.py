"""Client authentication at the token and revocation endpoints (RFC 6749 §2.3).

``client_secret_basic`` (HTTP Basic, §2.3.1), ``client_secret_post`` (the form) and ``none``
(a public client names itself). Credentials in the body win over HTTP Basic (parity with
Authgear). A failed Basic authentication answers 401 with a challenge (§5.2).
"""

from __future__ import annotations

from starlette.requests import Request

from authgear.server.config import ClientConfig
from authgear.server.http import OAuthError, basic_credentials
from authgear.server.state import ServerState


def authenticate_client(
    state: ServerState, request: Request, form: dict[str, str], *, required: bool = True
) -> ClientConfig | None:
    """The client making the request; None only when ``required`` is False and no client
    identified itself. Raises OAuthError (``invalid_client``, ``invalid_request``)."""
    basic = basic_credentials(request)
    client_id = form.get("client_id")
    secret = form.get("client_secret")
    used_basic = False
    if client_id is None and basic is not None:
        client_id, secret = basic
        used_basic = True
    elif basic is not None and secret is None and basic[0] == client_id:
        secret = basic[1]
        used_basic = True
    if not client_id:
        if not required:
            return None
        raise OAuthError("invalid_request", "client_id is required")
    client = state.config.client(client_id)
    if client is None:
        raise _invalid_client(used_basic, "invalid client ID")
    if not client.is_public and (secret is None or not client.check_secret(secret)):
        raise _invalid_client(used_basic, "invalid client credentials")
    return client


def _invalid_client(used_basic: bool, description: str) -> OAuthError:
    if used_basic:
        # RFC 6749 §5.2: a failed Basic authentication answers 401 with a challenge.
        return OAuthError(
            "invalid_client", description, 401, {"WWW-Authenticate": 'Basic realm="authgear"'}
        )
    return OAuthError("invalid_client", description)
