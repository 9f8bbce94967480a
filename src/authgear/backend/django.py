"""Django middleware and view decorator (sync and async).

settings.py::

    MIDDLEWARE = [..., "authgear.backend.django.AuthgearMiddleware"]
    AUTHGEAR = {
        "MODE": "jwt",                    # or "resolver", or "proxy" (+ "TRUSTED_PROXIES")
        "ENDPOINT": "https://myapp.authgear.cloud",
        "OPTIONS": {},                    # keyword arguments of JWTVerifier / ResolverClient
        "REALM": "api",
        "REQUIRED": False,                # True: 401 for every request without a valid user
        "EXEMPT_PATHS": [],               # passed through when REQUIRED
    }
    # or AUTHGEAR_AUTHENTICATOR = <an authenticator object> to build it yourself

views.py::

    @authgear_required                    # or @authgear_required(roles=["admin"], scopes=[...])
    def me(request):
        return JsonResponse(request.authgear_user.as_dict())

The middleware sets ``request.authgear_user`` (None without credentials) and
``request.authgear_error``; the decorator turns them into RFC 6750 401/403 JSON responses.
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
from authgear.backend._types import (
    AuthenticatedUser,
    Authenticator,
    AuthError,
    BackendUnavailable,
    MissingCredentials,
    require,
)

__all__ = ["AuthgearMiddleware", "DjangoRequest", "authgear_required", "error_response"]

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
        addr = self._request.META.get("REMOTE_ADDR")
        return str(addr) if addr else None


def error_response(error: AuthError | BackendUnavailable, realm: str = "api") -> HttpResponse:
    if isinstance(error, AuthError):
        response = JsonResponse(error.body(), status=error.status_code)
        for name, value in error.headers(realm).items():
            response[name] = value
        return response
    response = JsonResponse(
        {"error": "temporarily_unavailable", "error_description": "try again later"}, status=503
    )
    response["Retry-After"] = "5"
    return response


def _set(request: HttpRequest, user: AuthenticatedUser | None, error: Any) -> None:
    request.authgear_user = user
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
        except (AuthError, BackendUnavailable) as e:
            _set(request, None, e)
        return self._reject(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        try:
            user = await self.authenticator.authenticate_async(DjangoRequest(request))
            _set(request, user, None)
        except (AuthError, BackendUnavailable) as e:
            _set(request, None, e)
        return self._reject(request) or await self.get_response(request)

    def _reject(self, request: HttpRequest) -> HttpResponse | None:
        error = request.authgear_error
        if self.required and error is not None and request.path not in self.exempt:
            return error_response(error, self.realm)
        return None


def _check(
    request: HttpRequest, roles: tuple[str, ...], scopes: tuple[str, ...], any_role: bool
) -> HttpResponse | None:
    if not hasattr(request, "authgear_user"):
        raise ImproperlyConfigured(
            "authgear_required needs authgear.backend.django.AuthgearMiddleware in MIDDLEWARE"
        )
    error = request.authgear_error
    user = request.authgear_user
    if error is not None or user is None:
        return error_response(error or MissingCredentials(), _realm())
    try:
        require(user, roles=roles, scopes=scopes, any_role=any_role)
    except AuthError as e:
        return error_response(e, _realm())
    return None


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
    """401 without a valid user, 403 without the roles (all, or any) and scopes."""
    roles_t, scopes_t = tuple(roles), tuple(scopes)

    def decorate(f: F) -> F:
        if iscoroutinefunction(f):

            @functools.wraps(f)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return _check(request, roles_t, scopes_t, any_role) or await f(
                    request, *args, **kwargs
                )

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(f)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return _check(request, roles_t, scopes_t, any_role) or f(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate
