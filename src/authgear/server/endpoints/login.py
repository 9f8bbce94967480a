"""The signed-in home page (/) and its sign-out button (/logout). The sign-in pages themselves
(/login, /signup and their steps, where the end-user is authenticated during an authorization
request, OpenID Connect Core §3.1.2.3) are the sign-in flow: see signin/."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from authgear.server.account_rules import EMAIL_RE, normalize_email, safe_next
from authgear.server.http import OAuthError, read_form
from authgear.server.sessions import clear_session_cookie, session_from_cookie
from authgear.server.state import get_state
from authgear.server.ui import csrf_ok, error_page, render

__all__ = ["EMAIL_RE", "home_page", "logout_page", "normalize_email", "safe_next"]


async def home_page(request: Request) -> Response:
    state = get_state(request)
    found = await session_from_cookie(state, request)
    user = found[1] if found else None
    return render(state, request, "home.html", {"user": user})


async def logout_page(request: Request) -> Response:
    """The home page's sign-out button (the OIDC way is /oauth2/end_session)."""
    state = get_state(request)
    try:
        form = await read_form(request)
    except OAuthError:
        form = {}
    if not csrf_ok(state, request, form.get("csrf_token")):
        return error_page(state, request, "Your session expired. Please try again.", 403)
    found = await session_from_cookie(state, request)
    if found:
        await state.repo.end_session(found[0].id)
    response = RedirectResponse("/", status_code=303)
    clear_session_cookie(state, response)
    return response
