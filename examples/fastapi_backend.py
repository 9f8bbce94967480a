"""An example API backend (FastAPI) that knows who is calling through Authgear.

    .venv/bin/python examples/fastapi_backend.py                    # JWT mode, port 8000
    .venv/bin/python examples/fastapi_backend.py --mode resolver    # ask Authgear per request
    # JWT mode that refuses revoked sessions within seconds (polls the revocation feed as a
    # confidential client; the secret comes from the environment, never the command line):
    AUTHGEAR_CLIENT_SECRET=... .venv/bin/python examples/fastapi_backend.py --revocations <client>
    AUTHGEAR_ENDPOINT=https://myapp.authgear.cloud uvicorn fastapi_backend:app --app-dir examples

Behind nginx/Traefik/Caddy (``--mode proxy``): set AUTHGEAR_PROXY_SECRET to the secret the proxy
sends in X-Authgear-Proxy-Secret, and/or ``--trusted-proxies``; under uvicorn's own command line
add ``--no-proxy-headers`` (its default rewrites the peer address from X-Forwarded-For).

Try it with the SDK's command line (docs/backend.md):

    authgear login --endpoint http://127.0.0.1:3000 --client-id <native client id>
    authgear fetch http://127.0.0.1:8000/api/me

Routes: GET /api/public (no login), /api/hello (login optional), /api/me (login required),
/api/admin (role "admin"), /api/write (scope "https://authgear.com/scopes/full-access"),
POST /api/notes (login required; a state change), and, with ``--allow-clients``,
/api/machine (a client's own client_credentials token; the user routes still refuse it).
"""

# No `from __future__ import annotations`: FastAPI reads the Depends(...) in the annotations.

import argparse
import os
from typing import Annotated

from fastapi import Depends, FastAPI

from authgear.backend import (
    AuthenticatedClient,
    AuthenticatedUser,
    RevocationFeed,
    make_authenticator,
)
from authgear.backend.fastapi import AuthgearDependencies

FULL_ACCESS = "https://authgear.com/scopes/full-access"


def create_app(
    mode: str = "jwt",
    endpoint: str | None = "http://127.0.0.1:3000",
    trusted_proxies: list[str] | None = None,
    *,
    allow_clients: bool = False,
    cookies: bool = False,
    proxy_secret: str | None = None,
    revocations: RevocationFeed | None = None,
) -> FastAPI:
    options: dict[str, object] = {"allow_clients": allow_clients}
    if mode == "jwt" and revocations is not None:
        options["revocations"] = revocations
    if mode == "resolver" and cookies:
        options["cookie_name"] = "session"  # Authgear's session cookie, same site as this API
    if mode == "proxy":
        options["allow_cookies"] = cookies
        options["proxy_secret"] = proxy_secret
    authenticator = make_authenticator(mode, endpoint, trusted_proxies=trusted_proxies, **options)
    auth = AuthgearDependencies(authenticator)
    app = FastAPI(title="Example backend", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/api/public")
    async def public() -> dict[str, str]:
        return {"message": "hello, anyone"}

    @app.get("/api/hello")
    async def hello(
        user: Annotated[AuthenticatedUser | None, Depends(auth.current_user)],
    ) -> dict[str, str]:
        return {"message": f"hello, {user.sub if user else 'stranger'}"}

    @app.get("/api/me")
    async def me(
        user: Annotated[AuthenticatedUser, Depends(auth.require_user())],
    ) -> dict[str, object]:
        return user.as_dict()

    @app.get("/api/admin")
    async def admin(
        user: Annotated[AuthenticatedUser, Depends(auth.require_user(roles=["admin"]))],
    ) -> dict[str, str]:
        return {"message": f"hello, admin {user.sub}"}

    @app.get("/api/write")
    async def write(
        user: Annotated[AuthenticatedUser, Depends(auth.require_user(scopes=[FULL_ACCESS]))],
    ) -> dict[str, str]:
        return {"message": f"{user.sub} may write"}

    @app.post("/api/notes")
    async def add_note(
        user: Annotated[AuthenticatedUser, Depends(auth.require_user())],
    ) -> dict[str, str]:
        # A state-changing request: with --cookies, a cookie-authenticated one must come from
        # this API's own origin (a page elsewhere could make the browser send the cookie).
        return {"saved_by": user.sub, "credential": user.credential}

    if allow_clients:

        @app.get("/api/machine")
        async def machine(
            client: Annotated[AuthenticatedClient, Depends(auth.require_client())],
        ) -> dict[str, object]:
            return client.as_dict()

    return app


def _proxies(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


# For `uvicorn fastapi_backend:app`: configured from the environment.
app = create_app(
    os.environ.get("AUTHGEAR_BACKEND_MODE", "jwt"),
    os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000"),
    _proxies(os.environ.get("AUTHGEAR_TRUSTED_PROXIES")),
    proxy_secret=os.environ.get("AUTHGEAR_PROXY_SECRET") or None,
)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--endpoint", default=os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000")
    )
    parser.add_argument("--mode", choices=["jwt", "resolver", "proxy"], default="jwt")
    parser.add_argument("--trusted-proxies", help="proxy mode: comma-separated addresses")
    parser.add_argument("--allow-clients", action="store_true", help="serve /api/machine")
    parser.add_argument(
        "--cookies", action="store_true", help="resolver/proxy mode: accept the session cookie"
    )
    parser.add_argument(
        "--revocations",
        metavar="CLIENT_ID",
        help="jwt mode: poll the revocation feed as this confidential client "
        "(its secret in AUTHGEAR_CLIENT_SECRET)",
    )
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--uvicorn-proxy-headers",
        action="store_true",
        help="keep uvicorn's X-Forwarded-For rewriting of the peer (unsafe in proxy mode)",
    )
    args = parser.parse_args()
    feed = None
    if args.revocations:
        secret = os.environ.get("AUTHGEAR_CLIENT_SECRET", "")
        feed = RevocationFeed(args.revocations, secret, poll_interval=args.poll_interval)
    backend = create_app(
        args.mode,
        args.endpoint,
        _proxies(args.trusted_proxies),
        allow_clients=args.allow_clients,
        cookies=args.cookies,
        proxy_secret=os.environ.get("AUTHGEAR_PROXY_SECRET") or None,
        revocations=feed,
    )
    # proxy_headers=False: the peer address must be the socket's, not X-Forwarded-For's.
    uvicorn.run(
        backend,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=args.uvicorn_proxy_headers,
    )


if __name__ == "__main__":
    main()
