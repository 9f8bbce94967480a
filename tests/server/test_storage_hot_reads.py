"""The hot-path reads (issue 11) on real SQLite and PostgreSQL: ``fetch_first`` (SQLite: the
statement compiled once and run on the driver's connection) returns exactly what SQLAlchemy's
own execution returns, JSON and booleans included; the token-session query tells a grant from a
browser session, a revoked token, another client's grant and another user's session; and
migration 0012 (revoked_tokens) goes down and up again."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from test_migration_0007 import database_url, tables  # noqa: F401 - the fixture

from authgear.server.storage import IdpSession, OfflineGrant, PreviousHash, open_repository
from authgear.server.storage import sql as statements
from authgear.server.storage.migrate import alembic_config, upgrade

NOW = 1_800_000_000


def _grant(grant_id: str, user_id: str, client_id: str) -> OfflineGrant:
    return OfflineGrant(
        id=grant_id,
        user_id=user_id,
        client_id=client_id,
        idp_session_id="s1",
        scopes=["openid", "offline_access"],
        refresh_hash="h" * 64,
        previous_hashes=[PreviousHash("p" * 64, NOW - 5)],
        created_at=NOW,
        authenticated_at=NOW,
        amr=["pwd", "otp"],
        last_access_at=NOW,
        last_access_ip="127.0.0.1",
        last_access_user_agent="ua ü",
        device_info={"ios": {"model": "x", "n": 1.5, "on": True}},
        expires_at=NOW + 3600,
    )


async def _exercise(url: str) -> dict[str, Any]:
    repo = open_repository(url)
    try:
        await repo.create_user(
            user_id="u1",
            email="a@example.com",
            password_hash=None,
            now=NOW,
            email_verified=True,
            roles=["admin", "ü"],
        )
        await repo.create_user(user_id="u2", email="b@example.com", password_hash="x", now=NOW)
        await repo.create_grant(_grant("g1", "u1", "app"))
        await repo.create_idp_session(
            IdpSession("s1", "u1", "x" * 64, NOW, NOW, ["pwd"], NOW, None, None, NOW + 60)
        )
        await repo.revoke_token("t" * 64, NOW + 60)
        await repo.revoke_token("t" * 64, NOW + 60)  # again: a no-op, not an error
        out: dict[str, Any] = {}
        db = repo.engine  # type: ignore[attr-defined]
        for name, stmt, params in (
            ("grant", statements._GET_GRANT_AND_USER, {"b_id": "g1"}),
            ("none", statements._GET_GRANT_AND_USER, {"b_id": "nope"}),
            (
                "session",
                statements._TOKEN_SESSION,
                {"b_sid": "g1", "b_user": "u1", "b_client": "app", "b_hash": "t" * 64},
            ),
        ):
            fast = await db.fetch_first(stmt, params)
            async with db.connect() as conn:
                ref = (await conn.execute(stmt, params)).mappings().first()
            assert (dict(fast) if fast else None) == (dict(ref) if ref else None), name
            out[name] = fast
        found = await repo.get_grant_and_user("g1")
        assert found is not None
        grant, user = found
        assert grant == _grant("g1", "u1", "app")
        assert user.roles == ["admin", "ü"] and user.email_verified is True
        assert user.disabled is False and user.password_hash is None
        ts = repo.get_token_session
        offline = await ts("g1", "u1", "app", "t" * 64)
        assert offline is not None and (offline.kind, offline.revoked) == ("offline", True)
        assert offline.expires_at == NOW + 3600 and offline.user.id == "u1"
        browser = await ts("s1", "u1", "app", "z" * 64)
        assert browser is not None and (browser.kind, browser.revoked) == ("idp", False)
        other_client = await ts("g1", "u1", "other-app", "z" * 64)
        assert other_client is not None and other_client.kind is None
        other_user = await ts("g1", "u2", "app", "z" * 64)
        assert other_user is not None and other_user.kind is None
        assert await ts("g1", "nobody", "app", "z" * 64) is None
        assert await repo.is_token_revoked("t" * 64)
        assert not await repo.is_token_revoked("z" * 64)
        return out
    finally:
        await repo.close()


def test_hot_reads_match_sqlalchemy_and_tell_sessions_apart(database_url: str) -> None:  # noqa: F811
    upgrade(database_url)
    out = asyncio.run(_exercise(database_url))
    assert out["none"] is None
    assert out["grant"]["u_email_verified"] is True  # a bool, not SQLite's 1
    assert out["grant"]["device_info"] == {"ios": {"model": "x", "n": 1.5, "on": True}}


def test_0012_revoked_tokens_down_and_up(database_url: str) -> None:  # noqa: F811
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "head")
    assert "revoked_tokens" in tables(database_url)
    command.downgrade(cfg, "0011")
    assert "revoked_tokens" not in tables(database_url)
    command.upgrade(cfg, "head")
    assert "revoked_tokens" in tables(database_url)
