"""The admin API (JSON) under /_api/admin/, a FastAPI app mounted in the server.

Authenticated by admin API keys (``Authorization: Bearer agk_...``, see ``authgear admin keys
create``). The OpenAPI document is at /_api/admin/openapi.json.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgear.server.admin.authenticators import AuthenticatorOps
from authgear.server.admin.identities import IdentityOps, LastSignInMethod
from authgear.server.admin.ops import AdminOps, InvalidInput
from authgear.server.admin.present import audit_json, session_json, user_json
from authgear.server.http import NO_STORE, client_ip
from authgear.server.passwords import HashingBusy, log_busy
from authgear.server.sessions import now_s
from authgear.server.state import ServerState
from authgear.server.storage import EmailTaken
from authgear.server.storage.admin import Actor, BadCursor

log = logging.getLogger("authgear.admin")

STATE_KEY = "authgear.state"
ACTOR_KEY = "authgear.admin_actor"
PUBLIC_PATHS = frozenset({"/openapi.json"})
ROLE = r"^[A-Za-z0-9_.:-]{1,64}$"
ID_PATH = Path(min_length=1, max_length=100)
# The largest request body: a user with a password and 50 roles is under 5 KiB.
MAX_BODY_BYTES = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description


class ErrorOut(BaseModel):
    error: str
    error_description: str | None = None


class UserOut(BaseModel):
    id: str
    email: str
    email_verified: bool
    roles: list[str]
    disabled: bool
    created_at: int
    updated_at: int
    last_login_at: int | None


class UserPage(BaseModel):
    users: list[UserOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: none")


class CreateUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=320)
    password: str | None = Field(
        default=None, max_length=8192, description="omit for an account without a password"
    )
    email_verified: bool = False
    roles: list[Annotated[str, Field(pattern=ROLE)]] = Field(default_factory=list, max_length=50)


class SetRoles(BaseModel):
    model_config = ConfigDict(extra="forbid")
    roles: list[Annotated[str, Field(pattern=ROLE)]] = Field(max_length=50)


class SetPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=8192)
    end_sessions: bool | None = Field(
        default=None,
        description="end all of the user's sessions; null: the server's "
        "password_change_ends_sessions (default true)",
    )


class PasswordSetOut(BaseModel):
    user: UserOut
    sessions_ended: int


class LastAccess(BaseModel):
    time: int
    ip: str | None
    user_agent: str | None


class SessionOut(BaseModel):
    id: str
    kind: Literal["idp_session", "offline_grant"] = Field(
        description="idp_session: a browser sign-in (cookie); offline_grant: an app's refresh token"
    )
    user_id: str
    client_id: str | None
    client_name: str | None
    idp_session_id: str | None = Field(description="the browser session an app signed in through")
    display_name: str = Field(description="device name, or a readable user agent")
    scopes: list[str]
    amr: list[str]
    created_at: int
    authenticated_at: int
    expires_at: int
    last_access: LastAccess
    device_info: dict[str, Any] = Field(description="x_device_info of Authgear's native SDKs")


class SessionList(BaseModel):
    sessions: list[SessionOut]
    next_cursor: str | None = Field(
        default=None, description="pass as `cursor` for the next page; null: none"
    )


class RevokeAllOut(BaseModel):
    revoked: int


class ActorOut(BaseModel):
    type: Literal["api_key", "portal", "cli", "self", "system"] = Field(
        description="system: the server itself (e.g. a session ended by session.max_per_user)"
    )
    id: str
    label: str | None


class TargetOut(BaseModel):
    type: str | None
    id: str | None


class AuditOut(BaseModel):
    id: int
    at: int
    actor: ActorOut
    action: str
    target: TargetOut
    details: dict[str, Any]
    ip: str | None


class AuditPage(BaseModel):
    entries: list[AuditOut]
    next_cursor: int | None


class AuthenticatorOut(BaseModel):
    id: str
    kind: Literal["totp", "passkey"]
    label: str | None
    created_at: int
    last_used_at: int | None
    aaguid: str | None = Field(default=None, description="passkeys: the authenticator's model")
    backed_up: bool | None = Field(default=None, description="passkeys: synced (multi-device)")


class RecoveryCodesOut(BaseModel):
    total: int
    unused: int


class AuthenticatorsOut(BaseModel):
    """How the user can sign in; never a secret, code or key."""

    user_id: str
    email: str
    password: bool
    authenticators: list[AuthenticatorOut]
    recovery_codes: RecoveryCodesOut
    trusted_devices: int = Field(description="browsers that skip the second factor")


class IdentityOut(BaseModel):
    id: str
    provider: str = Field(description="the provider's alias in identity_providers")
    provider_name: str | None = Field(description="its display name; null: no longer configured")
    subject: str = Field(description="the provider's id of the user (an OIDC sub; GitHub's id)")
    email: str | None
    email_verified: bool
    name: str | None
    created_at: int
    last_used_at: int | None


class IdentitiesOut(BaseModel):
    """The user's accounts at upstream identity providers."""

    user_id: str
    email: str
    identities: list[IdentityOut]


class MfaResetOut(BaseModel):
    totp: int
    recovery_codes: int
    trusted_devices: int


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing, unknown or revoked API key"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": ErrorOut, "description": "no such user or session"},
}

_bearer = HTTPBearer(auto_error=False, description="an admin API key: agk_<id>.<secret>")


def _state(request: Request) -> ServerState:
    state = request.scope.get(STATE_KEY)
    assert isinstance(state, ServerState)
    return state


async def _actor(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    """The key was checked by :class:`WithState` before FastAPI read anything; ``_bearer`` is
    declared here so that the OpenAPI document names the scheme."""
    actor = request.scope.get(ACTOR_KEY)
    if not isinstance(actor, Actor):
        raise ApiError(401, "unauthorized", "a valid admin API key is required")
    return actor


ActorDep = Annotated[Actor, Depends(_actor)]
UserId = Annotated[str, ID_PATH]


def _ops(request: Request) -> AdminOps:
    state = _state(request)
    return AdminOps(state.repo, state.admin, state.accounts)


def _authenticator_ops(request: Request) -> AuthenticatorOps:
    state = _state(request)
    return AuthenticatorOps(state.admin, state.authenticators)


def _identity_ops(request: Request) -> IdentityOps:
    state = _state(request)
    return IdentityOps(state.admin, state.identities, state.config)


def _user_or_404(user: Any) -> UserOut:
    if user is None:
        raise ApiError(404, "not_found", "no such user")
    return UserOut(**user_json(user))


def build_api() -> FastAPI:
    """The admin API app: :data:`router`'s routes with the API's own error shapes."""
    api = FastAPI(
        title="Authgear admin API",
        version="1",
        description="Users, their sessions and authenticators, and the audit log. "
        "Send an admin API key as `Authorization: Bearer <key>`.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
        exception_handlers={
            ApiError: _api_error,
            StarletteHTTPException: _http_error,
            RequestValidationError: _invalid,
            HashingBusy: _busy,
            Exception: _server_error,
        },
    )
    api.include_router(router)
    return api


# -- errors -----------------------------------------------------------------------------------


async def _api_error(request: Request, exc: ApiError) -> Response:
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="authgear-admin"'
    return JSONResponse(
        {"error": exc.error, "error_description": exc.description},
        status_code=exc.status,
        headers=headers,
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> Response:
    return JSONResponse(validation_error_body(exc), status_code=422, headers=NO_STORE)


async def _busy(request: Request, exc: HashingBusy) -> Response:
    log_busy(request.scope)
    return JSONResponse(
        {
            "error": "temporarily_unavailable",
            "error_description": "password hashing is busy, retry shortly",
        },
        status_code=503,
        headers={**NO_STORE, "Retry-After": str(exc.retry_after)},
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("internal error in the admin API: %s", type(exc).__name__)
    return JSONResponse(
        {"error": "server_error", "error_description": "internal server error"},
        status_code=500,
    )


# -- routes -----------------------------------------------------------------------------------

router = APIRouter()


@router.get("/users", response_model=UserPage, responses=ERRORS, tags=["users"])
async def list_users(
    request: Request,
    actor: ActorDep,
    q: Annotated[
        str | None, Query(max_length=320, description="part of an email, or a user id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> UserPage:
    """Users ordered by email; page with `next_cursor`."""
    try:
        users, nxt = await _state(request).admin.list_users(query=q, limit=limit, after=cursor)
    except BadCursor:
        raise ApiError(400, "invalid_request", "invalid cursor") from None
    return UserPage(users=[UserOut(**user_json(u)) for u in users], next_cursor=nxt)


@router.post(
    "/users",
    response_model=UserOut,
    status_code=201,
    responses={
        **ERRORS,
        400: {"model": ErrorOut, "description": "invalid email, password or roles"},
        409: {"model": ErrorOut, "description": "the email is taken"},
    },
    tags=["users"],
)
async def create_user(request: Request, actor: ActorDep, body: CreateUser) -> UserOut:
    try:
        user = await _ops(request).create_user(
            actor,
            now_s(),
            email=body.email,
            password=body.password,
            email_verified=body.email_verified,
            roles=body.roles,
        )
    except InvalidInput as e:
        raise ApiError(400, "invalid_request", str(e)) from None
    except EmailTaken:
        raise ApiError(409, "conflict", "a user with this email exists") from None
    return UserOut(**user_json(user))


@router.get("/users/{user_id}", response_model=UserOut, responses=NOT_FOUND, tags=["users"])
async def get_user(request: Request, actor: ActorDep, user_id: UserId) -> UserOut:
    return _user_or_404(await _state(request).admin.get_user(user_id))


@router.delete("/users/{user_id}", status_code=204, responses=NOT_FOUND, tags=["users"])
async def delete_user(request: Request, actor: ActorDep, user_id: UserId) -> Response:
    """Delete the user with their sessions, grants and tokens, in one transaction."""
    if await _ops(request).delete_user(actor, now_s(), user_id) is None:
        raise ApiError(404, "not_found", "no such user")
    return Response(status_code=204)


@router.post(
    "/users/{user_id}/disable", response_model=UserOut, responses=NOT_FOUND, tags=["users"]
)
async def disable_user(request: Request, actor: ActorDep, user_id: UserId) -> UserOut:
    """A disabled user is refused everywhere at once: sign-in, refresh, userinfo, resolver."""
    return _user_or_404(await _ops(request).set_disabled(actor, now_s(), user_id, True))


@router.post("/users/{user_id}/enable", response_model=UserOut, responses=NOT_FOUND, tags=["users"])
async def enable_user(request: Request, actor: ActorDep, user_id: UserId) -> UserOut:
    return _user_or_404(await _ops(request).set_disabled(actor, now_s(), user_id, False))


@router.put(
    "/users/{user_id}/roles",
    response_model=UserOut,
    responses={**NOT_FOUND, 400: {"model": ErrorOut, "description": "invalid roles"}},
    tags=["users"],
)
async def set_roles(request: Request, actor: ActorDep, user_id: UserId, body: SetRoles) -> UserOut:
    try:
        user = await _ops(request).set_roles(actor, now_s(), user_id, body.roles)
    except InvalidInput as e:
        raise ApiError(400, "invalid_request", str(e)) from None
    return _user_or_404(user)


@router.post(
    "/users/{user_id}/send-reset",
    response_model=UserOut,
    status_code=202,
    responses={**NOT_FOUND, 400: {"model": ErrorOut, "description": "the user is disabled"}},
    tags=["users"],
)
async def send_reset(request: Request, actor: ActorDep, user_id: UserId) -> UserOut:
    """Email the user a password reset code and link (single use, `forgot_password.lifetime`
    seconds). Queued: the mail is sent in the background, with retries."""
    try:
        return _user_or_404(await _ops(request).send_reset(actor, now_s(), user_id))
    except InvalidInput as e:
        raise ApiError(400, "invalid_request", str(e)) from None


@router.post(
    "/users/{user_id}/mark-verified",
    response_model=UserOut,
    responses=NOT_FOUND,
    tags=["users"],
)
async def mark_verified(request: Request, actor: ActorDep, user_id: UserId) -> UserOut:
    """Mark the user's email address verified (`email_verified`, `is_verified`)."""
    return _user_or_404(await _ops(request).mark_verified(actor, now_s(), user_id, True))


@router.post(
    "/users/{user_id}/mark-unverified",
    response_model=UserOut,
    responses=NOT_FOUND,
    tags=["users"],
)
async def mark_unverified(request: Request, actor: ActorDep, user_id: UserId) -> UserOut:
    return _user_or_404(await _ops(request).mark_verified(actor, now_s(), user_id, False))


@router.put(
    "/users/{user_id}/password",
    response_model=PasswordSetOut,
    responses={
        **NOT_FOUND,
        400: {"model": ErrorOut, "description": "the password breaks the password policy"},
    },
    tags=["users"],
)
async def set_password(
    request: Request, actor: ActorDep, user_id: UserId, body: SetPassword
) -> PasswordSetOut:
    """Set the user's password (under the password policy). The user gets a notice mail;
    their sessions end unless `end_sessions` is false. Never logged or audited in clear."""
    try:
        result = await _ops(request).set_password(
            actor, now_s(), user_id, body.password, end_sessions=body.end_sessions
        )
    except InvalidInput as e:
        raise ApiError(400, "invalid_request", str(e)) from None
    if result is None:
        raise ApiError(404, "not_found", "no such user")
    return PasswordSetOut(
        user=UserOut(**user_json(result.user)), sessions_ended=result.ended_sessions
    )


@router.get(
    "/users/{user_id}/sessions",
    response_model=SessionList,
    responses={**NOT_FOUND, 400: {"model": ErrorOut, "description": "invalid cursor"}},
    tags=["sessions"],
)
async def list_sessions(
    request: Request,
    actor: ActorDep,
    user_id: UserId,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=600)] = None,
) -> SessionList:
    """The user's browser sessions and app sessions, most recently used first; page with
    `next_cursor`."""
    state = _state(request)
    if await state.admin.get_user(user_id) is None:
        raise ApiError(404, "not_found", "no such user")
    try:
        sessions, nxt = await state.admin.session_page(user_id, now_s(), limit=limit, after=cursor)
    except BadCursor:
        raise ApiError(400, "invalid_request", "invalid cursor") from None
    return SessionList(
        sessions=[SessionOut(**session_json(s, state.config)) for s in sessions],
        next_cursor=nxt,
    )


@router.delete(
    "/users/{user_id}/sessions",
    response_model=RevokeAllOut,
    responses=NOT_FOUND,
    tags=["sessions"],
)
async def revoke_all_sessions(request: Request, actor: ActorDep, user_id: UserId) -> RevokeAllOut:
    """Revoke all of the user's sessions and everything issued under them."""
    count = await _ops(request).revoke_all(actor, now_s(), user_id)
    if count is None:
        raise ApiError(404, "not_found", "no such user")
    return RevokeAllOut(revoked=count)


@router.get(
    "/users/{user_id}/authenticators",
    response_model=AuthenticatorsOut,
    responses=NOT_FOUND,
    tags=["authenticators"],
)
async def list_authenticators(
    request: Request, actor: ActorDep, user_id: UserId
) -> AuthenticatorsOut:
    """The user's password, TOTP authenticators, passkeys, recovery codes (counts) and
    trusted browsers (count), with when each was added and last used."""
    found = await _authenticator_ops(request).describe(user_id, now_s())
    if found is None:
        raise ApiError(404, "not_found", "no such user")
    return AuthenticatorsOut(**found)


@router.post(
    "/users/{user_id}/reset-mfa",
    response_model=MfaResetOut,
    responses=NOT_FOUND,
    tags=["authenticators"],
)
async def reset_mfa(request: Request, actor: ActorDep, user_id: UserId) -> MfaResetOut:
    """Remove the user's second factor: TOTP authenticators, recovery codes and trusted
    browsers (passkeys stay). In `required` mode they enrol again at their next sign-in."""
    reset = await _authenticator_ops(request).reset_mfa(actor, now_s(), user_id)
    if reset is None:
        raise ApiError(404, "not_found", "no such user")
    return MfaResetOut(
        totp=reset.totp,
        recovery_codes=reset.recovery_codes,
        trusted_devices=reset.device_tokens,
    )


@router.delete(
    "/users/{user_id}/passkeys/{authenticator_id}",
    status_code=204,
    responses=NOT_FOUND,
    tags=["authenticators"],
)
async def remove_passkey(
    request: Request,
    actor: ActorDep,
    user_id: UserId,
    authenticator_id: Annotated[str, ID_PATH],
) -> Response:
    ops = _authenticator_ops(request)
    if await ops.remove_passkey(actor, now_s(), user_id, authenticator_id) is None:
        raise ApiError(404, "not_found", "no such passkey")
    return Response(status_code=204)


@router.get(
    "/users/{user_id}/identities",
    response_model=IdentitiesOut,
    responses=NOT_FOUND,
    tags=["identities"],
)
async def list_identities(request: Request, actor: ActorDep, user_id: UserId) -> IdentitiesOut:
    """The user's linked accounts at upstream identity providers ("Continue with ...")."""
    found = await _identity_ops(request).describe(user_id)
    if found is None:
        raise ApiError(404, "not_found", "no such user")
    return IdentitiesOut(**found)


@router.delete(
    "/users/{user_id}/identities/{identity_id}",
    status_code=204,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "the user's last way to sign in"},
    },
    tags=["identities"],
)
async def unlink_identity(
    request: Request,
    actor: ActorDep,
    user_id: UserId,
    identity_id: Annotated[str, ID_PATH],
    force: bool = False,
) -> Response:
    """Unlink one of the user's identities. Refused (409) when it is the user's last way to
    sign in (no password, passkey or other identity), unless `force=true`."""
    ops = _identity_ops(request)
    try:
        removed = await ops.unlink(actor, now_s(), user_id, identity_id, force=force)
    except LastSignInMethod:
        raise ApiError(
            409, "last_sign_in_method", "this is the user's last way to sign in"
        ) from None
    if removed is None:
        raise ApiError(404, "not_found", "no such identity")
    return Response(status_code=204)


@router.get(
    "/sessions/{session_id}", response_model=SessionOut, responses=NOT_FOUND, tags=["sessions"]
)
async def get_session(
    request: Request, actor: ActorDep, session_id: Annotated[str, ID_PATH]
) -> SessionOut:
    state = _state(request)
    found = await state.admin.get_session(session_id)
    if found is None:
        raise ApiError(404, "not_found", "no such session")
    return SessionOut(**session_json(found, state.config))


@router.delete("/sessions/{session_id}", status_code=204, responses=NOT_FOUND, tags=["sessions"])
async def revoke_session(
    request: Request, actor: ActorDep, session_id: Annotated[str, ID_PATH]
) -> Response:
    """Revoke one session: its refresh token, access tokens and cookie stop working at once."""
    if await _ops(request).revoke_session(actor, now_s(), session_id) is None:
        raise ApiError(404, "not_found", "no such session")
    return Response(status_code=204)


@router.get("/audit-log", response_model=AuditPage, responses=ERRORS, tags=["audit"])
async def audit_log(
    request: Request,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    target_id: Annotated[str | None, Query(max_length=200)] = None,
    actor_id: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    """Admin actions, newest first; page with `next_cursor`."""
    entries, nxt = await _state(request).admin.list_audit(
        limit=limit, before=cursor, target_id=target_id, actor_id=actor_id, action=action
    )
    return AuditPage(entries=[AuditOut(**audit_json(e)) for e in entries], next_cursor=nxt)


def validation_error_body(exc: RequestValidationError) -> dict[str, Any]:
    """FastAPI's 422 without the offending input (``input``, ``ctx``, ``url``): it echoed
    whatever was sent, a password included. Where and what kind of error, nothing more."""
    detail = [
        {
            "loc": [str(part) for part in error.get("loc", ())][:10],
            "msg": str(error.get("msg", ""))[:200],
            "type": str(error.get("type", ""))[:64],
        }
        for error in exc.errors()[:20]
    ]
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"][1:] or first["loc"])
    return {
        "error": "invalid_request",
        "error_description": f"{where}: {first['msg']}" if where else str(first["msg"]),
        "detail": detail,
    }


class WithState:
    """Mounted inside the server's Starlette app: hands the FastAPI app the server's state
    (``request.app`` is the FastAPI app there, not the server) and checks the admin API key
    first, so that a caller without one learns nothing, not even how its input was malformed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: ServerState = scope["app"].state.authgear
        scope[STATE_KEY] = state
        path = scope["path"][len(scope.get("root_path", "")) :]
        if path not in PUBLIC_PATHS:
            actor = await _authenticate(state, scope)
            if actor is None:
                await _unauthorized()(scope, receive, send)
                return
            scope[ACTOR_KEY] = actor
        if scope["method"] not in ("GET", "HEAD"):
            body = await read_capped_body(scope, receive, MAX_BODY_BYTES)
            if body is None:
                await _too_large()(scope, receive, send)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def read_capped_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body if it is at most ``limit`` bytes, else None, read no further
    than the limit: a declared Content-Length over it is refused before reading anything, and
    a chunked body is refused at the first chunk past it. (FastAPI would read any body whole.)
    """
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            return None
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client left; the app will see the disconnect
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            break
    return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _too_large() -> Response:
    return JSONResponse(
        {
            "error": "invalid_request",
            "error_description": f"the request body is larger than {MAX_BODY_BYTES} bytes",
        },
        status_code=413,
        headers={**NO_STORE, "Connection": "close"},
    )


async def _authenticate(state: ServerState, scope: Scope) -> Actor | None:
    # Keys are 256-bit random secrets: guessing is hopeless, so failures are not rate limited.
    request = Request(scope)
    header = request.headers.get("authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    key = await state.admin.verify_key(value.strip(), now_s())
    if key is None:
        return None
    return Actor("api_key", key.id, key.name, client_ip(request, state.config.trusted_proxies))


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": "unauthorized", "error_description": "a valid admin API key is required"},
        status_code=401,
        headers={**NO_STORE, "WWW-Authenticate": 'Bearer realm="authgear-admin"'},
    )
