"""Token storage: where the session (refresh token, access token, expiry, ID token) lives.

Every storage keeps one record per container name and offers a lock that is held around a
refresh, so that N threads, N asyncio tasks and N processes sharing the storage send one
refresh request. Storages are small and synchronous; the async client calls the slow ones
in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import filelock

from authgear.client._errors import KeyringUnavailableError, TokenStorageError

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "FileTokenStorage",
    "KeyringTokenStorage",
    "MemoryTokenStorage",
    "StorageLock",
    "StoredSession",
    "TokenStorage",
]

logger = logging.getLogger("authgear.client")

SCHEMA_VERSION = 1
# Container names are what applications choose; storage keys are what the client derives from
# them (``<name>.<digest of endpoint and client id>``, see SessionCore), hence the longer limit.
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,96}$")

# How long a refresh waits for another holder of the storage lock. The holder's own requests
# time out after 30 s; a lock held much longer is a hung or hostile process, and waiting
# forever would hang every later refresh.
DEFAULT_LOCK_TIMEOUT = 60.0


def check_container_name(name: str) -> str:
    if not _NAME_RE.match(name) or name in {".", ".."}:
        raise ValueError(f"invalid container name {name!r}: use letters, digits, '_', '.', '-'")
    return name


def _check_name(key: str) -> str:
    if not _KEY_RE.match(key) or key in {".", ".."}:
        raise ValueError(f"invalid storage key {key!r}: use letters, digits, '_', '.', '-'")
    return key


def key_prefix(name: str) -> str:
    """``authgear_<key>_``, the prefix of every key name (parity with the official SDKs)."""
    return f"authgear_{_check_name(name)}_"


# --- trusting a folder and its files ------------------------------------------------------


def _uid() -> int | None:
    getuid = getattr(os, "getuid", None)  # POSIX only; Windows folders use ACLs instead
    return int(getuid()) if getuid is not None else None


def check_private_dir(path: Path) -> None:
    """Refuse a folder another local user could plant files in or hold locks in: it must be
    owned by this user and not writable by group or others (like OpenSSH's StrictModes)."""
    uid = _uid()
    if uid is None:
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise TokenStorageError(f"token folder {path} is not a folder")
    if st.st_uid != uid:
        raise TokenStorageError(
            f"refusing token folder {path}: it is owned by uid {st.st_uid}, not by you "
            f"(uid {uid}); use a private folder of your own (--token-dir / directory=)"
        )
    if st.st_mode & 0o022:
        raise TokenStorageError(
            f"refusing token folder {path}: it is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), so another user could plant a session "
            f"or hold its lock; run: chmod 700 {path}"
        )


def read_private_file(path: Path, *, secret: bool = True) -> bytes | None:
    """The bytes of ``path`` (``None`` if absent), after checking that it is a regular file
    owned by this user and writable by nobody else -- nor readable, when ``secret`` (no
    symlinks followed)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise TokenStorageError(f"refusing token file {path}: it is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        uid = _uid()
        if not stat.S_ISREG(st.st_mode):
            raise TokenStorageError(f"refusing token file {path}: not a regular file")
        if uid is not None and st.st_uid != uid:
            raise TokenStorageError(
                f"refusing token file {path}: it is owned by uid {st.st_uid}, not by you "
                f"(uid {uid}); someone else put it there. Delete it and sign in again"
            )
        if uid is not None and st.st_mode & (0o077 if secret else 0o022):
            raise TokenStorageError(
                f"refusing token file {path}: other users may "
                f"{'read or ' if secret else ''}change it "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        return f.read()


def write_private_file(directory: Path, path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600: a temporary file in the same
    folder, fsynced, renamed over the old one (a reader or a crash never sees half)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
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
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def ensure_private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_dir(directory)


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
    # Who issued the session: the client refuses a record bound to another endpoint or client
    # id, so a storage that mixes records up still never sends tokens to the wrong server.
    endpoint: str | None = None
    client_id: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return (
            f"StoredSession(refresh_token=<redacted>, access_token="
            f"{'<redacted>' if self.access_token else None}, expires_at={self.expires_at!r}, "
            f"refresh_after={self.refresh_after!r}, id_token="
            f"{'<redacted>' if self.id_token else None}, endpoint={self.endpoint!r}, "
            f"client_id={self.client_id!r})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "refresh_token": self.refresh_token,
            "access_token": self.access_token,
            "expires_at": self.expires_at,
            "refresh_after": self.refresh_after,
            "id_token": self.id_token,
            "endpoint": self.endpoint,
            "client_id": self.client_id,
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
        endpoint, client_id = data.get("endpoint"), data.get("client_id")
        for v in (endpoint, client_id):
            if v is not None and not isinstance(v, str):
                raise ValueError("bad endpoint or client_id")
        return cls(
            refresh_token=rt,
            access_token=at,
            expires_at=float(exp) if exp is not None else None,
            refresh_after=float(ra) if ra is not None else None,
            id_token=it,
            endpoint=endpoint,
            client_id=client_id,
        )

    def without_access_token(self) -> StoredSession:
        return replace(self, access_token=None, expires_at=None, refresh_after=None)


class StorageLock(Protocol):
    """A lock shared by every user of one storage record (threads, tasks, processes).

    A blocking ``acquire`` should give up after a finite time by raising
    :class:`TokenStorageError`; the SDK's own locks do (``lock_timeout``, 60 s by default) and
    carry it as ``timeout``, which the async client honours while it polls."""

    def acquire(self, blocking: bool = True) -> bool: ...

    def release(self) -> None: ...


@runtime_checkable
class TokenStorage(Protocol):
    """Where sessions are kept. ``name`` is the storage key the client derives from its
    container name, endpoint and client id (``Authgear.storage_key``); a storage must keep
    records under different keys apart."""

    def load(self, name: str) -> StoredSession | None: ...

    def save(self, name: str, record: StoredSession) -> None: ...

    def delete(self, name: str) -> None: ...

    def lock(self, name: str) -> StorageLock: ...


def lock_timeout_error(what: str, timeout: float) -> TokenStorageError:
    return TokenStorageError(
        f"the token storage lock {what} was not released within {timeout:g} s: another "
        "thread or process holds it (a refresh that hangs, or another user's process if the "
        "folder is shared); stop that process and try again"
    )


class _ThreadLock:
    def __init__(self, lock: threading.Lock, name: str, timeout: float) -> None:
        self._lock = lock
        self._name = name
        self.timeout = timeout

    def acquire(self, blocking: bool = True) -> bool:
        if not blocking:
            return self._lock.acquire(False)
        if not self._lock.acquire(timeout=self.timeout):
            raise self.timeout_error()
        return True

    def timeout_error(self) -> TokenStorageError:
        return lock_timeout_error(f"for {self._name!r}", self.timeout)

    def release(self) -> None:
        self._lock.release()


class MemoryTokenStorage:
    """Keeps sessions in this process only; they are gone when it exits."""

    def __init__(self, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self._records: dict[str, StoredSession] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.lock_timeout = lock_timeout

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
        return _ThreadLock(lock, name, self.lock_timeout)


class _FileLock:
    """A fresh ``filelock.FileLock`` (own file descriptor) per use: ``flock`` then excludes
    other threads of this process too, which one shared, non-thread-local instance would not."""

    def __init__(self, path: Path, timeout: float) -> None:
        self._lock = filelock.FileLock(path, thread_local=False, mode=0o600)
        self._path = path
        self.timeout = timeout

    def acquire(self, blocking: bool = True) -> bool:
        try:
            self._lock.acquire(timeout=self.timeout if blocking else 0)
        except filelock.Timeout:
            if blocking:
                raise self.timeout_error() from None
            return False
        return True

    def timeout_error(self) -> TokenStorageError:
        return lock_timeout_error(str(self._path), self.timeout)

    def release(self) -> None:
        self._lock.release()


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("authgear", appauthor=False))


class FileTokenStorage:
    """One JSON file per storage key, ``authgear_<key>.json``, in ``directory`` (default: the
    platform's user data folder, e.g. ``~/.local/share/authgear``).

    The folder must be yours and not writable by group or others, and each file yours with
    mode 0600, or the storage refuses it with :class:`TokenStorageError` (another local user
    could otherwise plant a session or hold the lock). Files are written to a temporary file
    in the same folder, fsynced and renamed over the old one, so a reader (or a crash) never
    sees half a record. A file that does not parse is moved aside (``*.corrupt-<time>``) and
    read as "no session". A lock file ``authgear_<key>.json.lock`` serializes refreshes
    across processes; waiting for it gives up after ``lock_timeout`` seconds.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_data_dir()
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"FileTokenStorage(directory={str(self.directory)!r})"

    def path(self, name: str) -> Path:
        return self.directory / f"{key_prefix(name)[:-1]}.json"

    def load(self, name: str) -> StoredSession | None:
        path = self.path(name)
        check_private_dir(self.directory)
        raw = read_private_file(path)
        if raw is None:
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
        path = self.path(name)
        ensure_private_dir(self.directory)
        data = json.dumps(record.to_json(), separators=(",", ":")).encode("utf-8")
        write_private_file(self.directory, path, data)

    def delete(self, name: str) -> None:
        path = self.path(name)
        check_private_dir(self.directory)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        _fsync_dir(self.directory)

    def lock(self, name: str) -> StorageLock:
        path = self.path(name)
        ensure_private_dir(self.directory)
        return _FileLock(path.with_name(path.name + ".lock"), self.lock_timeout)


class KeyringTokenStorage:
    """The OS keyring (macOS Keychain, Windows Credential Locker, Secret Service), via the
    optional ``keyring`` package (``pip install 'authgear[keyring]'``).

    Entries, in service ``service`` (default ``"authgear"``): ``authgear_<key>_refreshToken``
    (the refresh token, as in the official SDKs), ``authgear_<key>_idToken`` and
    ``authgear_<key>_accessToken`` (a JSON object with the access token and its expiry).
    Refreshes are serialized across processes by a lock file in ``lock_directory`` (held to
    the same ownership rules as :class:`FileTokenStorage`'s folder).
    """

    def __init__(
        self,
        service: str = "authgear",
        *,
        lock_directory: str | os.PathLike[str] | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
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
        self.lock_timeout = lock_timeout

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
        ensure_private_dir(self.lock_directory)
        return _FileLock(self.lock_directory / f"{key_prefix(name)}keyring.lock", self.lock_timeout)
