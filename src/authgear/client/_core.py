"""The sans-IO core of the client SDK.

It holds the session and makes every decision (is a refresh needed, what request to send,
what a response means for the session) but performs no I/O. Each operation is a generator
("flow") that yields effects -- an :class:`HTTPRequest` to send, a storage operation, or
:class:`Locked` (run a nested flow holding the storage lock) -- and receives their results,
like an httpx ``Auth.auth_flow``. The device authorization grant (RFC 8628) adds two more:
:class:`ShowDeviceCode` (hand the user code to the application) and :class:`Sleep` (wait
before the next poll), so its polling loop runs unchanged in both drivers and, with a fake
clock, in tests. A driver throws the exception of a failed effect back
into the flow. The sync :class:`Authgear` and the async :class:`AsyncAuthgear` are thin
drivers of the same flows; they add only the locks and the transport.

:func:`bearer_flow` is the one place that decides "401 -> refresh -> retry" for requests to
the application's own servers (``fetch`` and every adapter drive it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeGuard, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt

from authgear._version import __version__
from authgear.client._errors import (
    AuthgearError,
    CannotReauthenticateError,
    DeviceCodeExpiredError,
    DeviceFlowUnsupportedError,
    IDTokenError,
    NotConfiguredError,
    OAuthError,
    ServerError,
    StateMismatchError,
    TransientError,
    make_oauth_error,
)
from authgear.client._storage import StoredSession, check_container_name
from authgear.client._types import (
    AuthenticateResult,
    DeviceAuthorization,
    OIDCConfiguration,
    Page,
    SessionState,
    SessionStateChange,
    SessionStateChangeReason,
    UserInfo,
)

__all__ = [
    "DEFAULT_SCOPES",
    "DEVICE_CODE_GRANT_TYPE",
    "USER_AGENT",
    "BearerFlow",
    "DeleteStore",
    "Flow",
    "GetToken",
    "HTTPRequest",
    "HTTPResponse",
    "LoadStore",
    "Locked",
    "PendingAuthorization",
    "SaveStore",
    "SendWithToken",
    "SessionCore",
    "ShowDeviceCode",
    "Sleep",
    "bearer_flow",
    "is_bearer_challenge",
    "storage_key",
]

logger = logging.getLogger("authgear.client")

T = TypeVar("T")

DEFAULT_SCOPES = ("openid", "offline_access", "https://authgear.com/scopes/full-access")
USER_AGENT = f"authgear-python/{__version__}"
REFRESH_RATIO = 0.9
ID_TOKEN_LEEWAY = 60.0
# Authgear's ID tokens live 5 minutes; one older than that is refreshed before it is sent as
# an id_token_hint (Authgear's docs: refresh the ID token before reauthenticating).
ID_TOKEN_LIFETIME = 300.0
CAN_REAUTHENTICATE_CLAIM = "https://authgear.com/claims/user/can_reauthenticate"
DEVICE_CODE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_POLL_INTERVAL = 5.0  # RFC 8628 section 3.2: when the server names none
MIN_POLL_INTERVAL = 1.0  # never hammer a server that answers interval 0
SLOW_DOWN_STEP = 5.0  # RFC 8628 section 3.5
MAX_BACKOFF_INTERVAL = 60.0  # after network errors, 5xx and 429


# --- effects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None

    def __repr__(self) -> str:  # bodies and headers may hold tokens
        return f"HTTPRequest({self.method} {self.url})"


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status_code: int
    headers: Mapping[str, str]  # keys lower-cased
    content: bytes

    def __repr__(self) -> str:
        return f"HTTPResponse({self.status_code})"


@dataclass(frozen=True, slots=True)
class LoadStore:
    """Read the session stored under ``key``; the driver sends back ``StoredSession | None``."""

    key: str


@dataclass(frozen=True, slots=True)
class SaveStore:
    key: str
    record: StoredSession


@dataclass(frozen=True, slots=True)
class DeleteStore:
    """Delete the session stored under ``key``."""

    key: str


@dataclass(frozen=True, slots=True)
class Locked(Generic[T]):
    """Run ``flow`` holding the driver's in-process lock and the storage lock of ``key``
    (cross-process); the driver sends back the flow's result or throws its exception."""

    key: str
    flow: Generator[Any, Any, T]


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` before going on (the device flow's polling interval); the driver
    sends back ``None``, or throws ``CancelError`` when the sign-in is cancelled."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ShowDeviceCode:
    """Give the application the user code and verification URI to show (RFC 8628 3.3)."""

    authorization: DeviceAuthorization


Effect = HTTPRequest | LoadStore | SaveStore | DeleteStore | Locked[Any] | Sleep | ShowDeviceCode
Flow = Generator[Effect, Any, T]


@dataclass(frozen=True, slots=True)
class GetToken:
    """Effect of :func:`bearer_flow`: the driver sends back the SDK's access token (refreshed
    if needed; ``None`` without a session). ``rejected`` is a token the resource server
    refused: the SDK refreshes past it (once, however many callers saw it refused)."""

    rejected: str | None = None


@dataclass(frozen=True, slots=True)
class SendWithToken:
    """Effect of :func:`bearer_flow`: send the application's request with
    ``Authorization: Bearer <token>`` (no header change when ``token`` is ``None``); the
    driver sends back ``(status_code, WWW-Authenticate value or None)``."""

    token: str | None = field(repr=False)


BearerFlow = Generator[GetToken | SendWithToken, Any, None]


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """What ``make_authorize_url`` remembers until ``finish_authentication``."""

    state: str
    nonce: str
    code_verifier: str = field(repr=False)
    redirect_uri: str
    x_state: str | None = None
    reauth: Reauthentication | None = None


@dataclass(frozen=True, slots=True)
class Reauthentication:
    """What a reauthentication request must get back: the same user (``sub``), signed in
    no earlier than ``max_age`` seconds before ``started_at`` (less the clock leeway)."""

    sub: str
    started_at: float
    max_age: int


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    """A device authorization response: the secret ``device_code`` the SDK polls with and
    what the user is shown."""

    device_code: str = field(repr=False)
    authorization: DeviceAuthorization


# --- helpers -------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _form(fields: Mapping[str, str]) -> tuple[tuple[tuple[str, str], ...], bytes]:
    headers = (
        ("content-type", "application/x-www-form-urlencoded"),
        ("accept", "application/json"),
        ("user-agent", USER_AGENT),
    )
    return headers, urlencode(fields).encode("ascii")


_GET_JSON = (("accept", "application/json"), ("user-agent", USER_AGENT))


def _normalize_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint.rstrip("/"))
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def storage_key(name: str, endpoint: str, client_id: str) -> str:
    """``<name>.<16 hex digits>``: the name the application chose, plus a digest of the
    endpoint and client id, so that the same name used with two servers (or by an app and
    ``authgear login``) keeps two sessions instead of sending one server's tokens to the
    other."""
    digest = hashlib.sha256(f"{_normalize_endpoint(endpoint)}\n{client_id}".encode()).hexdigest()
    return f"{check_container_name(name)}.{digest[:16]}"


def bearer_flow(replayable: bool) -> BearerFlow:
    """The one rule for requests to the application's servers: send with the current token;
    on a 401 whose Bearer challenge says the token was bad (RFC 6750 section 3.1), and when
    the body can be sent again, refresh past that token once and retry once. A refresh that
    yields no new token (session ended, or nothing new) returns the 401 as it is."""
    token = yield GetToken()
    status, challenge = yield SendWithToken(token)
    if token is None or not replayable or not is_bearer_challenge(status, challenge):
        return
    new = yield GetToken(rejected=token)
    if new is None or new == token:
        return
    yield SendWithToken(new)


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _parse_json(resp: HTTPResponse, what: str) -> Any:
    try:
        return json.loads(resp.content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        ctype = resp.headers.get("content-type", "no content type")
        raise ServerError(
            f"{what} answered HTTP {resp.status_code} with a body that is not JSON ({ctype})",
            status_code=resp.status_code,
        ) from None


def _www_authenticate_params(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    rest = value.strip()
    if " " in rest:
        rest = rest.split(" ", 1)[1]
    else:
        return params
    i = 0
    n = len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            i += 1
            buf = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(rest[i])
                i += 1
            i += 1
            params[key] = "".join(buf)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[key] = rest[i:end].strip()
            i = end
    return params


def is_bearer_challenge(status_code: int, www_authenticate: str | None) -> bool:
    """True for a 401 whose challenge says the Bearer token itself was bad (RFC 6750 3.1):
    worth one refresh and one retry. Not for ``insufficient_scope`` or ``invalid_request``."""
    if status_code != 401 or not www_authenticate:
        return False
    if not www_authenticate.lstrip().lower().startswith("bearer"):
        return False
    error = _www_authenticate_params(www_authenticate).get("error")
    return error not in {"insufficient_scope", "invalid_request"}


def _expires_in(value: object, what: str) -> float:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ServerError(
            f"{what} answered without a usable expires_in ({value!r}); "
            "the SDK cannot tell when to refresh"
        )
    return float(value)


def _raise_for_error(resp: HTTPResponse, what: str) -> None:
    status = resp.status_code
    if 200 <= status < 300:
        return
    try:
        body = json.loads(resp.content.decode("utf-8")) if resp.content else None
    except (ValueError, UnicodeDecodeError):
        body = None
    oauth: OAuthError | None = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        desc = body.get("error_description")
        uri = body.get("error_uri")
        oauth = make_oauth_error(
            body["error"],
            desc if isinstance(desc, str) else None,
            uri if isinstance(uri, str) else None,
            status_code=status,
        )
    elif status == 401 and resp.headers.get("www-authenticate"):
        params = _www_authenticate_params(resp.headers["www-authenticate"])
        if "error" in params:
            oauth = make_oauth_error(
                params["error"],
                params.get("error_description"),
                params.get("error_uri"),
                status_code=status,
            )
    if status == 429 or status >= 500:
        detail = f" ({oauth})" if oauth is not None else ""
        raise TransientError(f"{what} answered HTTP {status}{detail}", status_code=status)
    if oauth is not None:
        raise oauth
    ctype = resp.headers.get("content-type", "no content type")
    raise ServerError(
        f"{what} answered HTTP {status} without an OAuth error body ({ctype})",
        status_code=status,
    )


def _json_object(resp: HTTPResponse, what: str) -> dict[str, Any]:
    """The JSON object of a successful answer (an OAuth error raises)."""
    _raise_for_error(resp, what)
    body = _parse_json(resp, what)
    if not isinstance(body, dict):
        raise ServerError(f"{what} answered a JSON value that is not an object")
    return body


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unverified_claims(id_token: str | None) -> dict[str, Any]:
    if not id_token:
        return {}
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _check_reauthentication(claims: Mapping[str, Any], reauth: Reauthentication) -> None:
    """The new ID token is for the same user and shows a sign-in recent enough for
    ``max_age`` (OIDC Core 3.1.2.1 makes ``auth_time`` required when max_age is sent)."""
    if claims.get("sub") != reauth.sub:
        raise IDTokenError(
            "the reauthentication signed in another user; the session was left unchanged"
        )
    auth_time = claims.get("auth_time")
    if not _is_number(auth_time):
        raise IDTokenError("the reauthenticated ID token has no auth_time (required with max_age)")
    oldest = reauth.started_at - reauth.max_age - ID_TOKEN_LEEWAY
    if auth_time < oldest:
        age = reauth.started_at - auth_time
        raise IDTokenError(
            f"the server did not sign the user in again: auth_time is {age:.0f} s before the "
            f"request, more than max_age {reauth.max_age} s (+{ID_TOKEN_LEEWAY:.0f} s leeway)"
        )


def _printable(value: object) -> bool:
    """No control characters: the user code and URIs go to a terminal, where escape
    sequences from a hostile server could rewrite what the user sees."""
    return isinstance(value, str) and bool(value) and value.isprintable()


def _http_url(value: object) -> bool:
    return _printable(value) and urlsplit(str(value)).scheme in {"http", "https"}


def _device_grant(resp: HTTPResponse, now: float) -> DeviceGrant:
    """Read a device authorization response (RFC 8628 3.2)."""
    what = "device authorization endpoint"
    body = _json_object(resp, what)
    device_code, user_code = body.get("device_code"), body.get("user_code")
    # "verification_url": the name in drafts of RFC 8628 that some servers still send
    uri = body.get("verification_uri", body.get("verification_url"))
    complete = body.get("verification_uri_complete")
    if not isinstance(device_code, str) or not device_code:
        raise ServerError(f"{what} answered without device_code")
    if not _printable(user_code):
        raise ServerError(f"{what} answered without a printable user_code")
    if not _http_url(uri):
        raise ServerError(f"{what} answered without an http(s) verification_uri")
    if complete is not None and not _http_url(complete):
        raise ServerError(f"{what} answered a verification_uri_complete that is not http(s)")
    expires_in = _expires_in(body.get("expires_in"), what)
    interval = body.get("interval", DEFAULT_POLL_INTERVAL)
    if not _is_number(interval) or interval < 0:
        raise ServerError(f"{what} answered an unusable interval ({interval!r})")
    return DeviceGrant(
        device_code=device_code,
        authorization=DeviceAuthorization(
            user_code=str(user_code),
            verification_uri=str(uri),
            verification_uri_complete=complete,
            expires_in=expires_in,
            expires_at=now + expires_in,
            interval=max(float(interval), MIN_POLL_INTERVAL),
        ),
    )


def _optional_authorize_params(
    page: str | None,
    prompt: str | list[str] | None,
    login_hint: str | None,
    ui_locales: str | list[str] | None,
    state: str | None,
) -> dict[str, str]:
    params: dict[str, str] = {}
    if page is not None:
        if page not in {"login", "signup"}:
            raise ValueError("page must be 'login' or 'signup'")
        params["x_page"] = page
    if prompt:
        params["prompt"] = prompt if isinstance(prompt, str) else " ".join(prompt)
    if login_hint:
        params["login_hint"] = login_hint
    if ui_locales:
        params["ui_locales"] = ui_locales if isinstance(ui_locales, str) else " ".join(ui_locales)
    if state is not None:
        params["x_state"] = state
    return params


# --- the core ------------------------------------------------------------------------------


def _id_token_header(id_token: str, config: OIDCConfiguration) -> tuple[str, Any]:
    """The ID token's ``alg`` (asymmetric, advertised by the server) and ``kid``."""
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as e:
        raise IDTokenError(f"the ID token is not a JWS: {e}") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg.startswith("HS"):
        raise IDTokenError(f"the ID token uses a refused algorithm {alg!r}")
    if alg not in config.id_token_signing_alg_values_supported:
        raise IDTokenError(f"the ID token algorithm {alg!r} is not advertised by the server")
    return alg, header.get("kid")


class SessionCore:
    """Session state and protocol decisions; no I/O (see the module docstring)."""

    def __init__(
        self,
        client_id: str,
        endpoint: str,
        *,
        name: str = "default",
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id:
            raise ValueError("client_id is required")
        parts = urlsplit(endpoint)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(
                f"endpoint must be an http(s) URL such as https://myapp.authgear.cloud, "
                f"got {endpoint!r}"
            )
        self.client_id = client_id
        self.endpoint = endpoint.rstrip("/")
        self.name = name
        self.storage_key = storage_key(name, self.endpoint, client_id)
        # Where sessions were kept before keys named the endpoint (migrated by configure).
        self.legacy_key = name
        self.scopes = scopes
        self.clock = clock
        self.configured = False
        self._session: StoredSession | None = None
        self._rejected_access_token: str | None = None
        self._state = SessionState.UNKNOWN
        self._reason: SessionStateChangeReason | None = None
        self._config: OIDCConfiguration | None = None
        self._jwks: dict[str, Any] | None = None
        self._events: deque[SessionStateChange] = deque()
        self._listeners: list[Callable[[SessionStateChange], object]] = []
        self._listeners_lock = threading.Lock()
        self._pending: dict[str, PendingAuthorization] = {}
        self._pending_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"SessionCore(client_id={self.client_id!r}, endpoint={self.endpoint!r}, "
            f"name={self.name!r}, state={self._state.value})"
        )

    # state and events

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def reason(self) -> SessionStateChangeReason | None:
        return self._reason

    @property
    def session(self) -> StoredSession | None:
        return self._session

    @property
    def access_token(self) -> str | None:
        s = self._session
        return s.access_token if s is not None else None

    def _set_state(self, state: SessionState, reason: SessionStateChangeReason) -> None:
        if state == self._state and reason == self._reason:
            return
        self._state = state
        self._reason = reason
        self._events.append(SessionStateChange(state, reason))

    def add_listener(self, listener: Callable[[SessionStateChange], object]) -> Callable[[], None]:
        with self._listeners_lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def dispatch_events(self) -> None:
        """Tell listeners of pending changes. Drivers call it outside their locks."""
        while True:
            try:
                change = self._events.popleft()
            except IndexError:
                return
            with self._listeners_lock:
                listeners = list(self._listeners)
            for listener in listeners:
                try:
                    listener(change)
                except Exception:
                    logger.exception("session state listener %r raised; ignored", listener)

    def require_configured(self) -> None:
        if not self.configured:
            raise NotConfiguredError(
                f"call configure() first (client_id={self.client_id!r}, "
                f"endpoint={self.endpoint!r}, name={self.name!r})"
            )

    def _own(self, record: StoredSession | None) -> StoredSession | None:
        """``record`` if it may be used here: a record bound to another endpoint or client id
        is treated as no session (never sent, never overwritten by a refresh)."""
        if record is None:
            return None
        if (record.endpoint is not None and record.endpoint != self.endpoint) or (
            record.client_id is not None and record.client_id != self.client_id
        ):
            logger.warning(
                "the session stored under %r belongs to %s (client %r), not %s (client %r); "
                "ignoring it",
                self.storage_key,
                record.endpoint,
                record.client_id,
                self.endpoint,
                self.client_id,
            )
            return None
        return record

    def _bind(self, record: StoredSession) -> StoredSession:
        return replace(record, endpoint=self.endpoint, client_id=self.client_id)

    def configure(self, record: StoredSession | None) -> None:
        self._session = record
        self._rejected_access_token = None
        self.configured = True
        if record is not None:
            self._set_state(SessionState.AUTHENTICATED, SessionStateChangeReason.FOUND_TOKEN)
        else:
            self._set_state(SessionState.NO_SESSION, SessionStateChangeReason.NO_TOKEN)

    def configure_flow(self) -> Flow[None]:
        """Read the stored session (no network). A session stored by an earlier version under
        the bare container name is moved to this client's key when its ID token says it was
        issued by this endpoint to this client; otherwise it is left alone."""
        record = self._own((yield LoadStore(self.storage_key)))
        if record is None:
            legacy: StoredSession | None = yield LoadStore(self.legacy_key)
            if legacy is not None and self._legacy_is_ours(legacy):
                record = yield Locked(self.storage_key, self._migrate_flow())
        self.configure(record)

    def _legacy_is_ours(self, record: StoredSession) -> bool:
        if record.endpoint is not None or record.client_id is not None:
            return self._own(record) is not None
        try:
            claims = jwt.decode(record.id_token or "", options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        iss, aud = claims.get("iss"), claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        ours = (
            isinstance(iss, str)
            and _normalize_endpoint(iss) == _normalize_endpoint(self.endpoint)
            and self.client_id in auds
        )
        if not ours:
            logger.info(
                "a session stored under the old key %r was issued by another server or client "
                "(or cannot tell); leaving it alone",
                self.legacy_key,
            )
        return ours

    def _migrate_flow(self) -> Flow[StoredSession | None]:
        current = self._own((yield LoadStore(self.storage_key)))
        if current is not None:  # another process migrated (or signed in) meanwhile
            return current
        legacy: StoredSession | None = yield LoadStore(self.legacy_key)
        if legacy is None or not self._legacy_is_ours(legacy):
            return None
        record = self._bind(legacy)
        yield SaveStore(self.storage_key, record)
        yield DeleteStore(self.legacy_key)
        logger.info("moved the session %r to the key %r", self.legacy_key, self.storage_key)
        return record

    def _adopt(self, record: StoredSession | None) -> None:
        """Take the record another thread or process stored as the truth."""
        record = self._own(record)
        if record is None:
            if self._session is not None:
                self._session = None
                self._rejected_access_token = None
                self._set_state(SessionState.NO_SESSION, SessionStateChangeReason.CLEAR)
            return
        if self._session is None:
            self._set_state(SessionState.AUTHENTICATED, SessionStateChangeReason.FOUND_TOKEN)
        self._session = record

    def _drop(self, reason: SessionStateChangeReason) -> None:
        self._session = None
        self._rejected_access_token = None
        self._set_state(SessionState.NO_SESSION, reason)

    # decisions

    def needs_refresh(self, now: float | None = None) -> bool:
        s = self._session
        if s is None:
            return False
        if s.access_token is None or s.refresh_after is None:
            return True
        if self._rejected_access_token is not None and s.access_token == (
            self._rejected_access_token
        ):
            return True
        return (self.clock() if now is None else now) >= s.refresh_after

    def mark_rejected(self, access_token: str | None) -> None:
        """A resource server refused ``access_token``: refresh even if it looks fresh."""
        if access_token is not None:
            self._rejected_access_token = access_token

    # flows

    def discovery_flow(self) -> Flow[OIDCConfiguration]:
        if self._config is not None:
            return self._config
        url = self.endpoint + "/.well-known/openid-configuration"
        resp: HTTPResponse = yield HTTPRequest("GET", url, _GET_JSON)
        if resp.status_code == 429 or resp.status_code >= 500:
            raise TransientError(
                f"discovery at {url} answered HTTP {resp.status_code}",
                status_code=resp.status_code,
            )
        if resp.status_code != 200:
            raise ServerError(
                f"discovery at {url} answered HTTP {resp.status_code}; is {self.endpoint} "
                "an Authgear endpoint?",
                status_code=resp.status_code,
            )
        config = OIDCConfiguration.from_document(_parse_json(resp, f"discovery at {url}"), url)
        self._config = config
        return config

    def _token_from_response(
        self,
        resp: HTTPResponse,
        what: str,
        now: float,
        previous: StoredSession | None,
    ) -> StoredSession:
        body = _json_object(resp, what)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ServerError(f"{what} answered without access_token")
        token_type = body.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ServerError(f"{what} answered token_type {token_type!r}, expected 'Bearer'")
        expires_in = _expires_in(body.get("expires_in"), what)
        refresh_token = body.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            if previous is None:
                raise ServerError(
                    f"{what} answered without refresh_token: the server did not grant "
                    "offline_access (with some servers, prompt='consent' is needed)"
                )
            refresh_token = previous.refresh_token
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            id_token = previous.id_token if previous is not None else None
        return StoredSession(
            refresh_token=refresh_token,
            access_token=access_token,
            expires_at=now + expires_in,
            refresh_after=now + REFRESH_RATIO * expires_in,
            id_token=id_token,
            endpoint=self.endpoint,
            client_id=self.client_id,
        )

    # refresh

    def refresh_if_needed_flow(self, rejected: str | None = None) -> Flow[str | None]:
        """The access token, refreshed first when it is missing, past 0.9 x its lifetime, or
        ``rejected`` (refused by a resource server). Takes the storage lock only to refresh;
        callers waiting on the lock reuse the refresh of whoever held it."""
        self.require_configured()
        if rejected is not None:
            self.mark_rejected(rejected)
        if self.needs_refresh():
            yield Locked(self.storage_key, self._refresh_if_still_needed())
        return self.access_token

    def _refresh_if_still_needed(self) -> Flow[None]:
        if self.needs_refresh():  # another thread of this process may have refreshed already
            yield from self.refresh_flow()

    def refresh_flow(self, needed: Callable[[], bool] | None = None) -> Flow[None]:
        """Run with the storage lock held. Re-reads the store first (another thread or process
        may have refreshed already), refreshes when still ``needed`` (default: the access
        token is due), and on ``invalid_grant`` re-reads the store before clearing, so losing
        a race never logs the user out."""
        needed = needed if needed is not None else self.needs_refresh
        self._adopt((yield LoadStore(self.storage_key)))
        for _attempt in range(2):
            if self._session is None or not needed():
                return
            session = self._session
            assert session is not None
            config = yield from self.discovery_flow()
            now = self.clock()
            headers, body = _form(
                {
                    "grant_type": "refresh_token",
                    "client_id": self.client_id,
                    "refresh_token": session.refresh_token,
                }
            )
            logger.debug(
                "refreshing the access token of %r at %s", self.name, config.token_endpoint
            )
            resp: HTTPResponse = yield HTTPRequest("POST", config.token_endpoint, headers, body)
            try:
                record = self._token_from_response(resp, "token endpoint", now, session)
            except OAuthError as e:
                if e.error != "invalid_grant":
                    raise
                latest = self._own((yield LoadStore(self.storage_key)))
                if latest is not None and latest.refresh_token != session.refresh_token:
                    logger.info("refresh token was replaced by another holder of the store")
                    self._adopt(latest)
                    continue
                logger.info("refresh token is no longer valid; session cleared")
                yield DeleteStore(self.storage_key)
                self._drop(SessionStateChangeReason.INVALID)
                return
            # Memory first: if the store cannot be written (disk full, keyring error), this
            # process still holds the rotated token instead of reusing the old one.
            self._session = record
            self._rejected_access_token = None
            logger.debug(
                "refreshed the access token of %r (expires in %.0f s)",
                self.name,
                (record.expires_at or now) - now,
            )
            yield SaveStore(self.storage_key, record)
            return

    def invalidate_flow(self, used_refresh_token: str) -> Flow[None]:
        """The server said the session behind ``used_refresh_token`` is invalid."""
        latest = self._own((yield LoadStore(self.storage_key)))
        if latest is not None and latest.refresh_token != used_refresh_token:
            self._adopt(latest)
            return
        if self._session is not None and self._session.refresh_token != used_refresh_token:
            return
        yield DeleteStore(self.storage_key)
        self._drop(SessionStateChangeReason.INVALID)

    # ending a session

    def clear_flow(self) -> Flow[None]:
        """Forget the session locally: ``NO_SESSION``, reason ``CLEAR``."""
        self.require_configured()
        yield Locked(self.storage_key, self._clear_locked())

    def _clear_locked(self) -> Flow[None]:
        yield DeleteStore(self.storage_key)
        self._drop(SessionStateChangeReason.CLEAR)

    def logout_flow(self, force: bool) -> Flow[None]:
        """Revoke the refresh token (RFC 7009), then clear (``LOGOUT``); a failed revocation
        raises and keeps the session unless ``force``."""
        self.require_configured()
        yield Locked(self.storage_key, self._logout_locked(force))

    def _logout_locked(self, force: bool) -> Flow[None]:
        session = self._own((yield LoadStore(self.storage_key))) or self._session
        if session is not None:
            try:
                config = yield from self.discovery_flow()
                headers, body = _form({"token": session.refresh_token, "client_id": self.client_id})
                resp: HTTPResponse = yield HTTPRequest(
                    "POST", config.revocation_endpoint, headers, body
                )
                _raise_for_error(resp, "revocation endpoint")
            except AuthgearError:
                if not force:
                    raise
                logger.warning("revoking the refresh token failed; clearing the session anyway")
        yield DeleteStore(self.storage_key)
        self._drop(SessionStateChangeReason.LOGOUT)

    # user info

    def fetch_user_info_flow(self) -> Flow[UserInfo]:
        """Refresh if needed, then GET userinfo. A 401 ``invalid_grant`` clears the session
        (``INVALID``) and raises :class:`OAuthError`."""
        yield from self.refresh_if_needed_flow()
        session = self._session
        try:
            return (yield from self.userinfo_flow())
        except OAuthError as e:
            if e.error == "invalid_grant" and session is not None:
                yield Locked(self.storage_key, self.invalidate_flow(session.refresh_token))
            raise

    def userinfo_flow(self) -> Flow[UserInfo]:
        config = yield from self.discovery_flow()
        headers: tuple[tuple[str, str], ...] = _GET_JSON
        token = self.access_token
        if token is not None:
            headers += (("authorization", f"Bearer {token}"),)
        resp: HTTPResponse = yield HTTPRequest("GET", config.userinfo_endpoint, headers)
        _raise_for_error(resp, "userinfo endpoint")
        return UserInfo.from_claims(_parse_json(resp, "userinfo endpoint"))

    # authorization code flow

    def authorize_flow(
        self,
        redirect_uri: str,
        *,
        page: Page | None = None,
        prompt: str | list[str] | None = None,
        login_hint: str | None = None,
        ui_locales: str | list[str] | None = None,
        state: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        reauth: Reauthentication | None = None,
    ) -> Flow[str]:
        """The authorization URL (PKCE S256, state, nonce). The request is remembered until
        :meth:`finish_authentication_flow` sees its redirect. A ``reauth`` request asks for
        no ``offline_access``: it must not start a new session (as Authgear's SDKs do)."""
        self.require_configured()
        config = yield from self.discovery_flow()
        verifier = secrets.token_urlsafe(48)
        pending = PendingAuthorization(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            code_verifier=verifier,
            redirect_uri=redirect_uri,
            x_state=state,
            reauth=reauth,
        )
        scopes = self.scopes if reauth is None else self.reauthenticate_scopes
        params: dict[str, str] = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
            "code_challenge_method": "S256",
        }
        params.update(_optional_authorize_params(page, prompt, login_hint, ui_locales, state))
        if extra_params:
            params.update(extra_params)
        parts = urlsplit(config.authorization_endpoint)
        query = parts.query + ("&" if parts.query else "") + urlencode(params)
        with self._pending_lock:
            self._pending[pending.state] = pending
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))

    def finish_authentication_flow(self, callback_url: str) -> Flow[AuthenticateResult]:
        """Check the redirect's state against the requests :meth:`authorize_flow` made (each
        is used once), then exchange the code under the storage lock."""
        self.require_configured()
        params = self.parse_callback(callback_url)
        with self._pending_lock:
            pending = self.check_state(self._pending, params)
            del self._pending[pending.state]
        result: AuthenticateResult = yield Locked(
            self.storage_key, self.finish_flow(pending, params)
        )
        return result

    @staticmethod
    def parse_callback(callback_url: str) -> dict[str, str]:
        parts = urlsplit(callback_url)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if not params and parts.fragment:
            params = dict(parse_qsl(parts.fragment, keep_blank_values=True))
        return params

    def finish_flow(
        self, pending: PendingAuthorization, params: Mapping[str, str]
    ) -> Flow[AuthenticateResult]:
        """Run with the storage lock held. ``params`` are the callback's query parameters and
        their ``state`` already matched ``pending``."""
        if "error" in params:
            raise make_oauth_error(
                params["error"], params.get("error_description"), params.get("error_uri")
            )
        code = params.get("code")
        if not code:
            raise ServerError("the authorization response has neither code nor error")
        config = yield from self.discovery_flow()
        iss = params.get("iss")
        if iss is None and config.authorization_response_iss_parameter_supported:
            # RFC 9207 §2.4: a server that advertises `iss` always sends it; a response without
            # it may come from another server (mix-up attack).
            raise AuthgearError(
                "the authorization response has no issuer (iss), which this server always "
                "sends (RFC 9207)"
            )
        if iss is not None and iss != config.issuer:
            raise AuthgearError(
                f"the authorization response came from issuer {iss!r}, expected "
                f"{config.issuer!r} (RFC 9207)"
            )
        now = self.clock()
        headers, body = _form(
            {
                "grant_type": "authorization_code",
                "client_id": self.client_id,
                "code": code,
                "redirect_uri": pending.redirect_uri,
                "code_verifier": pending.code_verifier,
            }
        )
        resp: HTTPResponse = yield HTTPRequest("POST", config.token_endpoint, headers, body)
        if pending.reauth is not None:
            return (yield from self._finish_reauthentication(resp, pending, pending.reauth, config))
        record = self._token_from_response(resp, "token endpoint", now, None)
        return (yield from self._store_new_session(record, pending.nonce, config, pending.x_state))

    def _store_new_session(
        self,
        record: StoredSession,
        nonce: str | None,
        config: OIDCConfiguration,
        x_state: str | None,
    ) -> Flow[AuthenticateResult]:
        """Run with the storage lock held: verify the new session's ID token, then store it
        (``AUTHENTICATED``). Nothing is stored when verification fails."""
        if record.id_token is None:
            raise IDTokenError("the token response has no id_token (was 'openid' granted?)")
        claims = yield from self._verify_id_token(record.id_token, nonce, config)
        yield SaveStore(self.storage_key, record)
        self._session = record
        self._rejected_access_token = None
        self._set_state(SessionState.AUTHENTICATED, SessionStateChangeReason.AUTHENTICATED)
        return AuthenticateResult(sub=str(claims["sub"]), id_token_claims=claims, state=x_state)

    # reauthentication

    @property
    def reauthenticate_scopes(self) -> tuple[str, ...]:
        """The scopes of a reauthentication request: the sign-in scopes without
        ``offline_access`` (no new refresh token, no new session)."""
        return tuple(s for s in self.scopes if s != "offline_access")

    def id_token_claims(self) -> dict[str, Any]:
        """The current ID token's claims, read without verification: it was verified when
        the session began, and later ones came straight from the token endpoint over the
        connection the SDK opened (OIDC Core 3.1.3.7)."""
        s = self._session
        return _unverified_claims(s.id_token) if s is not None else {}

    def _id_token_is_stale(self) -> bool:
        """Past its lifetime, or within a minute of it: the hint must still be valid when the
        browser reaches the server (Authgear runs its reauthentication flow only then)."""
        s = self._session
        if s is None:
            return False
        claims = _unverified_claims(s.id_token)
        now = self.clock() + ID_TOKEN_LEEWAY
        exp, iat = claims.get("exp"), claims.get("iat")
        if _is_number(exp):
            return now >= exp
        return not _is_number(iat) or now - iat >= ID_TOKEN_LIFETIME

    def refresh_id_token_flow(self, *, only_if_stale: bool = False) -> Flow[None]:
        """A refresh grant for a new ID token (the server's refresh response carries one, OIDC
        Core 12.2), under the storage lock; the session keeps its old ID token when the server
        sends none. ``only_if_stale``: only when the ID token is past its 5-minute lifetime."""
        self.require_configured()
        if self._session is None or (only_if_stale and not self._id_token_is_stale()):
            return
        before = self._session.id_token
        needed = self._id_token_is_stale if only_if_stale else lambda: True
        yield Locked(self.storage_key, self.refresh_flow(needed))
        s = self._session
        if s is not None and s.id_token == before:
            logger.debug("the refresh of %r brought no new ID token", self.name)

    def reauthorize_flow(
        self,
        redirect_uri: str,
        *,
        max_age: int = 0,
        ui_locales: str | list[str] | None = None,
        prompt: str | list[str] | None = None,
        state: str | None = None,
        extra_params: Mapping[str, str] | None = None,
    ) -> Flow[str]:
        """The authorization URL of a reauthentication (Authgear's ``startReauthentication``):
        ``max_age`` and the current ID token as ``id_token_hint``, refreshed first when it is
        past its lifetime. Raises :class:`CannotReauthenticateError` (sending nothing) when
        there is no session or the ID token says the user cannot reauthenticate."""
        self.require_configured()
        if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
            raise ValueError("max_age must be a whole number of seconds, 0 or more")
        if self._session is None:
            raise CannotReauthenticateError("not signed in: there is no one to reauthenticate")
        yield from self.refresh_id_token_flow(only_if_stale=True)
        session = self._session
        if session is None:
            raise CannotReauthenticateError("the session ended: sign in again instead")
        claims = _unverified_claims(session.id_token)
        sub = claims.get("sub")
        if session.id_token is None or not isinstance(sub, str):
            raise CannotReauthenticateError("the session has no ID token to reauthenticate with")
        if claims.get(CAN_REAUTHENTICATE_CLAIM) is not True:
            raise CannotReauthenticateError(
                "this user cannot reauthenticate (the ID token's can_reauthenticate claim is "
                "not true, e.g. the user has no password or passkey)"
            )
        params = {"max_age": str(max_age), "id_token_hint": session.id_token}
        params.update(extra_params or {})
        reauth = Reauthentication(sub=sub, started_at=self.clock(), max_age=max_age)
        return (
            yield from self.authorize_flow(
                redirect_uri,
                prompt=prompt,
                ui_locales=ui_locales,
                state=state,
                extra_params=params,
                reauth=reauth,
            )
        )

    def _finish_reauthentication(
        self,
        resp: HTTPResponse,
        pending: PendingAuthorization,
        reauth: Reauthentication,
        config: OIDCConfiguration,
    ) -> Flow[AuthenticateResult]:
        """Run with the storage lock held, after the code exchange: the new ID token must be
        valid, for the same user, and show a sign-in at or after the request (``auth_time``).
        Only the stored ID token changes: the refresh token and the session stay."""
        body = _json_object(resp, "token endpoint")
        id_token = body.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise IDTokenError("the token response has no id_token (was 'openid' granted?)")
        stray = body.get("refresh_token")
        if isinstance(stray, str) and stray:
            # The request asked for no offline_access; a server that still starts a session
            # gets it revoked instead of leaving it orphaned.
            yield from self._revoke_quietly(config, stray)
        claims = yield from self._verify_id_token(id_token, pending.nonce, config)
        _check_reauthentication(claims, reauth)
        current = self._own((yield LoadStore(self.storage_key)))
        if current is None or _unverified_claims(current.id_token).get("sub") != reauth.sub:
            raise CannotReauthenticateError(
                "the session ended or changed while reauthenticating; nothing was stored"
            )
        record = replace(current, id_token=id_token)
        yield SaveStore(self.storage_key, record)
        self._session = record
        return AuthenticateResult(sub=reauth.sub, id_token_claims=claims, state=pending.x_state)

    def _revoke_quietly(self, config: OIDCConfiguration, refresh_token: str) -> Flow[None]:
        headers, body = _form({"token": refresh_token, "client_id": self.client_id})
        try:
            resp: HTTPResponse = yield HTTPRequest(
                "POST", config.revocation_endpoint, headers, body
            )
            _raise_for_error(resp, "revocation endpoint")
        except AuthgearError as e:
            logger.warning("could not revoke an unexpected refresh token: %s", e)

    # device authorization grant (RFC 8628)

    def device_flow(self) -> Flow[AuthenticateResult]:
        """Sign in on another device: ask for a device code (same scopes as the browser
        sign-in), show the user code, poll the token endpoint every ``interval`` seconds
        (5 s more after each ``slow_down``, doubled after network errors, 5xx and 429) until
        the user approves, denies (:class:`AccessDeniedError`) or the code expires
        (:class:`DeviceCodeExpiredError`); then store the session like a browser sign-in.
        Each poll runs under the storage lock, so an approval is stored whole or not at all."""
        self.require_configured()
        config = yield from self.discovery_flow()
        endpoint = config.device_authorization_endpoint
        if endpoint is None:
            raise DeviceFlowUnsupportedError(
                f"{self.endpoint} offers no device sign-in (its discovery document has no "
                "device_authorization_endpoint); sign in through a browser"
            )
        now = self.clock()
        headers, body = _form({"client_id": self.client_id, "scope": " ".join(self.scopes)})
        resp: HTTPResponse = yield HTTPRequest("POST", endpoint, headers, body)
        grant = _device_grant(resp, now)
        yield ShowDeviceCode(grant.authorization)
        return (yield from self._poll_device_flow(config, grant))

    def _poll_device_flow(
        self, config: OIDCConfiguration, grant: DeviceGrant
    ) -> Flow[AuthenticateResult]:
        expires_at = grant.authorization.expires_at
        interval = grant.authorization.interval
        while True:
            yield Sleep(max(0.0, min(interval, expires_at - self.clock())))
            if self.clock() >= expires_at:
                raise DeviceCodeExpiredError(
                    "expired_token", "the code expired before the sign-in was approved"
                )
            try:
                result: AuthenticateResult = yield Locked(
                    self.storage_key, self._device_token_flow(config, grant.device_code)
                )
            except OAuthError as e:
                if e.error == "authorization_pending":
                    continue
                if e.error == "slow_down":
                    interval += SLOW_DOWN_STEP
                    logger.debug("the server asked to slow down: polling every %.0f s", interval)
                    continue
                raise
            except TransientError as e:
                # RFC 8628 3.5: back off on connection trouble instead of giving up.
                interval = min(max(interval * 2, interval + 1), MAX_BACKOFF_INTERVAL)
                logger.debug("polling failed (%s); next poll in %.0f s", e, interval)
                continue
            return result

    def _device_token_flow(
        self, config: OIDCConfiguration, device_code: str
    ) -> Flow[AuthenticateResult]:
        now = self.clock()
        headers, body = _form(
            {
                "grant_type": DEVICE_CODE_GRANT_TYPE,
                "device_code": device_code,
                "client_id": self.client_id,
            }
        )
        resp: HTTPResponse = yield HTTPRequest("POST", config.token_endpoint, headers, body)
        record = self._token_from_response(resp, "token endpoint", now, None)
        return (yield from self._store_new_session(record, None, config, None))

    def _jwks_flow(self, config: OIDCConfiguration, refetch: bool) -> Flow[dict[str, Any]]:
        if self._jwks is not None and not refetch:
            return self._jwks
        resp: HTTPResponse = yield HTTPRequest("GET", config.jwks_uri, _GET_JSON)
        _raise_for_error(resp, "JWKS endpoint")
        doc = _parse_json(resp, "JWKS endpoint")
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ServerError(f"the JWKS at {config.jwks_uri} has no 'keys' list")
        self._jwks = doc
        return doc

    def _verify_id_token(
        self, id_token: str, nonce: str | None, config: OIDCConfiguration
    ) -> Flow[dict[str, Any]]:
        """Signature (JWKS, refetched once for an unknown key), ``iss``, ``aud``, ``exp``,
        ``iat``, and ``nonce`` when one was sent (the device grant sends none)."""
        alg, kid = _id_token_header(id_token, config)
        key: jwt.PyJWK | None = None
        for refetch in (False, True):
            jwks = yield from self._jwks_flow(config, refetch)
            candidates = [
                k
                for k in jwks["keys"]
                if isinstance(k, dict)
                and (kid is None or k.get("kid") == kid)
                and k.get("use", "sig") == "sig"
            ]
            if len(candidates) == 1 or (kid is not None and candidates):
                try:
                    key = jwt.PyJWK(candidates[0], algorithm=alg)
                except jwt.PyJWTError as e:
                    raise IDTokenError(f"the signing key is unusable: {e}") from None
                break
        if key is None:
            raise IDTokenError(f"no key in the JWKS matches the ID token (kid {kid!r})")
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=key,
                algorithms=[alg],
                audience=self.client_id,
                issuer=config.issuer,
                leeway=ID_TOKEN_LEEWAY,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise IDTokenError(f"the ID token failed verification: {e}") from None
        got = claims.get("nonce")
        if nonce is None:
            return claims
        if not isinstance(got, str) or not hmac.compare_digest(got, nonce):
            raise IDTokenError("the ID token nonce does not match the one sent")
        return claims

    def check_state(
        self, pending: Mapping[str, PendingAuthorization], params: Mapping[str, str]
    ) -> PendingAuthorization:
        state = params.get("state")
        if not state:
            raise StateMismatchError("the redirect carries no state parameter")
        for key, candidate in pending.items():
            if hmac.compare_digest(key, state):
                return candidate
        raise StateMismatchError(
            "the redirect's state was not issued by this SDK instance, or was already used"
        )


def strip_query(url: str) -> str:
    return _strip_query(url)
