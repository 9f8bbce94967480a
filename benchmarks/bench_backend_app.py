"""The app bench_backend.py loads: an open and a protected endpoint doing the same work.

    AUTHGEAR_ENDPOINT=http://127.0.0.1:3000 uvicorn bench_backend_app:app --app-dir benchmarks

GET /open returns a fixed user-shaped JSON document; GET /protected requires a valid access
token (JWTVerifier through the FastAPI dependency ``require_user``) and returns the caller's;
GET /protected-mw does the same through AuthgearMiddleware.
Both return the same number of bytes for the same user, so the difference is the auth.
"""

import json
import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from authgear.backend import AuthenticatedUser, JWTVerifier
from authgear.backend.asgi import AuthgearMiddleware
from authgear.backend.fastapi import AuthgearDependencies

auth = AuthgearDependencies(
    JWTVerifier(os.environ.get("AUTHGEAR_ENDPOINT", "http://127.0.0.1:3000"))
)
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
# bench_backend.py passes the protected answer for its token, so both bodies are the same.
SAMPLE: dict[str, Any] = json.loads(os.environ.get("BENCH_OPEN_BODY", "{}"))


@app.get("/open")
async def open_endpoint() -> JSONResponse:
    return JSONResponse(SAMPLE)


@app.get("/protected")
async def protected(
    user: Annotated[AuthenticatedUser, Depends(auth.require_user())],
) -> JSONResponse:
    return JSONResponse(user.as_dict())


@app.get("/protected-mw")
async def protected_mw(request: Request) -> JSONResponse:
    return JSONResponse(request.state.authgear_user.as_dict())


app.add_middleware(
    AuthgearMiddleware,
    authenticator=auth.authenticator,
    required=True,
    exclude_paths=["/open", "/protected"],
)
