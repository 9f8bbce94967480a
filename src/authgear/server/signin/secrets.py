"""Server keys of the sign-in: the key of recovery-code hashes, generated once per server (in
``server_secrets``, like the CSRF key) and read on first use."""

from __future__ import annotations

import secrets

from authgear.server.sessions import now_s
from authgear.server.state import ServerState

MFA_KEY = "mfa_hash_key"


async def mfa_key(state: ServerState) -> bytes:
    if state.mfa_key is None:
        value = await state.repo.get_or_create_secret(MFA_KEY, secrets.token_hex(32), now_s())
        state.mfa_key = bytes.fromhex(value)
    return state.mfa_key
