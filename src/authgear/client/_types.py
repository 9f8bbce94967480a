"""Public value types of the client SDK."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from authgear.client._errors import ServerError

__all__ = [
    "AuthenticateResult",
    "DeviceAuthorization",
    "OIDCConfiguration",
    "Page",
    "SessionState",
    "SessionStateChange",
    "SessionStateChangeReason",
    "UserInfo",
]

_CLAIM_PREFIX = "https://authgear.com/claims/user/"

Page = Literal["login", "signup"]
"""Which page the authorization UI opens on (``x_page``)."""


class SessionState(enum.StrEnum):
    """The SDK's local view of whether a user is logged in."""

    UNKNOWN = "UNKNOWN"
    NO_SESSION = "NO_SESSION"
    AUTHENTICATED = "AUTHENTICATED"


class SessionStateChangeReason(enum.StrEnum):
    """Why ``session_state`` last changed."""

    NO_TOKEN = "NO_TOKEN"
    FOUND_TOKEN = "FOUND_TOKEN"
    AUTHENTICATED = "AUTHENTICATED"
    LOGOUT = "LOGOUT"
    INVALID = "INVALID"
    CLEAR = "CLEAR"


@dataclass(frozen=True, slots=True)
class SessionStateChange:
    """One state change, as given to ``on_session_state_change`` listeners."""

    state: SessionState
    reason: SessionStateChangeReason


@dataclass(frozen=True, slots=True)
class OIDCConfiguration:
    """The parts of the discovery document the SDK uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    revocation_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None
    # RFC 8628: absent when the server does not offer the device authorization grant.
    device_authorization_endpoint: str | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] = ("RS256",)
    # RFC 9207: the server promises `iss` on every authorization response.
    authorization_response_iss_parameter_supported: bool = False

    @classmethod
    def from_document(cls, doc: object, source: str) -> OIDCConfiguration:
        if not isinstance(doc, dict):
            raise ServerError(f"discovery document at {source} is not a JSON object")
        required = (
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "revocation_endpoint",
            "jwks_uri",
        )
        missing = [k for k in required if not isinstance(doc.get(k), str) or not doc.get(k)]
        if missing:
            raise ServerError(
                f"discovery document at {source} lacks {', '.join(missing)}; "
                "is the endpoint an Authgear (OpenID Connect) server?"
            )
        algs = doc.get("id_token_signing_alg_values_supported")
        alg_tuple = (
            tuple(a for a in algs if isinstance(a, str))
            if isinstance(algs, list) and algs
            else ("RS256",)
        )
        end_session = doc.get("end_session_endpoint")
        device = doc.get("device_authorization_endpoint")
        return cls(
            issuer=doc["issuer"],
            authorization_endpoint=doc["authorization_endpoint"],
            token_endpoint=doc["token_endpoint"],
            userinfo_endpoint=doc["userinfo_endpoint"],
            revocation_endpoint=doc["revocation_endpoint"],
            jwks_uri=doc["jwks_uri"],
            end_session_endpoint=end_session if isinstance(end_session, str) else None,
            device_authorization_endpoint=device if isinstance(device, str) and device else None,
            id_token_signing_alg_values_supported=alg_tuple,
            authorization_response_iss_parameter_supported=(
                doc.get("authorization_response_iss_parameter_supported") is True
            ),
        )


def _opt_str(claims: Mapping[str, Any], key: str) -> str | None:
    value = claims.get(key)
    return value if isinstance(value, str) else None


def _opt_bool(claims: Mapping[str, Any], key: str) -> bool | None:
    value = claims.get(key)
    return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The claims of the logged-in user, from the userinfo endpoint."""

    sub: str
    is_anonymous: bool = False
    is_verified: bool = False
    can_reauthenticate: bool = False
    roles: tuple[str, ...] = ()
    custom_attributes: Mapping[str, Any] = field(default_factory=dict)
    email: str | None = None
    email_verified: bool | None = None
    phone_number: str | None = None
    phone_number_verified: bool | None = None
    preferred_username: str | None = None
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    middle_name: str | None = None
    nickname: str | None = None
    profile: str | None = None
    picture: str | None = None
    website: str | None = None
    gender: str | None = None
    birthdate: str | None = None
    zoneinfo: str | None = None
    locale: str | None = None
    address: Mapping[str, Any] | None = None
    updated_at: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_claims(cls, claims: object) -> UserInfo:
        if not isinstance(claims, dict):
            raise ServerError("userinfo response is not a JSON object")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ServerError("userinfo response lacks the 'sub' claim")
        roles = claims.get(_CLAIM_PREFIX + "roles")
        custom = claims.get("custom_attributes")
        address = claims.get("address")
        updated_at = claims.get("updated_at")
        return cls(
            sub=sub,
            is_anonymous=claims.get(_CLAIM_PREFIX + "is_anonymous") is True,
            is_verified=claims.get(_CLAIM_PREFIX + "is_verified") is True,
            can_reauthenticate=claims.get(_CLAIM_PREFIX + "can_reauthenticate") is True,
            roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
            custom_attributes=dict(custom) if isinstance(custom, dict) else {},
            email=_opt_str(claims, "email"),
            email_verified=_opt_bool(claims, "email_verified"),
            phone_number=_opt_str(claims, "phone_number"),
            phone_number_verified=_opt_bool(claims, "phone_number_verified"),
            preferred_username=_opt_str(claims, "preferred_username"),
            name=_opt_str(claims, "name"),
            given_name=_opt_str(claims, "given_name"),
            family_name=_opt_str(claims, "family_name"),
            middle_name=_opt_str(claims, "middle_name"),
            nickname=_opt_str(claims, "nickname"),
            profile=_opt_str(claims, "profile"),
            picture=_opt_str(claims, "picture"),
            website=_opt_str(claims, "website"),
            gender=_opt_str(claims, "gender"),
            birthdate=_opt_str(claims, "birthdate"),
            zoneinfo=_opt_str(claims, "zoneinfo"),
            locale=_opt_str(claims, "locale"),
            address=dict(address) if isinstance(address, dict) else None,
            updated_at=updated_at
            if isinstance(updated_at, int) and not isinstance(updated_at, bool)
            else None,
            raw=dict(claims),
        )


@dataclass(frozen=True, slots=True)
class AuthenticateResult:
    """What a finished authentication gives back: the verified ID token claims.

    Call ``fetch_user_info()`` next for the full, typed profile (the seed's story)."""

    sub: str
    id_token_claims: Mapping[str, Any]
    state: str | None = None

    @property
    def auth_time(self) -> datetime | None:
        """When the user last signed in (the ID token's ``auth_time``), UTC."""
        return auth_time_of(self.id_token_claims)


def auth_time_of(claims: Mapping[str, Any]) -> datetime | None:
    value = claims.get("auth_time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    return None


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """What ``authenticate_device()`` hands to its callback (RFC 8628 section 3.2): show the
    user ``verification_uri`` and ``user_code`` (or ``verification_uri_complete``, which
    carries the code, e.g. as a QR code). The device code itself stays inside the SDK.

    ``expires_at`` is in Unix seconds; ``interval`` is the server's polling interval at the
    start (the SDK slows down by 5 s whenever the server says ``slow_down``)."""

    user_code: str = field(repr=False)
    verification_uri: str
    verification_uri_complete: str | None = field(repr=False)
    expires_in: float
    expires_at: float
    interval: float
