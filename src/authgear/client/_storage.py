"""Token storage: where the session (refresh token, access token, expiry, ID token) lives.

Every storage keeps one record per container name and offers a lock that is held around a
refresh, so that N threads, N asyncio tasks and N processes sharing the storage send one
refresh request. Storages are small and synchronous; the async client calls the slow ones
in a worker thread.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import filelock

from authgear.client._errors import KeyringUnavailableError

__all__ = [
    "FileTokenStorage",
    "KeyringTokenStorage",
    "MemoryTokenStorage",
    "StorageLock",
    "StoredSession",
    "TokenStorage",
]

logger = logging.getLogger("authgear.client")

SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name) or name in {".", ".."}:
        raise ValueError(f"invalid container name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def key_prefix(name: str) -> str:
    """``authgear_<name>_``, the prefix of every key name (parity with the official SDKs)."""
    return f"authgear_{_check_name(name)}_"


@dataclass(frozen=True, slots=True)
class StoredSession:
    """One session record. Immutable: a change makes a new record.

    ``expires_at`` is when the access token really expires; ``refresh_after`` is when the SDK
    treats it as expired (issue time + 0.9 x ``expires_in``). Both are Unix seconds.
    """

    refresh_token: str
    access_token: str | None = None
    expires_at: float | None = None
    refresh_after: float | None = None
    id_token: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return (
            f"StoredSession(refresh_token=<redacted>, access_token="
            f"{'<redacted>' if self.access_token else None}, expires_at={self.expires_at!r}, "
            f"refresh_after={self.refresh_after!r}, id_token="
            f"{'<redacted>' if self.id_token else None})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "refresh_token": self.refresh_token,
            "access_token": self.access_token,
            "expires_at": self.expires_at,
            "refresh_after": self.refresh_after,
            "id_token": self.id_token,
        }

    @classmethod
    def from_json(cls, data: object) -> StoredSession:
        """Parse a record; raises ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported schema version {data.get('version')!r}")
        rt = data.get("refresh_token")
        if not isinstance(rt, str) or not rt:
            raise ValueError("refresh_token missing")
        at = data.get("access_token")
        it = data.get("id_token")
        exp = data.get("expires_at")
        ra = data.get("refresh_after")
        for v in (exp, ra):
            if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
                raise ValueError("bad expiry")
        if at is not None and not isinstance(at, str):
            raise ValueError("bad access_token")
        if it is not None and not isinstance(it, str):
            raise ValueError("bad id_token")
        return cls(
            refresh_token=rt,
            access_token=at,
            expires_at=float(exp) if exp is not None else None,
            refresh_after=float(ra) if ra is not None else None,
            id_token=it,
        )

    def without_access_token(self) -> StoredSession:
        return replace(self, access_token=None, expires_at=None, refresh_after=None)


class StorageLock(Protocol):
    """A lock shared by every user of one storage record (threads, tasks, processes)."""

    def acquire(self, blocking: bool = True) -> bool: ...

    def release(self) -> None: ...


@runtime_checkable
class TokenStorage(Protocol):
    """Where sessions are kept. ``name`` is the container name (``"default"`` by default)."""

    def load(self, name: str) -> StoredSession | None: ...

    def save(self, name: str, record: StoredSession) -> None: ...

    def delete(self, name: str) -> None: ...

    def lock(self, name: str) -> StorageLock: ...


class _ThreadLock:
    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def acquire(self, blocking: bool = True) -> bool:
        return self._lock.acquire(blocking)

    def release(self) -> None:
        self._lock.release()


class MemoryTokenStorage:
    """Keeps sessions in this process only; they are gone when it exits."""

    def __init__(self) -> None:
        self._records: dict[str, StoredSession] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryTokenStorage(names={sorted(self._records)!r})"

    def load(self, name: str) -> StoredSession | None:
        return self._records.get(_check_name(name))

    def save(self, name: str, record: StoredSession) -> None:
        self._records[_check_name(name)] = record

    def delete(self, name: str) -> None:
        self._records.pop(_check_name(name), None)

    def lock(self, name: str) -> StorageLock:
        with self._guard:
            lock = self._locks.setdefault(_check_name(name), threading.Lock())
        return _ThreadLock(lock)


class _FileLock:
    """A fresh ``filelock.FileLock`` (own file descriptor) per use: ``flock`` then excludes
    other threads of this process too, which one shared, non-thread-local instance would not."""

    def __init__(self, path: Path) -> None:
        self._lock = filelock.FileLock(path, thread_local=False, mode=0o600)

    def acquire(self, blocking: bool = True) -> bool:
        try:
            self._lock.acquire(timeout=-1 if blocking else 0)
        except filelock.Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("authgear", appauthor=False))


class FileTokenStorage:
    """One JSON file per container name, ``authgear_<name>.json``, in ``directory``
    (default: the platform's user data folder, e.g. ``~/.local/share/authgear``).

    Files are written with mode 0600 to a temporary file in the same folder, fsynced and
    renamed over the old one, so a reader (or a crash) never sees half a record. A file that
    does not parse is moved aside (``*.corrupt-<time>``) and read as "no session".
    A lock file ``authgear_<name>.json.lock`` serializes refreshes across processes.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_data_dir()

    def __repr__(self) -> str:
        return f"FileTokenStorage(directory={str(self.directory)!r})"

    def path(self, name: str) -> Path:
        return self.directory / f"{key_prefix(name)[:-1]}.json"

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def load(self, name: str) -> StoredSession | None:
        path = self.path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return StoredSession.from_json(json.loads(raw.decode("utf-8")))
        except (ValueError, UnicodeDecodeError) as e:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time() * 1000)}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            logger.warning(
                "token file %s is unreadable (%s); moved it to %s and treating it as no session",
                path,
                type(e).__name__,
                aside.name,
            )
            return None

    def save(self, name: str, record: StoredSession) -> None:
        self._ensure_dir()
        path = self.path(name)
        data = json.dumps(record.to_json(), separators=(",", ":")).encode("utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))
        self._fsync_dir()

    def lock(self, name: str) -> StorageLock:
        self._ensure_dir()
        return _FileLock(self.path(name).with_name(self.path(name).name + ".lock"))


class KeyringTokenStorage:
    """The OS keyring (macOS Keychain, Windows Credential Locker, Secret Service), via the
    optional ``keyring`` package (``pip install 'authgear[keyring]'``).

    Entries, in service ``service`` (default ``"authgear"``): ``authgear_<name>_refreshToken``
    (the refresh token, as in the official SDKs), ``authgear_<name>_idToken`` and
    ``authgear_<name>_accessToken`` (a JSON object with the access token and its expiry).
    Refreshes are serialized across processes by a lock file in ``lock_directory``.
    """

    def __init__(
        self,
        service: str = "authgear",
        *,
        lock_directory: str | os.PathLike[str] | None = None,
    ) -> None:
        try:
            keyring: Any = importlib.import_module("keyring")
            importlib.import_module("keyring.backends.fail")
            importlib.import_module("keyring.errors")
        except ImportError as e:
            raise KeyringUnavailableError(
                "KeyringTokenStorage needs the 'keyring' package: pip install 'authgear[keyring]'"
            ) from e
        backend = keyring.get_keyring()
        if isinstance(backend, keyring.backends.fail.Keyring):
            raise KeyringUnavailableError(
                "no OS keyring backend is available on this machine (keyring chose "
                f"{type(backend).__module__}); use FileTokenStorage instead, or install and "
                "configure a keyring backend"
            )
        self._keyring = keyring
        self.service = service
        self.lock_directory = (
            Path(lock_directory) if lock_directory is not None else default_data_dir()
        )

    def __repr__(self) -> str:
        return f"KeyringTokenStorage(service={self.service!r})"

    def _get(self, key: str) -> str | None:
        try:
            value: str | None = self._keyring.get_password(self.service, key)
        except self._keyring.errors.KeyringError as e:
            raise KeyringUnavailableError(f"keyring read failed: {type(e).__name__}") from e
        return value

    def _set(self, key: str, value: str) -> None:
        try:
            self._keyring.set_password(self.service, key, value)
        except self._keyring.errors.KeyringError as e:
            raise KeyringUnavailableError(f"keyring write failed: {type(e).__name__}") from e

    def _del(self, key: str) -> None:
        errors = self._keyring.errors
        try:
            self._keyring.delete_password(self.service, key)
        except errors.PasswordDeleteError:
            pass  # nothing stored under that key
        except errors.KeyringError as e:
            raise KeyringUnavailableError(f"keyring delete failed: {type(e).__name__}") from e

    def load(self, name: str) -> StoredSession | None:
        p = key_prefix(name)
        rt = self._get(p + "refreshToken")
        if not rt:
            return None
        record = StoredSession(refresh_token=rt, id_token=self._get(p + "idToken") or None)
        at_json = self._get(p + "accessToken")
        if at_json:
            try:
                at = json.loads(at_json)
                if isinstance(at, dict) and isinstance(at.get("access_token"), str):
                    exp, ra = at.get("expires_at"), at.get("refresh_after")
                    record = replace(
                        record,
                        access_token=at["access_token"],
                        expires_at=float(exp) if isinstance(exp, int | float) else None,
                        refresh_after=float(ra) if isinstance(ra, int | float) else None,
                    )
            except ValueError:
                logger.warning("keyring entry %saccessToken is unreadable; ignoring it", p)
        return record

    def save(self, name: str, record: StoredSession) -> None:
        p = key_prefix(name)
        if record.access_token is not None:
            self._set(
                p + "accessToken",
                json.dumps(
                    {
                        "access_token": record.access_token,
                        "expires_at": record.expires_at,
                        "refresh_after": record.refresh_after,
                    }
                ),
            )
        else:
            self._del(p + "accessToken")
        if record.id_token is not None:
            self._set(p + "idToken", record.id_token)
        else:
            self._del(p + "idToken")
        self._set(p + "refreshToken", record.refresh_token)

    def delete(self, name: str) -> None:
        p = key_prefix(name)
        for suffix in ("refreshToken", "accessToken", "idToken"):
            self._del(p + suffix)

    def lock(self, name: str) -> StorageLock:
        self.lock_directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return _FileLock(self.lock_directory / f"{key_prefix(name)}keyring.lock")
