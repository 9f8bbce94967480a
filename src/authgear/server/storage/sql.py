"""The repository on SQLAlchemy 2 Core: SQLite (inline) by default, PostgreSQL (asyncpg)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, case, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from authgear.server.storage import schema as t
from authgear.server.storage.db import Conn, Database, PoolStats, open_database
from authgear.server.storage.models import (
    AccessTokenRecord,
    AuthCode,
    IdpSession,
    LoginFailure,
    OfflineGrant,
    PreviousHash,
    SigningKey,
    User,
)


class EmailTaken(Exception):
    """A user with this email already exists."""


T = TypeVar("T")


def _fields(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# The records' field names are their columns' names.
_USER, _IDP, _GRANT, _ACCESS, _CODE = map(
    _fields, (User, IdpSession, OfflineGrant, AccessTokenRecord, AuthCode)
)


def _record(cls: Callable[..., T], names: tuple[str, ...], r: Mapping[Any, Any]) -> T:
    return cls(**{name: r[name] for name in names})


def _user(r: Mapping[Any, Any]) -> User:
    return _record(User, _USER, r)


def _idp(r: Mapping[Any, Any]) -> IdpSession:
    return _record(IdpSession, _IDP, r)


def _grant(r: Mapping[Any, Any]) -> OfflineGrant:
    values = {name: r[name] for name in _GRANT}
    values["previous_hashes"] = [PreviousHash(p["h"], p["t"]) for p in values["previous_hashes"]]
    return OfflineGrant(**values)


def _access(r: Mapping[Any, Any]) -> AccessTokenRecord:
    return _record(AccessTokenRecord, _ACCESS, r)


def _code(r: Mapping[Any, Any]) -> AuthCode:
    return _record(AuthCode, _CODE, r)


def _prev(items: Sequence[PreviousHash]) -> list[dict[str, Any]]:
    return [{"h": p.hash, "t": p.superseded_at} for p in items]


# Hot-path statements, built once: SQLAlchemy memoizes a statement object's cache key, so
# reusing it skips rebuilding and re-keying the statement on every request.
_GET_ACCESS_TOKEN = (
    select(t.access_tokens, t.users)
    .select_from(t.access_tokens.outerjoin(t.users, t.users.c.id == t.access_tokens.c.user_id))
    .where(t.access_tokens.c.token_hash == bindparam("b_hash"))
)
_GET_GRANT_AND_USER = (
    select(t.offline_grants, *(c.label(f"u_{c.name}") for c in t.users.c))
    .select_from(t.offline_grants.join(t.users, t.users.c.id == t.offline_grants.c.user_id))
    .where(t.offline_grants.c.id == bindparam("b_id"))
)
_REFRESH_GRANT = (
    update(t.offline_grants)
    .where(
        t.offline_grants.c.id == bindparam("b_id"),
        t.offline_grants.c.refresh_hash == bindparam("b_expected"),
    )
    .values(
        refresh_hash=bindparam("b_hash"),
        previous_hashes=bindparam("b_previous", type_=t.offline_grants.c.previous_hashes.type),
        last_access_at=bindparam("b_now"),
        last_access_ip=bindparam("b_ip"),
        last_access_user_agent=bindparam("b_ua"),
        expires_at=bindparam("b_expires"),
    )
)
_INSERT_ACCESS_TOKEN = insert(t.access_tokens)


class SQLRepository:
    """All storage the server needs. Every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.engine = db

    @classmethod
    def open(cls, url: str, **pool: int) -> SQLRepository:
        """``pool``: ``pool_size``, ``max_overflow`` (a server database's connections)."""
        return cls(open_database(url, **pool))

    async def close(self) -> None:
        await self.engine.dispose()

    def pool_stats(self) -> PoolStats:
        """Connections in use and callers waiting for one (for the metrics)."""
        return self.engine.stats

    # -- users --------------------------------------------------------------------------------
    async def create_user(
        self,
        *,
        user_id: str,
        email: str,
        password_hash: str | None,
        now: int,
        email_verified: bool = False,
        roles: Sequence[str] = (),
    ) -> User:
        values: dict[str, Any] = {
            "id": user_id,
            "email": email,
            "email_key": email.lower(),
            "password_hash": password_hash,
            "email_verified": email_verified,
            "roles": list(roles),
            "standard_attributes": {},
            "custom_attributes": {},
            "disabled": False,
            "created_at": now,
            "updated_at": now,
            "last_login_at": None,
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(t.users).values(**values))
        except IntegrityError:
            raise EmailTaken(email) from None
        return _user(values)

    async def get_user(self, user_id: str) -> User | None:
        async with self.engine.connect() as conn:
            r = (
                (await conn.execute(select(t.users).where(t.users.c.id == user_id)))
                .mappings()
                .first()
            )
        return _user(r) if r else None

    async def get_user_by_email(self, email: str) -> User | None:
        async with self.engine.connect() as conn:
            q = select(t.users).where(t.users.c.email_key == email.lower())
            r = (await conn.execute(q)).mappings().first()
        return _user(r) if r else None

    async def set_last_login(self, user_id: str, now: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.users).where(t.users.c.id == user_id).values(last_login_at=now)
            )

    # -- lockout ------------------------------------------------------------------------------
    async def get_login_failure(self, key: str) -> LoginFailure | None:
        async with self.engine.connect() as conn:
            q = select(t.login_failures).where(t.login_failures.c.key == key)
            r = (await conn.execute(q)).mappings().first()
        return LoginFailure(**r) if r else None

    async def put_login_failure(self, failure: LoginFailure) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(t.login_failures).where(t.login_failures.c.key == failure.key)
            )
            await conn.execute(
                insert(t.login_failures).values(
                    key=failure.key,
                    count=failure.count,
                    first_at=failure.first_at,
                    locked_until=failure.locked_until,
                )
            )

    async def clear_login_failures(self, key: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.login_failures).where(t.login_failures.c.key == key))

    # -- IdP sessions -------------------------------------------------------------------------
    async def create_idp_session(self, s: IdpSession) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t.idp_sessions).values(
                    id=s.id,
                    user_id=s.user_id,
                    secret_hash=s.secret_hash,
                    created_at=s.created_at,
                    authenticated_at=s.authenticated_at,
                    amr=s.amr,
                    last_access_at=s.last_access_at,
                    last_access_ip=s.last_access_ip,
                    last_access_user_agent=s.last_access_user_agent,
                    expires_at=s.expires_at,
                )
            )

    async def get_idp_session(self, session_id: str) -> IdpSession | None:
        async with self.engine.connect() as conn:
            q = select(t.idp_sessions).where(t.idp_sessions.c.id == session_id)
            r = (await conn.execute(q)).mappings().first()
        return _idp(r) if r else None

    async def touch_session(
        self,
        kind: str,
        session_id: str,
        *,
        now: int,
        ip: str | None,
        user_agent: str | None,
        lifetime: int,
        idle_timeout: int | None,
        min_interval: int = 0,
    ) -> None:
        """Record activity on an IdP session ("idp") or offline grant ("offline") and extend
        its idle expiry; skipped when the last recorded access is newer than min_interval."""
        table = t.idp_sessions if kind == "idp" else t.offline_grants
        absolute = table.c.created_at + lifetime
        expires: Any = absolute
        if idle_timeout is not None:
            expires = case((absolute < now + idle_timeout, absolute), else_=now + idle_timeout)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(table)
                .where(table.c.id == session_id, table.c.last_access_at <= now - min_interval)
                .values(
                    last_access_at=now,
                    last_access_ip=ip,
                    last_access_user_agent=user_agent,
                    expires_at=expires,
                )
            )

    async def delete_idp_session(self, session_id: str) -> bool:
        return await self._delete_session(t.idp_sessions, session_id)

    async def _delete_session(self, table: Table, session_id: str) -> bool:
        """A session (IdP session or offline grant) and every access token issued under it."""
        async with self.engine.begin() as conn:
            await _delete_tokens_of(conn, session_id)
            res = await conn.execute(delete(table).where(table.c.id == session_id))
        return bool(res.rowcount)

    # -- offline grants -----------------------------------------------------------------------
    async def create_grant(self, g: OfflineGrant) -> None:
        async with self.engine.begin() as conn:
            await _insert_grant(conn, g)

    async def get_grant_and_user(self, grant_id: str) -> tuple[OfflineGrant, User] | None:
        """A grant with its user, in one query (the refresh grant's hot path)."""
        async with self.engine.connect() as conn:
            r = (await conn.execute(_GET_GRANT_AND_USER, {"b_id": grant_id})).mappings().first()
        if r is None:
            return None
        user = _user({c.name: r[f"u_{c.name}"] for c in t.users.c})
        return _grant(r), user

    async def get_grant(self, grant_id: str) -> OfflineGrant | None:
        async with self.engine.connect() as conn:
            q = select(t.offline_grants).where(t.offline_grants.c.id == grant_id)
            r = (await conn.execute(q)).mappings().first()
        return _grant(r) if r else None

    async def refresh_grant(
        self,
        grant_id: str,
        *,
        token: AccessTokenRecord,
        expected_refresh_hash: str,
        refresh_hash: str,
        previous_hashes: Sequence[PreviousHash],
        now: int,
        ip: str | None,
        user_agent: str | None,
        expires_at: int,
    ) -> bool:
        """Record a refresh and its new access token in one transaction; compare-and-set on the
        refresh hash so two concurrent rotations cannot both win. False: the hash changed."""
        params = {
            "b_id": grant_id,
            "b_expected": expected_refresh_hash,
            "b_hash": refresh_hash,
            "b_previous": _prev(previous_hashes),
            "b_now": now,
            "b_ip": ip,
            "b_ua": user_agent,
            "b_expires": expires_at,
        }
        async with self.engine.begin() as conn:
            res = await conn.execute(_REFRESH_GRANT, params)
            if not res.rowcount:
                return False
            await _insert_access_token(conn, token)
        return True

    async def delete_grant(self, grant_id: str) -> bool:
        return await self._delete_session(t.offline_grants, grant_id)

    # -- access tokens ------------------------------------------------------------------------
    async def add_access_token(self, a: AccessTokenRecord) -> None:
        async with self.engine.begin() as conn:
            await _insert_access_token(conn, a)

    async def get_access_token(
        self, token_hash: str
    ) -> tuple[AccessTokenRecord, User | None] | None:
        """The token's record and its user, in one query (the resolver's hot path)."""
        async with self.engine.connect() as conn:
            r = (await conn.execute(_GET_ACCESS_TOKEN, {"b_hash": token_hash})).mappings().first()
        if r is None:
            return None
        user = _user(r) if r["id"] is not None else None
        return _access(r), user

    async def delete_access_token(self, token_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(t.access_tokens).where(t.access_tokens.c.token_hash == token_hash)
            )

    # -- authorization codes ------------------------------------------------------------------
    async def add_code(self, c: AuthCode) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t.auth_codes).values(
                    code_hash=c.code_hash,
                    client_id=c.client_id,
                    user_id=c.user_id,
                    idp_session_id=c.idp_session_id,
                    redirect_uri=c.redirect_uri,
                    scopes=c.scopes,
                    nonce=c.nonce,
                    code_challenge=c.code_challenge,
                    auth_time=c.auth_time,
                    amr=c.amr,
                    created_at=c.created_at,
                    expires_at=c.expires_at,
                    used_at=None,
                    issued_grant_id=None,
                    issued_token_hash=None,
                )
            )

    async def claim_code(self, code_hash: str, now: int) -> tuple[AuthCode | None, bool]:
        """Mark a code used. Returns (code, first_use); (None, False) when unknown."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(t.auth_codes)
                .where(t.auth_codes.c.code_hash == code_hash, t.auth_codes.c.used_at.is_(None))
                .values(used_at=now)
            )
            q = select(t.auth_codes).where(t.auth_codes.c.code_hash == code_hash)
            r = (await conn.execute(q)).mappings().first()
        if r is None:
            return None, False
        return _code(r), bool(res.rowcount)

    async def exchange_code(
        self,
        code_hash: str,
        *,
        grant: OfflineGrant | None,
        token: AccessTokenRecord,
    ) -> None:
        """Store what a code exchange issued, in one transaction."""
        async with self.engine.begin() as conn:
            if grant is not None:
                await _insert_grant(conn, grant)
            await _insert_access_token(conn, token)
            await conn.execute(
                update(t.auth_codes)
                .where(t.auth_codes.c.code_hash == code_hash)
                .values(
                    issued_grant_id=grant.id if grant else None,
                    issued_token_hash=token.token_hash,
                )
            )

    async def revoke_code_issue(self, code: AuthCode) -> None:
        """A replayed code: revoke everything its first use issued (RFC 6749 §4.1.2)."""
        async with self.engine.begin() as conn:
            if code.issued_grant_id:
                await _delete_tokens_of(conn, code.issued_grant_id)
                await conn.execute(
                    delete(t.offline_grants).where(t.offline_grants.c.id == code.issued_grant_id)
                )
            if code.issued_token_hash:
                await conn.execute(
                    delete(t.access_tokens).where(
                        t.access_tokens.c.token_hash == code.issued_token_hash
                    )
                )

    # -- login flows --------------------------------------------------------------------------
    async def add_flow(self, flow_id: str, data: dict[str, Any], now: int, expires_at: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t.auth_flows).values(
                    id=flow_id, data=data, created_at=now, expires_at=expires_at
                )
            )

    async def get_flow(self, flow_id: str, now: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            q = select(t.auth_flows.c.data).where(
                t.auth_flows.c.id == flow_id, t.auth_flows.c.expires_at > now
            )
            r = (await conn.execute(q)).first()
        return dict(r[0]) if r else None

    async def delete_flow(self, flow_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.auth_flows).where(t.auth_flows.c.id == flow_id))

    # -- signing keys -------------------------------------------------------------------------
    async def list_signing_keys(self) -> list[SigningKey]:
        async with self.engine.connect() as conn:
            q = select(t.signing_keys).order_by(t.signing_keys.c.created_at)
            rows = (await conn.execute(q)).mappings().all()
        return [SigningKey(**r) for r in rows]

    async def add_signing_key(self, key: SigningKey) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t.signing_keys).values(
                    kid=key.kid,
                    private_pem=key.private_pem,
                    created_at=key.created_at,
                    active=key.active,
                    retire_at=key.retire_at,
                    activate_at=key.activate_at,
                )
            )

    async def rotate_signing_keys(self, new: SigningKey, retire_at: int) -> None:
        """Publish ``new`` and schedule every older key's retirement, in one transaction."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.signing_keys)
                .where(t.signing_keys.c.retire_at.is_(None))
                .values(retire_at=retire_at)
            )
            await conn.execute(
                insert(t.signing_keys).values(
                    kid=new.kid,
                    private_pem=new.private_pem,
                    created_at=new.created_at,
                    active=True,
                    retire_at=None,
                    activate_at=new.activate_at,
                )
            )

    async def delete_retired_keys(self, now: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.signing_keys).where(t.signing_keys.c.retire_at < now))

    async def replace_signing_key_pem(self, kid: str, old: str, new: str) -> bool:
        """Store a key's private half re-encrypted; False if another process did it first."""
        table = t.signing_keys
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(table)
                .where(table.c.kid == kid, table.c.private_pem == old)
                .values(private_pem=new)
            )
        return bool(res.rowcount)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    # -- server secrets -----------------------------------------------------------------------
    async def get_or_create_secret(self, name: str, value: str, now: int) -> str:
        """The stored secret ``name``; the first caller (of any process) stores ``value``."""
        q = select(t.server_secrets.c.value).where(t.server_secrets.c.name == name)
        async with self.engine.begin() as conn:
            found = (await conn.execute(q)).scalar_one_or_none()
            if found is not None:
                return str(found)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(t.server_secrets).values(name=name, value=value, created_at=now)
                )
        except IntegrityError:
            pass
        async with self.engine.connect() as conn:
            return str((await conn.execute(q)).scalar_one())

    async def replace_secret(self, name: str, old: str, new: str) -> bool:
        """Store a secret re-encrypted; False if another process did it first."""
        table = t.server_secrets
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(table).where(table.c.name == name, table.c.value == old).values(value=new)
            )
        return bool(res.rowcount)

    async def add_access_token_and_touch(
        self, token: AccessTokenRecord, grant_id: str, refresh_hash: str, now: int
    ) -> bool:
        """Record a token for a grant whose current refresh hash is ``refresh_hash``;
        False if the grant is gone or has rotated since."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(t.offline_grants)
                .where(
                    t.offline_grants.c.id == grant_id,
                    t.offline_grants.c.refresh_hash == refresh_hash,
                )
                .values(last_access_at=now)
            )
            if not res.rowcount:
                return False
            await _insert_access_token(conn, token)
        return True

    # -- housekeeping -------------------------------------------------------------------------
    async def purge_expired(self, now: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.access_tokens).where(t.access_tokens.c.expires_at < now))
            await conn.execute(delete(t.auth_flows).where(t.auth_flows.c.expires_at < now))
            # Keep used codes a while after expiry? No: replay after expiry is just "invalid".
            await conn.execute(delete(t.auth_codes).where(t.auth_codes.c.expires_at < now))
            expired_grants = select(t.offline_grants.c.id).where(
                t.offline_grants.c.expires_at < now
            )
            await conn.execute(
                delete(t.access_tokens).where(t.access_tokens.c.session_id.in_(expired_grants))
            )
            await conn.execute(delete(t.offline_grants).where(t.offline_grants.c.expires_at < now))
            await conn.execute(delete(t.idp_sessions).where(t.idp_sessions.c.expires_at < now))


async def _delete_tokens_of(conn: Conn, session_id: str) -> None:
    await conn.execute(delete(t.access_tokens).where(t.access_tokens.c.session_id == session_id))


async def _insert_access_token(conn: Conn, a: AccessTokenRecord) -> None:
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


async def _insert_grant(conn: Conn, g: OfflineGrant) -> None:
    await conn.execute(
        insert(t.offline_grants).values(
            id=g.id,
            user_id=g.user_id,
            client_id=g.client_id,
            idp_session_id=g.idp_session_id,
            scopes=g.scopes,
            refresh_hash=g.refresh_hash,
            previous_hashes=_prev(g.previous_hashes),
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
