"""How users, sessions and audit entries are shown: JSON shapes, readable user agents and
device names, relative times."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from authgear.server.config import ServerConfig
from authgear.server.storage import User
from authgear.server.storage.admin import IDP_SESSION, AuditEntry, SessionRecord

_BROWSERS: list[tuple[str, re.Pattern[str]]] = [
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/(\d+)")),
    ("Opera", re.compile(r"(?:OPR|Opera)/(\d+)")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/(\d+)")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome (headless)", re.compile(r"HeadlessChrome/(\d+)")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS)/(\d+)")),
    ("Safari", re.compile(r"Version/(\d+)(?:\.\d+)*.*Safari/")),
    ("curl", re.compile(r"^curl/(\d+)")),
    ("Python httpx", re.compile(r"python-httpx2?/(\d+)")),
    ("Python requests", re.compile(r"python-requests/(\d+)")),
    ("OkHttp", re.compile(r"okhttp/(\d+)")),
]
_SYSTEMS: list[tuple[str, re.Pattern[str]]] = [
    ("Windows", re.compile(r"Windows NT")),
    ("iPadOS", re.compile(r"iPad")),
    ("iOS", re.compile(r"iPhone|iPod|CFNetwork|Darwin/.*iOS")),
    ("Android", re.compile(r"Android")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("Linux", re.compile(r"Linux|X11")),
]


def describe_user_agent(ua: str | None) -> str:
    """'Chrome 131 on macOS', 'Python httpx 0', or the raw string shortened."""
    if not ua:
        return "Unknown device"
    browser = next((f"{name} {m.group(1)}" for name, rx in _BROWSERS if (m := rx.search(ua))), None)
    system = next((name for name, rx in _SYSTEMS if rx.search(ua)), None)
    if browser and system:
        return f"{browser} on {system}"
    if browser:
        return browser
    if system:
        return f"Unknown browser on {system}"
    return ua[:60] + ("…" if len(ua) > 60 else "")


def device_name(info: dict[str, Any]) -> str | None:
    """The name Authgear's native SDKs report in ``x_device_info`` (iOS UIDevice, Android
    Build / Settings), if any."""
    ios = info.get("ios")
    if isinstance(ios, dict):
        device = ios.get("UIDevice")
        if isinstance(device, dict):
            name = device.get("name") or device.get("model")
            system = device.get("systemName")
            version = device.get("systemVersion")
            if isinstance(name, str) and name:
                os_part = f" ({system} {version})" if system and version else ""
                return f"{name}{os_part}"[:120]
    android = info.get("android")
    if isinstance(android, dict):
        settings = android.get("Settings")
        build = android.get("Build")
        name = None
        if isinstance(settings, dict) and isinstance(settings.get("Global"), dict):
            name = settings["Global"].get("DEVICE_NAME")
        if not name and isinstance(build, dict):
            maker, model = build.get("MANUFACTURER"), build.get("MODEL")
            name = " ".join(str(p) for p in (maker, model) if p) or None
        if isinstance(name, str) and name:
            release = None
            if isinstance(build, dict) and isinstance(build.get("VERSION"), dict):
                release = build["VERSION"].get("RELEASE")
            return f"{name} (Android {release})"[:120] if release else name[:120]
    return None


def session_title(s: SessionRecord) -> str:
    return device_name(s.device_info) or describe_user_agent(s.last_access_user_agent)


def relative_time(ts: int | None, now: int) -> str:
    if ts is None:
        return "never"
    delta = now - ts
    future = delta < 0
    delta = abs(delta)
    if delta < 45:
        return "just now" if not future else "in a few seconds"
    for unit, size in (("year", 31536000), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= size:
            n = round(delta / size) if unit == "minute" else delta // size
            text = f"{n} {unit}{'s' if n != 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "just now"


def iso(ts: int | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def full_time(ts: int | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "email_verified": user.email_verified,
        "roles": list(user.roles),
        "disabled": user.disabled,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "last_login_at": user.last_login_at,
    }


def client_name(config: ServerConfig, client_id: str | None) -> str | None:
    if client_id is None:
        return None
    client = config.client(client_id)
    return (client.name or client.id) if client is not None else client_id


def session_json(s: SessionRecord, config: ServerConfig | None) -> dict[str, Any]:
    return {
        "id": s.id,
        "kind": s.kind,
        "user_id": s.user_id,
        "client_id": s.client_id,
        "client_name": client_name(config, s.client_id) if config else s.client_id,
        "idp_session_id": s.idp_session_id,
        "display_name": session_title(s),
        "scopes": s.scopes,
        "amr": s.amr,
        "created_at": s.created_at,
        "authenticated_at": s.authenticated_at,
        "expires_at": s.expires_at,
        "last_access": {
            "time": s.last_access_at,
            "ip": s.last_access_ip,
            "user_agent": s.last_access_user_agent,
        },
        "device_info": s.device_info,
    }


def kind_label(s: SessionRecord) -> str:
    return "Browser session" if s.kind == IDP_SESSION else "App session"


def audit_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at,
        "actor": {"type": e.actor_type, "id": e.actor_id, "label": e.actor_label},
        "action": e.action,
        "target": {"type": e.target_type, "id": e.target_id},
        "details": e.details,
        "ip": e.ip,
    }


ACTION_LABELS = {
    "user.create": "Created user",
    "user.disable": "Disabled user",
    "user.enable": "Enabled user",
    "user.delete": "Deleted user",
    "user.set_roles": "Set roles",
    "user.send_reset": "Sent a password reset",
    "user.mark_verified": "Marked email verified",
    "user.mark_unverified": "Marked email not verified",
    "user.set_password": "Set a password",
    "session.revoke": "Revoked session",
    "session.revoke_all": "Revoked all sessions",
    "session.evict": "Ended session (over the per-user limit)",
    "key.create": "Created API key",
    "key.revoke": "Revoked API key",
    "user.reset_mfa": "Reset second factor",
    "passkey.remove": "Removed passkey",
    "passkey.add": "Added passkey",
    "totp.add": "Added authenticator app",
    "totp.remove": "Removed authenticator app",
    "recovery_codes.regenerate": "Made new recovery codes",
    "device_tokens.forget": "Forgot trusted browsers",
}


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action, action)


def actor_text(e: AuditEntry) -> str:
    kind = {
        "api_key": "API key",
        "portal": "Portal",
        "cli": "CLI",
        "self": "User",
        "system": "Server",
    }.get(e.actor_type, e.actor_type)
    label = e.actor_label or e.actor_id
    return f"{kind}: {label}"
