"""Rows to records and back, shared by the repositories of this package. A record's field
names are its columns' names. The inserts of tokens and grants live here too: the device
grant's store (devices.py) issues them in its own transaction, like the SQL repository."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import insert

from authgear.server.storage import schema as t
from authgear.server.storage.db import Conn
from authgear.server.storage.models import (
    AccessTokenRecord,
    AuthCode,
    IdpSession,
    OfflineGrant,
    PreviousHash,
    User,
)

T = TypeVar("T")
_INSERT_ACCESS_TOKEN = insert(t.access_tokens)


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


async def insert_access_token(conn: Conn, a: AccessTokenRecord) -> None:
    await conn.execute(
        _INSERT_ACCESS_TOKEN,
        {
            "token_hash": a.token_hash,
            "jti": a.jti,
            "session_kind": a.session_kind,
            "session_id": a.session_id,
            "user_id": a.user_id,
            "client_id": a.client_id,
            "scope": a.scope,
            "auth_time": a.auth_time,
            "amr": a.amr,
            "issued_at": a.issued_at,
            "expires_at": a.expires_at,
        },
    )


async def insert_grant(conn: Conn, g: OfflineGrant) -> None:
    await conn.execute(
        insert(t.offline_grants).values(
            id=g.id,
            user_id=g.user_id,
            client_id=g.client_id,
            idp_session_id=g.idp_session_id,
            scopes=g.scopes,
            refresh_hash=g.refresh_hash,
            previous_hashes=previous_hashes(g.previous_hashes),
            created_at=g.created_at,
            authenticated_at=g.authenticated_at,
            amr=g.amr,
            last_access_at=g.last_access_at,
            last_access_ip=g.last_access_ip,
            last_access_user_agent=g.last_access_user_agent,
            device_info=g.device_info,
            expires_at=g.expires_at,
        )
    )
