"""An example API backend (Flask) that knows who is calling through Authgear.

    .venv/bin/python examples/flask_backend.py --port 8001                  # JWT mode
    .venv/bin/python examples/flask_backend.py --port 8001 --mode resolver  # ask Authgear

Routes: GET /api/public, /api/hello (login optional), /api/me (login required),
/api/admin (role "admin"). For production serve `create_app(...)` with a WSGI server.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flask import Flask

from authgear.backend import make_authenticator
from authgear.backend.flask import AuthgearFlask


def create_app(
    mode: str = "jwt",
    endpoint: str | None = "http://127.0.0.1:3000",
    trusted_proxies: list[str] | None = None,
) -> Flask:
    app = Flask(__name__)
    auth = AuthgearFlask(app, make_authenticator(mode, endpoint, trusted_proxies=trusted_proxies))

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

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--endpoint", default=os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000")
    )
    parser.add_argument("--mode", choices=["jwt", "resolver", "proxy"], default="jwt")
    parser.add_argument("--trusted-proxies", help="proxy mode: comma-separated addresses")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    proxies = args.trusted_proxies.split(",") if args.trusted_proxies else None
    app = create_app(args.mode, args.endpoint, proxies)
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
