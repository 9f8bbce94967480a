"""Django middleware and view decorators (sync and async).

settings.py::

    MIDDLEWARE = [..., "authgear.backend.django.AuthgearMiddleware"]
    AUTHGEAR = {
        "MODE": "jwt",                    # or "resolver", or "proxy" (+ "TRUSTED_PROXIES")
        "ENDPOINT": "https://myapp.authgear.cloud",
        "OPTIONS": {},                    # keyword arguments of JWTVerifier / ResolverClient /
                                          # TrustedProxyHeaders (e.g. "allow_clients": True)
        "REALM": "api",
        "REQUIRED": False,                # True: 401 for every request without a valid user
        "EXEMPT_PATHS": [],               # passed through when REQUIRED
    }
    # or AUTHGEAR_AUTHENTICATOR = <an authenticator object> to build it yourself

views.py::

    @authgear_required                    # or @authgear_required(roles=["admin"], scopes=[...])
    def me(request):
        return JsonResponse(request.authgear_user.as_dict())

    @authgear_client_required(scopes=["sync"])   # a client's token (allow_clients=True)
    def sync(request): ...

The middleware sets ``request.authgear_user`` (None without credentials, and for a client),
``request.authgear_principal`` (a user or a client) and ``request.authgear_error``; the
decorators turn them into the error's own response (RFC 6750 401/403 JSON, 503).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse

from authgear.backend import make_authenticator
from authgear.backend._errors import BackendError, MissingCredentials
from authgear.backend._request import socket_peer
from authgear.backend._types import (
    AuthenticatedUser,
    Authenticator,
    Principal,
    Wanted,
    check,
)

__all__ = [
    "AuthgearMiddleware",
    "DjangoRequest",
    "authgear_client_required",
    "authgear_principal_required",
    "authgear_required",
    "error_response",
]

F = TypeVar("F", bound=Callable[..., Any])

_authenticator: Authenticator | None = None


def get_authenticator() -> Authenticator:
    """The authenticator from the settings, built once per process."""
    global _authenticator
    if _authenticator is None:
        explicit = getattr(settings, "AUTHGEAR_AUTHENTICATOR", None)
        if explicit is not None:
            _authenticator = explicit
        else:
            conf = _conf()
            if "MODE" not in conf:
                raise ImproperlyConfigured("settings.AUTHGEAR needs MODE (jwt, resolver, proxy)")
            _authenticator = make_authenticator(
                str(conf["MODE"]),
                conf.get("ENDPOINT"),
                trusted_proxies=conf.get("TRUSTED_PROXIES"),
                **dict(conf.get("OPTIONS", {})),
            )
    return _authenticator


def _conf() -> dict[str, Any]:
    return dict(getattr(settings, "AUTHGEAR", {}))


def _realm() -> str:
    return str(_conf().get("REALM", "api"))


class DjangoRequest:
    """A :class:`~authgear.backend.RequestLike` over a Django request."""

    __slots__ = ("_request",)

    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    def header(self, name: str) -> str | None:
        value = self._request.headers.get(name)
        return None if value is None else str(value)

    def cookie(self, name: str) -> str | None:
        value = self._request.COOKIES.get(name)
        return None if value is None else str(value)

    @property
    def peer(self) -> str | None:
        meta = self._request.META
        addr = meta.get("REMOTE_ADDR")
        forwarded = [
            str(meta.get(k, ""))
            for k in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
        ]
        return socket_peer(str(addr), forwarded) if addr else None

    @property
    def method(self) -> str:
        return str(self._request.method or "GET").upper()


def error_response(error: BackendError, realm: str = "api") -> HttpResponse:
    """The error's own status, headers and JSON body."""
    response = JsonResponse(error.body(), status=error.status_code)
    for name, value in error.headers(realm).items():
        response[name] = value
    return response


def _set(request: HttpRequest, principal: Principal | None, error: BackendError | None) -> None:
    request.authgear_principal = principal
    request.authgear_user = principal if type(principal) is AuthenticatedUser else None
    request.authgear_error = error


class AuthgearMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.authenticator = get_authenticator()
        conf = _conf()
        self.realm = str(conf.get("REALM", "api"))
        self.required = bool(conf.get("REQUIRED", False))
        self.exempt = frozenset(conf.get("EXEMPT_PATHS", ()))
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        try:
            _set(request, self.authenticator.authenticate(DjangoRequest(request)), None)
        except BackendError as e:
            _set(request, None, e)
        return self._reject(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        try:
            principal = await self.authenticator.authenticate_async(DjangoRequest(request))
            _set(request, principal, None)
        except BackendError as e:
            _set(request, None, e)
        return self._reject(request) or await self.get_response(request)

    def _reject(self, request: HttpRequest) -> HttpResponse | None:
        if not self.required or request.path in self.exempt:
            return None
        return _check(request, "user", (), (), False, self.realm)


def _check(
    request: HttpRequest,
    wanted: Wanted,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    any_role: bool,
    realm: str | None = None,
) -> HttpResponse | None:
    if not hasattr(request, "authgear_principal"):
        raise ImproperlyConfigured(
            "authgear_required needs authgear.backend.django.AuthgearMiddleware in MIDDLEWARE"
        )
    error: BackendError | None = request.authgear_error
    principal: Principal | None = request.authgear_principal
    try:
        if error is not None:
            raise error
        if principal is None:
            raise MissingCredentials()
        check(principal, wanted, roles=roles, scopes=scopes, any_role=any_role)
    except BackendError as e:
        return error_response(e, realm or _realm())
    return None


def _decorator(
    wanted: Wanted, roles: Iterable[str], scopes: Iterable[str], any_role: bool
) -> Callable[[F], F]:
    roles_t, scopes_t = tuple(roles), tuple(scopes)

    def decorate(f: F) -> F:
        if iscoroutinefunction(f):

            @functools.wraps(f)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return _check(request, wanted, roles_t, scopes_t, any_role) or await f(
                    request, *args, **kwargs
                )

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(f)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return _check(request, wanted, roles_t, scopes_t, any_role) or f(
                request, *args, **kwargs
            )

        return wrapper  # type: ignore[return-value]

    return decorate


@overload
def authgear_required(view: F) -> F: ...


@overload
def authgear_required(
    view: None = None,
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    any_role: bool = False,
) -> Callable[[F], F]: ...


def authgear_required(
    view: F | None = None,
    *,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    any_role: bool = False,
) -> F | Callable[[F], F]:
    """401 without a valid user (a client's token included), 403 without the roles (all, or
    any) and scopes."""
    decorate = _decorator("user", roles, scopes, any_role)
    return decorate(view) if view is not None else decorate


def authgear_client_required(*, scopes: Iterable[str] = ()) -> Callable[[F], F]:
    """A client's token (client_credentials; ``allow_clients`` in OPTIONS) with the scopes."""
    return _decorator("client", (), scopes, False)


def authgear_principal_required(*, scopes: Iterable[str] = ()) -> Callable[[F], F]:
    """A user's or a client's token with the scopes (``request.authgear_principal``)."""
    return _decorator("any", (), scopes, False)
