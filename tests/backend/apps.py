"""Small apps for the adapter tests, each run as a real server process:

    python apps.py --app APP --mode jwt|resolver --endpoint URL --port P

- starlette: AuthgearMiddleware(required=True), /health excluded, a WebSocket route.
- fastapi-mw: AuthgearMiddleware (optional) + the module-level current_user / require_user,
  require_client (/api/machine) and require_principal (/api/any).
- django-*: AuthgearMiddleware + @authgear_required (sync and async views) and
  @authgear_client_required (/api/machine), under Django's WSGI handler (wsgiref, the sync
  path) or its ASGI handler (uvicorn, the async path).
- flask-proxyfix: trusted-proxy mode (trusted_proxies 10.0.0.0/8) behind Werkzeug's ProxyFix,
  which rewrites REMOTE_ADDR from X-Forwarded-For.

``--allow-clients`` builds the authenticator with allow_clients=True.
"""

import argparse
import sys
from typing import Annotated, Any


def starlette_app(authenticator: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    from authgear.backend.asgi import AuthgearMiddleware, authenticated_user

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def me(request: Request) -> JSONResponse:
        return JSONResponse(request.state.authgear_user.as_dict())

    async def me_context(request: Request) -> JSONResponse:
        user = authenticated_user()
        return JSONResponse(user.as_dict() if user else None)

    def me_context_sync(request: Request) -> JSONResponse:  # runs in a worker thread
        user = authenticated_user()
        return JSONResponse(user.as_dict() if user else None)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.state.authgear_user.sub)
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/api/public", health),
            Route("/api/me", me),
            Route("/api/me-context", me_context),
            Route("/api/me-context-sync", me_context_sync),
            WebSocketRoute("/ws", ws),
        ]
    )
    app.add_middleware(
        AuthgearMiddleware,
        authenticator=authenticator,
        required=True,
        realm="starlette",
        exclude_paths=["/health", "/api/public"],
    )
    return app


def fastapi_mw_app(authenticator: Any) -> Any:
    from fastapi import Depends, FastAPI

    from authgear.backend import AuthenticatedClient, AuthenticatedUser, Principal
    from authgear.backend.asgi import AuthgearMiddleware
    from authgear.backend.fastapi import (
        current_user,
        require_client,
        require_principal,
        require_user,
    )

    app = FastAPI()
    app.add_middleware(AuthgearMiddleware, authenticator=authenticator)

    @app.get("/api/public")
    async def public() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/api/hello")
    async def hello(user: Annotated[AuthenticatedUser | None, Depends(current_user)]) -> Any:
        return {"sub": user.sub if user else None}

    @app.get("/api/admin")
    async def admin(
        user: Annotated[
            AuthenticatedUser, Depends(require_user(roles=["admin", "ops"], any_role=True))
        ],
    ) -> Any:
        return {"sub": user.sub}

    @app.get("/api/machine")
    async def machine(client: Annotated[AuthenticatedClient, Depends(require_client())]) -> Any:
        return client.as_dict()

    @app.get("/api/any")
    async def anyone(principal: Annotated[Principal, Depends(require_principal())]) -> Any:
        return principal.as_dict()

    return app


def flask_proxyfix_app() -> Any:
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from authgear.backend import TrustedProxyHeaders
    from authgear.backend.flask import AuthgearFlask

    app = Flask(__name__)
    auth = AuthgearFlask(app, TrustedProxyHeaders(trusted_proxies=["10.0.0.0/8"]))

    @app.get("/api/public")
    def public() -> Any:
        return {"ok": True}

    @app.get("/api/me")
    @auth.require_user
    def me() -> Any:
        return auth.user().as_dict()

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    return app


def django_app(mode: str, endpoint: str, server: str, allow_clients: bool) -> Any:
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="test-only-not-secret",
        MIDDLEWARE=["authgear.backend.django.AuthgearMiddleware"],
        INSTALLED_APPS=[],
        AUTHGEAR={
            "MODE": mode,
            "ENDPOINT": endpoint,
            "REALM": "django",
            "OPTIONS": {"allow_clients": allow_clients},
        },
    )
    django.setup()
    global urlpatterns
    from django.http import JsonResponse
    from django.urls import path

    from authgear.backend.django import authgear_client_required, authgear_required

    def public(request: Any) -> Any:
        return JsonResponse({"ok": True})

    @authgear_required
    def me(request: Any) -> Any:
        return JsonResponse(request.authgear_user.as_dict())

    @authgear_required(roles=["admin"])
    async def admin(request: Any) -> Any:
        return JsonResponse({"sub": request.authgear_user.sub})

    @authgear_client_required()
    def machine(request: Any) -> Any:
        return JsonResponse(request.authgear_principal.as_dict())

    urlpatterns = [
        path("api/public", public),
        path("api/me", me),
        path("api/admin", admin),
        path("api/machine", machine),
    ]
    if server == "wsgi":
        from django.core.wsgi import get_wsgi_application

        return get_wsgi_application()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


urlpatterns: list[Any] = []
ADMIN_OR_OPS = ["admin", "ops"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--app", required=True)
    parser.add_argument("--mode", default="jwt")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--allow-clients", action="store_true")
    args = parser.parse_args()
    from authgear.backend import make_authenticator

    if args.app == "django-wsgi":
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

        app = django_app(args.mode, args.endpoint, "wsgi", args.allow_clients)
        make_server("127.0.0.1", args.port, app, handler_class=Quiet).serve_forever()
        return
    if args.app == "flask-proxyfix":
        flask_proxyfix_app().run(host="127.0.0.1", port=args.port)
        return
    import uvicorn

    if args.app == "django-asgi":
        app = django_app(args.mode, args.endpoint, "asgi", args.allow_clients)
    else:
        authenticator = make_authenticator(
            args.mode, args.endpoint, allow_clients=args.allow_clients
        )
        factory = {"starlette": starlette_app, "fastapi-mw": fastapi_mw_app}[args.app]
        app = factory(authenticator)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    sys.modules.setdefault("apps", sys.modules[__name__])
    main()
