"""The repository on SQLAlchemy 2 Core: SQLite (inline) by default, PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from authgear.server.storage import revocations, rows
from authgear.server.storage import schema as t
from authgear.server.storage.accounts import AccountRepository
from authgear.server.storage.admin import AdminRepository
from authgear.server.storage.authenticators import AuthenticatorStore
from authgear.server.storage.db import Conn, Database, PoolStats, open_database
from authgear.server.storage.deletes import (
    PURGE_BATCH,
    delete_in_batches,
    end_session,
    revoke_token,
)
from authgear.server.storage.devices import DeviceCodeStore
from authgear.server.storage.identities import IdentityStore
from authgear.server.storage.models import (
    AccessTokenRecord,
    AttemptPolicy,
    AuthCode,
    EmailTaken,
    EndedSession,
    FlowRow,
    IdpSession,
    LoginFailure,
    OfflineGrant,
    PreviousHash,
    Purged,
    SigningKey,
    TokenSession,
    User,
)
from authgear.server.storage.ratelimit import SQLRateLimiter
from authgear.server.storage.revocations import RevocationPage

# Hot-path statements, built once: SQLAlchemy memoizes a statement object's cache key, so
# reusing it skips rebuilding and re-keying the statement on every request.
_GET_ACCESS_TOKEN = (
    select(t.access_tokens, t.users)
    .select_from(t.access_tokens.outerjoin(t.users, t.users.c.id == t.access_tokens.c.user_id))
    .where(t.access_tokens.c.token_hash == bindparam("b_hash"))
)
_USER_LABELS = tuple((c.name, f"u_{c.name}") for c in t.users.c)
_GET_GRANT_AND_USER = (
    select(t.offline_grants, *(c.label(f"u_{c.name}") for c in t.users.c))
    .select_from(t.offline_grants.join(t.users, t.users.c.id == t.offline_grants.c.user_id))
    .where(t.offline_grants.c.id == bindparam("b_id"))
)
# What a user's JWT access token stands on, in one query by primary keys: the user, the grant or
# browser session its ``sid`` names (a grant only for the token's own client), and whether the
# token was revoked on its own.
_TOKEN_SESSION = select(
    t.users,
    select(t.offline_grants.c.expires_at)
    .where(
        t.offline_grants.c.id == bindparam("b_sid"),
        t.offline_grants.c.user_id == t.users.c.id,
        t.offline_grants.c.client_id == bindparam("b_client"),
    )
    .scalar_subquery()
    .label("x_grant_expires"),
    select(t.idp_sessions.c.expires_at)
    .where(t.idp_sessions.c.id == bindparam("b_sid"), t.idp_sessions.c.user_id == t.users.c.id)
    .scalar_subquery()
    .label("x_session_expires"),
    exists().where(t.revoked_tokens.c.token_hash == bindparam("b_hash")).label("x_revoked"),
).where(t.users.c.id == bindparam("b_user"))
_TOKEN_REVOKED = select(exists().where(t.revoked_tokens.c.token_hash == bindparam("b_hash")))
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


async def _reauthenticated(conn: Conn, sid: str, user_id: str, client_id: str, at: int) -> None:
    """Move the app sessions a reauthentication was for to its sign-in time (forward only)."""
    grants = t.offline_grants
    await conn.execute(
        update(grants)
        .where(
            grants.c.user_id == user_id,
            or_(
                grants.c.id == sid,
                and_(grants.c.idp_session_id == sid, grants.c.client_id == client_id),
            ),
            grants.c.authenticated_at < at,
        )
        .values(authenticated_at=at)
    )


class SQLRepository:
    """All storage the server needs. Every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.engine = db
        # The stores of the server's other parts, on the same database (building one does no
        # I/O); callers reach them here instead of through the engine.
        self.admin = AdminRepository(db)
        self.accounts = AccountRepository(db)
        self.authenticators = AuthenticatorStore(db)
        self.device_codes = DeviceCodeStore(db)
        self.identities = IdentityStore(db)

    @classmethod
    def open(
        cls, url: str, *, pool_size: int = 10, max_overflow: int | None = None
    ) -> SQLRepository:
        """``pool_size``, ``max_overflow``: a server database's connections."""
        return cls(open_database(url, pool_size=pool_size, max_overflow=max_overflow))

    async def close(self) -> None:
        await self.engine.dispose()

    def pool_stats(self) -> PoolStats:
        """Connections in use and callers waiting for one (for the metrics)."""
        return self.engine.stats

    def rate_limiter(self, enabled: bool) -> SQLRateLimiter:
        """Rate limits counted in this database (shared by every process that uses it)."""
        return SQLRateLimiter(self.engine, enabled)

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
            "authenticator_count": 0,
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(t.users).values(**values))
        except IntegrityError:
            raise EmailTaken(email) from None
        return rows.user(values)

    async def get_user(self, user_id: str) -> User | None:
        async with self.engine.connect() as conn:
            r = (
                (await conn.execute(select(t.users).where(t.users.c.id == user_id)))
                .mappings()
                .first()
            )
        return rows.user(r) if r else None

    async def get_user_by_email(self, email: str) -> User | None:
        async with self.engine.connect() as conn:
            q = select(t.users).where(t.users.c.email_key == email.lower())
            r = (await conn.execute(q)).mappings().first()
        return rows.user(r) if r else None

    async def set_last_login(self, user_id: str, now: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.users).where(t.users.c.id == user_id).values(last_login_at=now)
            )

    # -- lockout ------------------------------------------------------------------------------
    async def reserve_login_attempt(self, key: str, now: int, policy: AttemptPolicy) -> bool:
        """Count one sign-in attempt for ``key`` before its password is checked; False when the
        account is locked (the attempt must not run). One transaction holding the row's lock
        (FOR UPDATE on PostgreSQL; SQLite's single writer), so concurrent attempts count one
        after the other."""
        table = t.login_failures
        insert_new: Any = (
            postgresql.insert if self.engine.dialect == "postgresql" else sqlite.insert
        )(table)
        async with self.engine.begin() as conn:
            row = None
            # A concurrent success may delete the row between our insert and our lock
            # (clear_login_failures): insert again until the row is there to lock.
            while row is None:
                await conn.execute(
                    insert_new.values(
                        key=key, count=0, first_at=now, locked_until=None
                    ).on_conflict_do_nothing(index_elements=[table.c.key])
                )
                q = select(table).where(table.c.key == key).with_for_update()
                row = (await conn.execute(q)).mappings().first()
            reserved = policy.reserve(LoginFailure(**row), key, now)
            if reserved is None:
                return False
            await conn.execute(
                update(table)
                .where(table.c.key == key)
                .values(
                    count=reserved.count,
                    first_at=reserved.first_at,
                    locked_until=reserved.locked_until,
                )
            )
        return True

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
        return rows.idp_session(r) if r else None

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

    async def reauthenticate_session(
        self, session_id: str, user_id: str, now: int, amr: list[str]
    ) -> bool:
        """A fresh sign-in in a live browser session: ``authenticated_at`` becomes now and its
        amr is replaced (Authgear's ``Provider.Reauthenticate``). False: the session is gone."""
        sessions = t.idp_sessions
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(sessions)
                .where(
                    sessions.c.id == session_id,
                    sessions.c.user_id == user_id,
                    sessions.c.expires_at > now,
                )
                .values(authenticated_at=now, amr=amr)
            )
        return bool(res.rowcount)

    async def end_session(
        self, session_id: str, *, user_id: str | None = None
    ) -> EndedSession | None:
        """End a session (IdP session or offline grant): see :func:`end_session`."""
        async with self.engine.begin() as conn:
            return await end_session(conn, session_id, user_id=user_id)

    # -- offline grants -----------------------------------------------------------------------
    async def create_grant(self, g: OfflineGrant) -> None:
        async with self.engine.begin() as conn:
            await rows.insert_grant(conn, g)

    async def get_grant_and_user(self, grant_id: str) -> tuple[OfflineGrant, User] | None:
        """A grant with its user, in one query (the refresh grant's hot path)."""
        r = await self.engine.fetch_first(_GET_GRANT_AND_USER, {"b_id": grant_id})
        if r is None:
            return None
        user = rows.user({name: r[label] for name, label in _USER_LABELS})
        return rows.grant(r), user

    async def get_grant(self, grant_id: str) -> OfflineGrant | None:
        async with self.engine.connect() as conn:
            q = select(t.offline_grants).where(t.offline_grants.c.id == grant_id)
            r = (await conn.execute(q)).mappings().first()
        return rows.grant(r) if r else None

    async def refresh_grant(
        self,
        grant_id: str,
        *,
        expected_refresh_hash: str,
        refresh_hash: str,
        previous_hashes: Sequence[PreviousHash],
        now: int,
        ip: str | None,
        user_agent: str | None,
        expires_at: int,
    ) -> bool:
        """Record a rotation: compare-and-set on the refresh hash, so two concurrent rotations
        cannot both win. False: the hash changed (or the grant is gone)."""
        params = {
            "b_id": grant_id,
            "b_expected": expected_refresh_hash,
            "b_hash": refresh_hash,
            "b_previous": rows.previous_hashes(previous_hashes),
            "b_now": now,
            "b_ip": ip,
            "b_ua": user_agent,
            "b_expires": expires_at,
        }
        async with self.engine.begin() as conn:
            res = await conn.execute(_REFRESH_GRANT, params)
        return bool(res.rowcount)

    # -- access tokens ------------------------------------------------------------------------
    async def add_access_token(self, a: AccessTokenRecord) -> None:
        """Record an opaque access token (JWT access tokens have no row)."""
        async with self.engine.begin() as conn:
            await rows.insert_access_token(conn, a)

    async def get_access_token(
        self, token_hash: str
    ) -> tuple[AccessTokenRecord, User | None] | None:
        """An opaque token's record and its user, in one query."""
        async with self.engine.connect() as conn:
            r = (await conn.execute(_GET_ACCESS_TOKEN, {"b_hash": token_hash})).mappings().first()
        if r is None:
            return None
        user = rows.user(r) if r["id"] is not None else None
        return rows.access_token(r), user

    async def delete_access_token(self, token_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(t.access_tokens).where(t.access_tokens.c.token_hash == token_hash)
            )

    async def get_token_session(
        self, session_id: str, user_id: str, client_id: str, token_hash: str
    ) -> TokenSession | None:
        """The user, session and revocation a user's access token depends on (one query, the
        userinfo and resolver hot path). None: the user is gone."""
        params = {
            "b_sid": session_id,
            "b_user": user_id,
            "b_client": client_id,
            "b_hash": token_hash,
        }
        r = await self.engine.fetch_first(_TOKEN_SESSION, params)
        if r is None:
            return None
        grant_expires, session_expires = r["x_grant_expires"], r["x_session_expires"]
        if grant_expires is not None:
            kind, expires = "offline", int(grant_expires)
        elif session_expires is not None:
            kind, expires = "idp", int(session_expires)
        else:
            kind, expires = None, 0
        return TokenSession(rows.user(r), kind, expires, bool(r["x_revoked"]))

    async def is_token_revoked(self, token_hash: str) -> bool:
        async with self.engine.connect() as conn:
            return bool((await conn.execute(_TOKEN_REVOKED, {"b_hash": token_hash})).scalar())

    async def revoke_token(self, token_hash: str, expires_at: int) -> None:
        """Refuse one JWT access token from now on (until ``expires_at``, when it expires)."""
        async with self.engine.begin() as conn:
            await revoke_token(conn, self.engine.dialect, token_hash, expires_at)

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
                    acr=c.acr,
                    reauth_grant_id=c.reauth_grant_id,
                )
            )

    async def get_code(self, code_hash: str) -> AuthCode | None:
        async with self.engine.connect() as conn:
            q = select(t.auth_codes).where(t.auth_codes.c.code_hash == code_hash)
            r = (await conn.execute(q)).mappings().first()
        return rows.code(r) if r else None

    async def claim_code(self, code_hash: str, now: int) -> bool:
        """Mark a code used; False if it is gone or was used already (by a concurrent request)."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(t.auth_codes)
                .where(t.auth_codes.c.code_hash == code_hash, t.auth_codes.c.used_at.is_(None))
                .values(used_at=now)
            )
        return bool(res.rowcount)

    async def exchange_code(
        self,
        code_hash: str,
        grant: OfflineGrant | None,
        token_hash: str,
        token: AccessTokenRecord | None,
        *,
        reauth: tuple[str, str, str, int] | None = None,
    ) -> bool:
        """Store what a code exchange issued, in one transaction, if the code is still there
        (ending its browser session deletes it). The code's row is written first: it orders
        this transaction with a concurrent :func:`end_session`, which deletes codes first.

        ``reauth`` = (sid, user id, client id, auth_time): a reauthentication of the app session
        the ID token hint's ``sid`` named (the grant of that id, or this client's grants made
        from that browser session, which is what our ID tokens' ``sid`` names); their
        ``authenticated_at`` moves forward only (Authgear keeps the grant's amr)."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(t.auth_codes)
                .where(
                    t.auth_codes.c.code_hash == code_hash,
                    t.auth_codes.c.issued_token_hash.is_(None),
                )
                .values(
                    issued_grant_id=grant.id if grant else None,
                    issued_token_hash=token_hash,
                )
            )
            if not res.rowcount:
                return False
            if grant is not None:
                await rows.insert_grant(conn, grant)
            if token is not None:
                await rows.insert_access_token(conn, token)
            if reauth is not None:
                await _reauthenticated(conn, *reauth)
        return True

    async def revoke_code_issue(self, code_hash: str, until: int) -> None:
        """A replayed code: revoke everything its first use issued (RFC 6749 §4.1.2): the
        grant, and the access token (its row if opaque; refused until ``until`` if a JWT)."""
        async with self.engine.begin() as conn:
            q = select(t.auth_codes).where(t.auth_codes.c.code_hash == code_hash)
            r = (await conn.execute(q)).mappings().first()
            if r is None:
                return
            if r["issued_grant_id"]:
                await end_session(conn, r["issued_grant_id"])
            token_hash = r["issued_token_hash"]
            if token_hash:
                await conn.execute(
                    delete(t.access_tokens).where(t.access_tokens.c.token_hash == token_hash)
                )
                await revoke_token(conn, self.engine.dialect, token_hash, until)

    # -- login flows --------------------------------------------------------------------------
    async def add_flow(
        self,
        flow_id: str,
        data: dict[str, Any],
        now: int,
        expires_at: int,
        *,
        ip_key: str | None = None,
        max_live: int | None = None,
        binding: str | None = None,
    ) -> bool:
        """Store a login flow; with ``max_live``, only while ``ip_key`` has fewer live flows.
        False: over that cap. Count and insert are one step for every process: the transaction
        first takes a lock on ``ip_key`` (PostgreSQL: an advisory lock; SQLite: its first
        statement writes, which takes the database's write lock)."""
        flows = t.auth_flows
        values = {
            "id": flow_id,
            "data": data,
            "created_at": now,
            "expires_at": expires_at,
            "ip_key": ip_key,
            "binding": binding,
            "rev": 0,
        }
        async with self.engine.begin() as conn:
            if ip_key is not None and max_live is not None:
                if self.engine.dialect == "postgresql":
                    lock_id = func.hashtextextended(f"auth_flows:{ip_key}", 0)
                    await conn.execute(select(func.pg_advisory_xact_lock(lock_id)))
                await conn.execute(
                    delete(flows).where(flows.c.ip_key == ip_key, flows.c.expires_at <= now)
                )
                live = (
                    await conn.execute(
                        select(func.count())
                        .select_from(flows)
                        .where(flows.c.ip_key == ip_key, flows.c.expires_at > now)
                    )
                ).scalar_one()
                if live >= max_live:
                    return False
            await conn.execute(insert(flows).values(**values))
        return True

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

    async def get_flow_row(self, flow_id: str, now: int) -> FlowRow | None:
        flows = t.auth_flows
        async with self.engine.connect() as conn:
            q = select(flows.c.data, flows.c.rev, flows.c.binding).where(
                flows.c.id == flow_id, flows.c.expires_at > now
            )
            r = (await conn.execute(q)).mappings().first()
        return FlowRow(dict(r["data"]), int(r["rev"]), r["binding"]) if r else None

    async def update_flow(self, flow_id: str, rev: int, data: dict[str, Any]) -> bool:
        """Write a flow's data if it is still at revision ``rev`` (compare-and-set): a
        concurrent writer that got there first makes this one fail instead of being lost."""
        flows = t.auth_flows
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(flows)
                .where(flows.c.id == flow_id, flows.c.rev == rev)
                .values(data=data, rev=rev + 1)
            )
        return bool(res.rowcount)

    async def take_flow(self, flow_id: str, rev: int) -> bool:
        """Delete a flow that is finishing, if still at ``rev``: of two concurrent finishes of
        one flow, exactly one gets True."""
        flows = t.auth_flows
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(flows).where(flows.c.id == flow_id, flows.c.rev == rev))
        return bool(res.rowcount)

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

    # -- the revocation feed ------------------------------------------------------------------
    async def revocations_after(self, after: int, limit: int, now: int) -> RevocationPage:
        return await revocations.page(self.engine, after, limit, now)

    async def purge_revocations(
        self, before: int, purged: Purged, *, batch_size: int = PURGE_BATCH
    ) -> None:
        """Forget revocations made before ``before``: every token they concern has expired."""
        table = t.revoked_sessions
        await delete_in_batches(
            self.engine, table.c.seq, table.c.revoked_at < before, batch_size, purged
        )

    # -- housekeeping -------------------------------------------------------------------------
    async def purge_expired(
        self, now: int, *, failures_before: int, batch_size: int = PURGE_BATCH
    ) -> Purged:
        """Delete what has expired, in batches of ``batch_size`` rows, each its own short
        transaction, yielding to the event loop in between: deleting thousands of rows in one
        statement stalled every request for most of a second.

        Login failures go once they no longer count: first failure before ``failures_before``
        (the lockout history window) and no lock in force. Without that, every random email an
        attacker tries would stay a row forever."""
        purged = Purged()
        failures = t.login_failures
        steps: list[tuple[Any, Any, Any]] = [
            (t.access_tokens.c.token_hash, t.access_tokens.c.expires_at < now, None),
            (t.revoked_tokens.c.token_hash, t.revoked_tokens.c.expires_at < now, None),
            (t.auth_flows.c.id, t.auth_flows.c.expires_at < now, None),
            # A used code past its expiry is only "invalid" on replay: nothing left to revoke.
            (t.auth_codes.c.code_hash, t.auth_codes.c.expires_at < now, None),
            (
                t.offline_grants.c.id,
                t.offline_grants.c.expires_at < now,
                t.access_tokens.c.session_id,
            ),
            (t.idp_sessions.c.id, t.idp_sessions.c.expires_at < now, None),
            (t.mfa_device_tokens.c.token_hash, t.mfa_device_tokens.c.expires_at < now, None),
            (
                failures.c.key,
                and_(
                    failures.c.first_at < failures_before,
                    or_(failures.c.locked_until.is_(None), failures.c.locked_until <= now),
                ),
                None,
            ),
        ]
        for key, condition, dependent in steps:
            await delete_in_batches(
                self.engine, key, condition, batch_size, purged, dependent=dependent
            )
        return purged
