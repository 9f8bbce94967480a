"""Storage of the device authorization grant (RFC 8628): table ``device_codes`` and the shared
counter of failed user-code entries (table ``counters``). Every method is one short
transaction; the state changes (a decision, a poll, the issue) are compare-and-set, so of two
concurrent requests exactly one wins."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import case, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from authgear.server.storage import rows
from authgear.server.storage import schema as t
from authgear.server.storage.db import Database
from authgear.server.storage.deletes import PURGE_BATCH, delete_in_batches
from authgear.server.storage.models import AccessTokenRecord, OfflineGrant, Purged

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
ISSUED = "issued"
FAILED_ENTRIES = "device_user_code_failures"
# RFC 8628 §3.5: each slow_down adds 5 seconds to the interval.
SLOW_DOWN_STEP = 5


@dataclass(frozen=True, slots=True)
class DeviceCode:
    id: str
    device_code_hash: str = field(repr=False)
    user_code_hash: str = field(repr=False)
    client_id: str
    scopes: list[str]
    created_at: int
    expires_at: int
    poll_interval: int
    last_poll_at: int | None
    last_poll_too_fast: bool
    status: str
    failures_base: int
    request_ip: str | None
    request_user_agent: str | None
    user_id: str | None = None
    idp_session_id: str | None = None
    auth_time: int | None = None
    amr: list[str] = field(default_factory=list)
    decided_at: int | None = None
    issued_grant_id: str | None = None


_NAMES = tuple(f.name for f in fields(DeviceCode))


def _row(r: Mapping[Any, Any]) -> DeviceCode:
    values = {name: r[name] for name in _NAMES}
    values["last_poll_too_fast"] = bool(values["last_poll_too_fast"])
    values["amr"] = list(values["amr"] or [])
    return DeviceCode(**values)


class DeviceCodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert: Any = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    # -- the failed-entry counter ------------------------------------------------------------

    async def failed_entries(self) -> int:
        """The counter now (a new device code's ``failures_base``)."""
        c = t.counters
        async with self.db.connect() as conn:
            value = (
                await conn.execute(select(c.c.value).where(c.c.name == FAILED_ENTRIES))
            ).scalar_one_or_none()
        return int(value or 0)

    async def count_entry(self) -> int:
        """Count one user-code entry as failed before it is checked (atomic across processes);
        returns the counter including it. A right code is given back (:meth:`uncount_entry`)."""
        c = t.counters
        stmt = (
            self._insert(c)
            .values(name=FAILED_ENTRIES, value=1)
            .on_conflict_do_update(index_elements=[c.c.name], set_={"value": c.c.value + 1})
            .returning(c.c.value)
        )
        async with self.db.begin() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    async def uncount_entry(self) -> None:
        c = t.counters
        async with self.db.begin() as conn:
            await conn.execute(
                update(c).where(c.c.name == FAILED_ENTRIES).values(value=c.c.value - 1)
            )

    # -- device codes ------------------------------------------------------------------------

    async def add(self, code: DeviceCode) -> bool:
        """Store a new code; False when its device or user code collides with a stored one."""
        values = {name: getattr(code, name) for name in _NAMES}
        try:
            async with self.db.begin() as conn:
                await conn.execute(insert(t.device_codes).values(**values))
        except IntegrityError:
            return False
        return True

    async def get(self, code_id: str) -> DeviceCode | None:
        d = t.device_codes
        async with self.db.connect() as conn:
            r = (await conn.execute(select(d).where(d.c.id == code_id))).mappings().first()
        return _row(r) if r else None

    async def pending_by_user_code(self, user_code_hash: str, now: int) -> DeviceCode | None:
        d = t.device_codes
        q = select(d).where(
            d.c.user_code_hash == user_code_hash, d.c.status == PENDING, d.c.expires_at > now
        )
        async with self.db.connect() as conn:
            r = (await conn.execute(q)).mappings().first()
        return _row(r) if r else None

    async def decide(
        self,
        code_id: str,
        *,
        approve: bool,
        user_id: str,
        idp_session_id: str,
        auth_time: int,
        amr: list[str],
        now: int,
    ) -> bool:
        """Approve or deny a pending, unexpired code; False when it is no longer pending (a
        decision in another tab came first) or has expired."""
        d = t.device_codes
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(d)
                .where(d.c.id == code_id, d.c.status == PENDING, d.c.expires_at > now)
                .values(
                    status=APPROVED if approve else DENIED,
                    user_id=user_id,
                    idp_session_id=idp_session_id,
                    auth_time=auth_time,
                    amr=amr,
                    decided_at=now,
                )
            )
        return bool(res.rowcount)

    async def poll(
        self, device_code_hash: str, client_id: str, now: int, max_interval: int
    ) -> DeviceCode | None:
        """Record a poll of the code by its client, in one statement (atomic per code): a poll
        sooner than ``poll_interval`` after the previous one is marked too fast and the
        interval grows by SLOW_DOWN_STEP (RFC 8628 §3.5, at most ``max_interval``). Returns the
        code as it is after this poll; None for an unknown code or another client's."""
        d = t.device_codes
        too_fast = d.c.last_poll_at.is_not(None) & (now - d.c.last_poll_at < d.c.poll_interval)
        grown = case(
            (d.c.poll_interval + SLOW_DOWN_STEP > max_interval, max_interval),
            else_=d.c.poll_interval + SLOW_DOWN_STEP,
        )
        stmt = (
            update(d)
            .where(d.c.device_code_hash == device_code_hash, d.c.client_id == client_id)
            .values(
                # Every SET expression reads the row as it was before this statement.
                last_poll_too_fast=case((too_fast, True), else_=False),
                poll_interval=case((too_fast, grown), else_=d.c.poll_interval),
                last_poll_at=now,
            )
            .returning(*d.c)
        )
        async with self.db.begin() as conn:
            r = (await conn.execute(stmt)).mappings().first()
        return _row(r) if r else None

    async def issue(
        self,
        code_id: str,
        *,
        grant: OfflineGrant | None,
        token: AccessTokenRecord | None,
        browser_session: str | None,
        now: int,
    ) -> bool:
        """Store what an approved code issued, once: the code moves from approved to issued
        in the same transaction that stores the grant (and an opaque access token's row), so of two
        concurrent polls one gets the tokens and the other nothing. ``browser_session``:
        tokens without a grant belong to that browser session, which must still exist (its row
        is locked, so a concurrent sign-out ends these tokens with it)."""
        d = t.device_codes
        async with self.db.begin() as conn:
            res = await conn.execute(
                update(d)
                .where(d.c.id == code_id, d.c.status == APPROVED, d.c.expires_at > now)
                .values(status=ISSUED, issued_grant_id=grant.id if grant else None)
            )
            if not res.rowcount:
                return False
            if browser_session is not None:
                s = t.idp_sessions
                alive = (
                    await conn.execute(
                        select(s.c.id)
                        .where(s.c.id == browser_session, s.c.expires_at > now)
                        .with_for_update()
                    )
                ).first()
                if alive is None:
                    # Nothing to bind the tokens to: the code stays issued (used up).
                    return False
            if grant is not None:
                await rows.insert_grant(conn, grant)
            if token is not None:
                await rows.insert_access_token(conn, token)
        return True

    async def purge(self, now: int, purged: Purged) -> None:
        d = t.device_codes
        await delete_in_batches(self.db, d.c.id, d.c.expires_at < now, PURGE_BATCH, purged)
