"""Server keys of the sign-in: the HMAC key of recovery-code hashes (a server secret under the
key-encryption key, loaded at start-up with the others: see keys.SERVER_SECRETS)."""

from __future__ import annotations

from authgear.server.keys import MFA_KEY, KeyCipher, load_server_secret
from authgear.server.state import ServerState


async def mfa_key(state: ServerState) -> bytes:
    if state.mfa_key is None:
        cipher = KeyCipher.from_config(state.config)
        state.mfa_key = await load_server_secret(state.repo, MFA_KEY, cipher)
    return state.mfa_key
