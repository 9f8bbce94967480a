"""The apps bench_backend.py loads: an open and two protected endpoints doing the same work.

    AUTHGEAR_ENDPOINT=http://127.0.0.1:3000 uvicorn bench_backend_app:open_app --app-dir benchmarks

Three FastAPI apps with one route each, ``GET /me``, so that routing costs the same for all:
``open_app`` returns a fixed user-shaped JSON document; ``protected_app`` requires a valid access
token (JWTVerifier through the FastAPI dependency ``require_user``) and ``protected_mw_app``
through AuthgearMiddleware; both then return the same document (after checking that the caller
is the user it describes). Same work, same bytes: the difference is the cost of authentication.
"""

import json
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.responses import JSONResponse

from authgear.backend import AuthenticatedUser, JWTVerifier
from authgear.backend.asgi import AuthgearMiddleware, authenticated_user
from authgear.backend.fastapi import AuthgearDependencies

auth = AuthgearDependencies(
    JWTVerifier(os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000"))
)
# bench_backend.py passes the protected answer for its token, so all bodies are the same.
SAMPLE: dict[str, Any] = json.loads(os.environ.get("BENCH_OPEN_BODY", "{}"))


def _app() -> FastAPI:
    return FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


open_app = _app()


@open_app.get("/me")
async def open_endpoint() -> JSONResponse:
    return JSONResponse(SAMPLE)


protected_app = _app()


@protected_app.get("/me")
async def protected(
    user: Annotated[AuthenticatedUser, Depends(auth.require_user())],
) -> JSONResponse:
    if user.sub != SAMPLE.get("sub"):
        return JSONResponse({"error": "unexpected user"}, status_code=500)
    return JSONResponse(SAMPLE)


protected_mw_app = _app()


@protected_mw_app.get("/me")
async def protected_mw() -> JSONResponse:
    user = authenticated_user()
    if user is None or user.sub != SAMPLE.get("sub"):
        return JSONResponse({"error": "unexpected user"}, status_code=500)
    return JSONResponse(SAMPLE)


protected_mw_app.add_middleware(AuthgearMiddleware, authenticator=auth.authenticator, required=True)
