"""The device authorization grant (RFC 8628): ``POST /oauth2/device_authorization`` (§3.1-3.2)
gives a device a device code to poll with and a user code to show; the user enters that code
at ``/device`` (§3.3), signs in through the sign-in steps and approves or denies; the device's
poll of the token endpoint (§3.4-3.5, endpoints/token.py) then gets its answer.

A GET of /device, even with ``?user_code=`` (the ``verification_uri_complete`` a QR code
carries), only fills in the form: the code counts once it is submitted (a POST with the CSRF
token and an Origin check), and nothing is approved before the user presses Approve."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authgear.server import device_flow
from authgear.server.config import DEVICE_CODE_GRANT
from authgear.server.endpoints.authorize import SUPPORTED_SCOPES
from authgear.server.http import NO_STORE, OAuthError, client_ip, rate_limited, read_form
from authgear.server.oauth.client_auth import authenticate_client
from authgear.server.ratelimit import ip_bucket
from authgear.server.security import user_codes
from authgear.server.sessions import now_s, session_from_cookie
from authgear.server.signin.engine import start_flow
from authgear.server.signin.flow import DEVICE, LOGIN, new_flow
from authgear.server.state import ServerState, get_state
from authgear.server.ui import csrf_ok, render

AUTHORIZE_BUCKET = "device-authorization"
FORM_UNREADABLE = "The form could not be read."
CSRF_FAILED = "Your session expired. Please try again."


async def device_authorization_endpoint(request: Request) -> Response:
    """POST /oauth2/device_authorization: client authentication as at the token endpoint
    (a public client by its client_id), the client must list the device grant, and the scopes
    follow the authorization endpoint's rules."""
    state = get_state(request)
    ip = ip_bucket(client_ip(request, state.config.trusted_proxies))
    limit = state.config.rate_limits.device_authorizations_per_ip_per_minute
    try:
        if not await state.limiter.hit(AUTHORIZE_BUCKET, ip, limit, 60):
            raise rate_limited()
        form = await read_form(request)
        client = authenticate_client(state, request, form)
        assert client is not None
        if not client.allows(DEVICE_CODE_GRANT):
            raise OAuthError("unauthorized_client", "this client cannot use the device grant")
        scopes = device_flow.requested_scopes(client, form.get("scope"), SUPPORTED_SCOPES)
        device_code, user_code, code = await device_flow.start(state, request, client, scopes)
    except OAuthError as e:
        return e.response()
    body = device_flow.authorization_body(state.issuer, device_code, user_code, code)
    return JSONResponse(body, headers=NO_STORE)


async def device_page(request: Request) -> Response:
    """GET/POST /device: enter the code; a right one starts the sign-in (or, signed in
    already, goes straight to the approval step)."""
    state = get_state(request)
    if request.method == "GET":
        typed = user_codes.normalize(request.query_params.get("user_code"))
        return await _page(state, request, typed)
    try:
        form = await read_form(request)
    except OAuthError:
        return await _page(state, request, None, FORM_UNREADABLE, 400)
    typed = user_codes.normalize(form.get("user_code"))
    if not csrf_ok(state, request, form.get("csrf_token")):
        return await _page(state, request, typed, CSRF_FAILED, 403)
    entered = await device_flow.enter(state, request, form.get("user_code"))
    if isinstance(entered, device_flow.Refused):
        return await _page(state, request, typed, entered.message, entered.status)
    found = await session_from_cookie(state, request)
    starter: dict[str, str] = {"kind": DEVICE, "device": entered.id, "client_id": entered.client_id}
    if found is not None:
        starter["session"] = found[0].id
    flow = new_flow(LOGIN, starter, now_s(), user_id=found[1].id if found else None)
    return await start_flow(state, request, flow)


async def _page(
    state: ServerState,
    request: Request,
    typed: str | None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    found = await session_from_cookie(state, request)
    values = {
        "user_code": user_codes.display(typed) if typed else "",
        "error": error,
        "signed_in_as": found[1].email if found else None,
    }
    return render(state, request, "device.html", values, status)
