"""Tables. Changes here need a new Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Times are Unix seconds (float precision is not needed; integers index well on both engines).

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False),
    # Lower-cased email, unique: lookups are case-insensitive.
    Column("email_key", String(320), nullable=False, unique=True),
    Column("password_hash", Text, nullable=True),
    Column("email_verified", Boolean, nullable=False, default=False),
    Column("roles", JSON, nullable=False, default=list),
    Column("standard_attributes", JSON, nullable=False, default=dict),
    Column("custom_attributes", JSON, nullable=False, default=dict),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("last_login_at", BigInteger, nullable=True),
    # TOTP authenticators and passkeys (not recovery codes), kept with the authenticators in
    # one transaction: can_reauthenticate is read on every token without another query.
    Column("authenticator_count", Integer, nullable=False, default=0, server_default="0"),
)

idp_sessions = Table(
    "idp_sessions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("authenticated_at", BigInteger, nullable=False),
    Column("amr", JSON, nullable=False, default=list),
    Column("last_access_at", BigInteger, nullable=False),
    Column("last_access_ip", String(64), nullable=True),
    Column("last_access_user_agent", String(512), nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_idp_sessions_user_id", "user_id"),
)

offline_grants = Table(
    "offline_grants",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(200), nullable=False),
    Column("idp_session_id", String(36), nullable=True),
    Column("scopes", JSON, nullable=False),
    Column("refresh_hash", String(64), nullable=False),
    # Superseded refresh-token hashes: [{"h": hash, "t": superseded_at}], newest first.
    Column("previous_hashes", JSON, nullable=False, default=list),
    Column("created_at", BigInteger, nullable=False),
    Column("authenticated_at", BigInteger, nullable=False),
    Column("amr", JSON, nullable=False, default=list),
    Column("last_access_at", BigInteger, nullable=False),
    Column("last_access_ip", String(64), nullable=True),
    Column("last_access_user_agent", String(512), nullable=True),
    Column("device_info", JSON, nullable=False, default=dict),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_offline_grants_user_id", "user_id"),
)

# Opaque access tokens (a client's ``access_token_format: opaque``), keyed by the SHA-256 of the
# token string: nothing else says what they are. JWT access tokens have no row (issue 11): they
# carry their session's id, and userinfo and the resolver check that session instead, so a
# refresh writes nothing and storage grows with sessions, not with requests.
access_tokens = Table(
    "access_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("jti", String(36), nullable=False),
    # "offline" (grant), "idp" (browser session) or "client" (client_credentials).
    Column("session_kind", String(16), nullable=False),
    Column("session_id", String(36), nullable=False),
    Column("user_id", String(36), nullable=True),
    Column("client_id", String(200), nullable=False),
    Column("scope", Text, nullable=False),
    Column("auth_time", BigInteger, nullable=True),
    Column("amr", JSON, nullable=False, default=list),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_access_tokens_session_id", "session_id"),
    Index("ix_access_tokens_expires_at", "expires_at"),
)

auth_codes = Table(
    "auth_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("client_id", String(200), nullable=False),
    Column("user_id", String(36), nullable=False),
    Column("idp_session_id", String(36), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("nonce", Text, nullable=True),
    Column("code_challenge", String(128), nullable=True),
    Column("auth_time", BigInteger, nullable=False),
    Column("amr", JSON, nullable=False, default=list),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    # What the first exchange issued, revoked if the code is replayed.
    Column("issued_grant_id", String(36), nullable=True),
    Column("issued_token_hash", String(64), nullable=True),
    # The acr the request asked for and the sign-in satisfied (emitted in the tokens).
    Column("acr", String(200), nullable=True),
    # Reauthentication of an app session (the id_token_hint's sid): its authenticated_at moves
    # forward when this code is exchanged.
    Column("reauth_grant_id", String(36), nullable=True),
)

# A pending authorization request while the user is on the login/sign-up page.
auth_flows = Table(
    "auth_flows",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    # Who started it (an IPv4 address or an IPv6 /64): live flows are capped per visitor.
    Column("ip_key", String(64), nullable=True),
    # SHA-256 of the browser-binding cookie: a flow continues only in the browser it started in.
    Column("binding", String(64), nullable=True),
    # Bumped by every write; writes and finishing are compare-and-set on it.
    Column("rev", Integer, nullable=False, default=0, server_default="0"),
    Index("ix_auth_flows_ip_key_expires_at", "ip_key", "expires_at"),
    Index("ix_auth_flows_expires_at", "expires_at"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(36), primary_key=True),
    Column("private_pem", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Newest active key signs; older keys stay in the JWKS until retired_at.
    Column("active", Boolean, nullable=False, default=True),
    Column("retire_at", BigInteger, nullable=True),
    # A rotated-in key is published first and signs only from activate_at, so every process
    # serves it in its JWKS before any token carries its kid.
    Column("activate_at", BigInteger, nullable=True),
)

# Fixed-window rate-limit counters shared by all server processes (when there is no Redis).
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("window_start", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
)

# Failed password checks per lower-cased email (existing or not, so lockout reveals nothing).
login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(330), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("first_at", BigInteger, nullable=False),
    Column("locked_until", BigInteger, nullable=True),
)

# A user's authenticators besides the password (which stays in users.password_hash):
# "totp" (secret sealed, counter = last accepted time step, for replay protection),
# "recovery_code" (secret = keyed hash of the code, last_used_at set = consumed) and
# "passkey" (credential_id, COSE public key, counter = sign count).
authenticators = Table(
    "authenticators",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("label", String(200), nullable=True),
    Column("secret", Text, nullable=True),
    Column("counter", BigInteger, nullable=True),
    # base64url of the WebAuthn credential id (at most 1023 bytes).
    Column("credential_id", String(1400), nullable=True, unique=True),
    Column("public_key", Text, nullable=True),
    Column("data", JSON, nullable=False, default=dict),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    Index("ix_authenticators_user_id_kind", "user_id", "kind"),
)

# "Trust this device": SHA-256 of the mfa_device_token cookie, per user, until expires_at.
mfa_device_tokens = Table(
    "mfa_device_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_mfa_device_tokens_user_id", "user_id"),
    Index("ix_mfa_device_tokens_expires_at", "expires_at"),
)

# Secrets the server generates once, e.g. the key that derives rotated refresh tokens.
server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# -- account recovery and verification -------------------------------------------------------

# The live emailed code (and link) per purpose and subject: a lower-cased email for a password
# reset (also for addresses without an account, so answers and limits do not tell them apart),
# a user id for verification and change of email. A new code replaces the previous one. Only
# keyed hashes are stored (security/codes.py).
email_codes = Table(
    "email_codes",
    metadata,
    Column("purpose", String(32), primary_key=True),
    Column("subject", String(330), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    # The address the code was sent to (for a change of email: the new address).
    Column("target", String(320), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("link_hash", String(64), nullable=True, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    # Wrong tries so far, counted before each comparison; the code goes at the maximum.
    Column("failed_attempts", Integer, nullable=False, default=0),
    Index("ix_email_codes_expires_at", "expires_at"),
    Index("ix_email_codes_user_id", "user_id"),
)

# Hashes of a user's previous passwords (password_policy.history_size / history_days); a row is
# written when a password is replaced, with the time it stopped being used.
password_history = Table(
    "password_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_password_history_user_id", "user_id"),
)

# The device authorization grant (RFC 8628): a device code (SHA-256) the device polls with and
# a user code (HMAC under a server key) the user types at /device; pending until a signed-in
# user approves or denies it, then issued once. ``failures_base``: the ``counters`` value of
# failed user-code entries when the code was made (its lock, see device_flow.py).
device_codes = Table(
    "device_codes",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("device_code_hash", String(64), nullable=False, unique=True),
    Column("user_code_hash", String(64), nullable=False, unique=True),
    Column("client_id", String(200), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    # Seconds between polls; grows by 5 with each slow_down (RFC 8628 §3.5).
    Column("poll_interval", Integer, nullable=False),
    Column("last_poll_at", BigInteger, nullable=True),
    # Whether the latest poll came sooner than poll_interval after the one before.
    Column("last_poll_too_fast", Boolean, nullable=False, default=False),
    # pending | approved | denied | issued
    Column("status", String(16), nullable=False),
    Column("failures_base", BigInteger, nullable=False, default=0),
    # Who asked (shown on the approval page): the device's address and user agent.
    Column("request_ip", String(64), nullable=True),
    Column("request_user_agent", String(512), nullable=True),
    # Set by an approval: who, from which browser session, with its auth_time and amr.
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("idp_session_id", String(36), nullable=True),
    Column("auth_time", BigInteger, nullable=True),
    Column("amr", JSON, nullable=False, default=list),
    Column("decided_at", BigInteger, nullable=True),
    Column("issued_grant_id", String(36), nullable=True),
    Index("ix_device_codes_expires_at", "expires_at"),
    Index("ix_device_codes_user_id", "user_id"),
)

# Monotonic counters shared by every process (name -> value), e.g. failed user-code entries.
counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# -- upstream identity providers --------------------------------------------------------------

# A user's accounts at upstream providers (sso/): the configured provider alias and the
# provider's stable subject (an OIDC ``sub``, GitHub's numeric user id), unique together. The
# email, its verified flag and the name are the provider's latest answer, for display.
identities = Table(
    "identities",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("email", String(320), nullable=True),
    Column("email_verified", Boolean, nullable=False, default=False),
    Column("claims", JSON, nullable=False, default=dict),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    UniqueConstraint("provider", "subject", name="uq_identities_provider_subject"),
    Index("ix_identities_user_id", "user_id"),
)

# -- session management (admin API, portal) --------------------------------------------------

# Admin API keys: the key is `agk_<id>.<secret>`; only the SHA-256 of the secret is kept.
admin_api_keys = Table(
    "admin_api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
)

# What administrators did: who (an API key, a portal admin, the CLI, or a user on their own
# sessions), what, when and to which user or session.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    # "api_key", "portal", "cli" or "self"
    Column("actor_type", String(16), nullable=False),
    Column("actor_id", String(200), nullable=False),
    Column("actor_label", String(320), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32), nullable=True),
    Column("target_id", String(200), nullable=True),
    Column("details", JSON, nullable=False, default=dict),
    Column("ip", String(64), nullable=True),
    Index("ix_audit_log_target_id", "target_id"),
)

# The revocation feed (storage/revocations.py): one row per ended session, in commit order of
# the ``seq`` cursor, read by JWT-mode backends. AUTOINCREMENT on SQLite: a purged table must
# not hand out a number again, or a backend's cursor would skip the new rows. Kept only as long
# as an access token lives (housekeeping purges older rows: their tokens have expired).
revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(36), nullable=False),
    Column("revoked_at", BigInteger, nullable=False),
    Index("ix_revoked_sessions_revoked_at", "revoked_at"),
    sqlite_autoincrement=True,
)

# JWT access tokens revoked one by one (RFC 7009 revocation, a replayed authorization code),
# by the SHA-256 of the token: userinfo and the resolver refuse them. Rare; kept until the
# token expires, then purged.
revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_revoked_tokens_expires_at", "expires_at"),
)

# Indexes for "everything of this user" (deleting a user, revoking all of their sessions).
Index("ix_access_tokens_user_id", access_tokens.c.user_id)
Index("ix_auth_codes_idp_session_id", auth_codes.c.idp_session_id)

# Indexes for the purge, which deletes in small batches: each batch finds its rows by index.
Index("ix_auth_codes_expires_at", auth_codes.c.expires_at)
Index("ix_offline_grants_expires_at", offline_grants.c.expires_at)
Index("ix_idp_sessions_expires_at", idp_sessions.c.expires_at)
Index("ix_login_failures_first_at", login_failures.c.first_at)
Index("ix_audit_log_at", audit_log.c.at)
