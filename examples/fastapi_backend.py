"""An example API backend (FastAPI) that knows who is calling through Authgear.

    .venv/bin/python examples/fastapi_backend.py                    # JWT mode, port 8000
    .venv/bin/python examples/fastapi_backend.py --mode resolver    # ask Authgear per request
    AUTHGEAR_ENDPOINT=https://myapp.authgear.cloud uvicorn fastapi_backend:app --app-dir examples

Try it with the SDK's command line (docs/backend.md):

    authgear login --endpoint http://127.0.0.1:3000 --client-id <native client id>
    authgear fetch http://127.0.0.1:8000/api/me

Routes: GET /api/public (no login), /api/hello (login optional), /api/me (login required),
/api/admin (role "admin"), /api/write (scope "https://authgear.com/scopes/full-access").
"""

# No `from __future__ import annotations`: FastAPI reads the Depends(...) in the annotations.

import argparse
import os
from typing import Annotated

from fastapi import Depends, FastAPI

from authgear.backend import AuthenticatedUser, make_authenticator
from authgear.backend.fastapi import AuthgearDependencies

FULL_ACCESS = "https://authgear.com/scopes/full-access"


def create_app(
    mode: str = "jwt",
    endpoint: str | None = "http://127.0.0.1:3000",
    trusted_proxies: list[str] | None = None,
) -> FastAPI:
    auth = AuthgearDependencies(make_authenticator(mode, endpoint, trusted_proxies=trusted_proxies))
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

    return app


def _proxies(value: str | None) -> list[str] | None:
    return [p.strip() for p in value.split(",") if p.strip()] if value else None


# For `uvicorn fastapi_backend:app`: configured from the environment.
app = create_app(
    os.environ.get("AUTHGEAR_BACKEND_MODE", "jwt"),
    os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000"),
    _proxies(os.environ.get("AUTHGEAR_TRUSTED_PROXIES")),
)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--endpoint", default=os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000")
    )
    parser.add_argument("--mode", choices=["jwt", "resolver", "proxy"], default="jwt")
    parser.add_argument("--trusted-proxies", help="proxy mode: comma-separated addresses")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    backend = create_app(args.mode, args.endpoint, _proxies(args.trusted_proxies))
    uvicorn.run(backend, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
