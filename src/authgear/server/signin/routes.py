"""Every route of the sign-in and of the security settings, in one list for the app."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from authgear.server.signin import engine, settings_identities, settings_page, sso_callback


def signin_routes() -> list[BaseRoute]:
    return [
        Route("/login", engine.login_page, methods=["GET", "POST"]),
        Route("/signup", engine.signup_page, methods=["GET", "POST"]),
        Route("/flow/{step}", engine.step_page, methods=["GET", "POST"]),
        Route("/flow/{step}/options", engine.options_endpoint, methods=["POST"]),
        Route("/sso/oauth2/callback/{alias}", sso_callback.callback, methods=["GET"]),
        *settings_page.routes(),
        *settings_identities.routes(),
    ]
