"""Rows to records and back, shared by the repositories of this package. A record's field
names are its columns' names."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from authgear.server.storage.models import (
    AccessTokenRecord,
    AuthCode,
    IdpSession,
    OfflineGrant,
    PreviousHash,
    User,
)

T = TypeVar("T")


def _fields(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_USER, _IDP, _GRANT, _ACCESS, _CODE = map(
    _fields, (User, IdpSession, OfflineGrant, AccessTokenRecord, AuthCode)
)


def _record(cls: Callable[..., T], names: tuple[str, ...], r: Mapping[Any, Any]) -> T:
    return cls(**{name: r[name] for name in names})


def user(r: Mapping[Any, Any]) -> User:
    return _record(User, _USER, r)


def idp_session(r: Mapping[Any, Any]) -> IdpSession:
    return _record(IdpSession, _IDP, r)


def grant(r: Mapping[Any, Any]) -> OfflineGrant:
    values = {name: r[name] for name in _GRANT}
    values["previous_hashes"] = [PreviousHash(p["h"], p["t"]) for p in values["previous_hashes"]]
    return OfflineGrant(**values)


def access_token(r: Mapping[Any, Any]) -> AccessTokenRecord:
    return _record(AccessTokenRecord, _ACCESS, r)


def code(r: Mapping[Any, Any]) -> AuthCode:
    return _record(AuthCode, _CODE, r)


def previous_hashes(items: Sequence[PreviousHash]) -> list[dict[str, Any]]:
    """A grant's superseded refresh token hashes as stored (a JSON list)."""
    return [{"h": p.hash, "t": p.superseded_at} for p in items]
