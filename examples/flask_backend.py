"""An example API backend (Flask) that knows who is calling through Authgear.

    .venv/bin/python examples/flask_backend.py --port 8001                  # JWT mode
    .venv/bin/python examples/flask_backend.py --port 8001 --mode resolver  # ask Authgear

Routes: GET /api/public, /api/hello (login optional), /api/me (login required),
/api/admin (role "admin"), /api/write (scope "https://authgear.com/scopes/full-access"), and,
with ``--allow-clients``, /api/machine (a client's own token). For production serve
`create_app(...)` with a WSGI server.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flask import Flask

from authgear.backend import make_authenticator
from authgear.backend.flask import AuthgearFlask

FULL_ACCESS = "https://authgear.com/scopes/full-access"


def create_app(
    mode: str = "jwt",
    endpoint: str | None = "http://127.0.0.1:3000",
    trusted_proxies: list[str] | None = None,
    *,
    allow_clients: bool = False,
) -> Flask:
    app = Flask(__name__)
    options: dict[str, object] = {"allow_clients": allow_clients}
    if mode == "proxy":  # the secret nginx/Traefik/Caddy send (docs/backend.md)
        options["proxy_secret"] = os.environ.get("AUTHGEAR_PROXY_SECRET") or None
    authenticator = make_authenticator(mode, endpoint, trusted_proxies=trusted_proxies, **options)
    auth = AuthgearFlask(app, authenticator)

    @app.get("/api/public")
    def public() -> dict[str, Any]:
        return {"message": "hello, anyone"}

    @app.get("/api/hello")
    def hello() -> dict[str, Any]:
        user = auth.current_user
        return {"message": f"hello, {user.sub if user else 'stranger'}"}

    @app.get("/api/me")
    @auth.require_user
    def me() -> dict[str, Any]:
        return auth.user().as_dict()

    @app.get("/api/admin")
    @auth.require_user(roles=["admin"])
    def admin() -> dict[str, Any]:
        return {"message": f"hello, admin {auth.user().sub}"}

    @app.get("/api/write")
    @auth.require_user(scopes=[FULL_ACCESS])
    def write() -> dict[str, Any]:
        return {"message": f"{auth.user().sub} may write"}

    if allow_clients:

        @app.get("/api/machine")
        @auth.require_client()
        def machine() -> dict[str, Any]:
            return auth.principal().as_dict()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--endpoint", default=os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000")
    )
    parser.add_argument("--mode", choices=["jwt", "resolver", "proxy"], default="jwt")
    parser.add_argument("--trusted-proxies", help="proxy mode: comma-separated addresses")
    parser.add_argument("--allow-clients", action="store_true", help="serve /api/machine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    proxies = args.trusted_proxies.split(",") if args.trusted_proxies else None
    app = create_app(args.mode, args.endpoint, proxies, allow_clients=args.allow_clients)
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
