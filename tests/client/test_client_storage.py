"""Token storages: file format, permissions, corruption, keyring, trust of a shared folder,
lock timeouts, and moving sessions stored by earlier versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from client_support import ScriptedServer

from authgear import AsyncAuthgear, Authgear, SessionState, SessionStateChangeReason
from authgear.client import (
    FileTokenStorage,
    KeyringTokenStorage,
    KeyringUnavailableError,
    MemoryTokenStorage,
    StoredSession,
    TokenStorageError,
)

RECORD = StoredSession("rt", "at", expires_at=10.0, refresh_after=9.0, id_token="it")


def test_file_round_trip_mode_and_format(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path / "d")
    assert storage.load("default") is None
    storage.save("default", RECORD)
    path = storage.path("default")
    assert path.name == "authgear_default.json"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "d").stat().st_mode & 0o777) == 0o700
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["refresh_token"] == "rt"
    assert storage.load("default") == RECORD
    assert storage.load("other") is None
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    storage.delete("default")
    assert storage.load("default") is None
    storage.delete("default")  # idempotent


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b'{"version": 99, "refresh_token": "x"}', b"[]", b""],
)
def test_corrupt_file_moved_aside_no_session(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    storage = FileTokenStorage(tmp_path)
    storage.save("default", RECORD)
    storage.path("default").write_bytes(content)
    ag = Authgear("app", "http://127.0.0.1:9", token_storage=storage)
    ag.configure()
    assert ag.session_state is SessionState.NO_SESSION
    assert ag.session_state_reason is SessionStateChangeReason.NO_TOKEN
    aside = list(tmp_path.glob("authgear_default.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert "unreadable" in caplog.text
    storage.save("default", RECORD)  # a new session can be stored after it
    assert storage.load("default") == RECORD


def test_invalid_container_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileTokenStorage(tmp_path).path("../escape")


def test_memory_storage() -> None:
    s = MemoryTokenStorage()
    s.save("a", RECORD)
    assert s.load("a") == RECORD and s.load("b") is None
    lock = s.lock("a")
    assert lock.acquire(blocking=False)
    assert not s.lock("a").acquire(blocking=False)
    lock.release()


def test_file_lock_excludes_other_holders_in_process(tmp_path: Path) -> None:
    s = FileTokenStorage(tmp_path)
    first = s.lock("default")
    assert first.acquire(blocking=False)
    assert not s.lock("default").acquire(blocking=False)
    first.release()
    again = s.lock("default")
    assert again.acquire(blocking=False)
    again.release()


def test_default_directory_is_user_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    storage = FileTokenStorage()
    assert storage.directory == tmp_path / "authgear"


@pytest.fixture
def dict_keyring() -> Iterator[Any]:
    """An in-memory keyring backend, installed for the test."""
    keyring = pytest.importorskip("keyring")
    from keyring.backend import KeyringBackend

    class DictKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.data: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.data.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.data[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            if (service, username) not in self.data:
                raise keyring.errors.PasswordDeleteError(username)
            del self.data[(service, username)]

    previous = keyring.get_keyring()
    backend = DictKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


def test_keyring_storage(tmp_path: Path, dict_keyring: Any) -> None:
    import keyring

    s = KeyringTokenStorage(lock_directory=tmp_path)
    s.save("default", RECORD)
    assert dict_keyring.data[("authgear", "authgear_default_refreshToken")] == "rt"
    assert s.load("default") == RECORD
    s.delete("default")
    assert s.load("default") is None and dict_keyring.data == {}
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    with pytest.raises(KeyringUnavailableError, match="no OS keyring backend"):
        KeyringTokenStorage()


def test_keyring_entries_of_an_earlier_version_move_to_the_keyed_names(
    scripted: ScriptedServer, tmp_path: Path, dict_keyring: Any
) -> None:
    legacy_token = legacy_id_token(scripted.url, "app")
    dict_keyring.data = {
        ("authgear", "authgear_default_refreshToken"): "rt-old",
        ("authgear", "authgear_default_idToken"): legacy_token,
    }
    storage = KeyringTokenStorage(lock_directory=tmp_path)
    elsewhere = Authgear("app", "http://127.0.0.1:9", token_storage=storage)
    elsewhere.configure()  # another endpoint: not its session, left alone
    assert elsewhere.session_state is SessionState.NO_SESSION
    assert len(dict_keyring.data) == 2
    ag = Authgear("app", scripted.url, token_storage=storage)
    ag.configure()
    assert ag.session_state is SessionState.AUTHENTICATED
    assert dict_keyring.data == {
        ("authgear", f"authgear_{ag.storage_key}_refreshToken"): "rt-old",
        ("authgear", f"authgear_{ag.storage_key}_idToken"): legacy_token,
    }


def test_keyring_lock_folder_open_to_others_is_refused(tmp_path: Path, dict_keyring: Any) -> None:
    shared = tmp_path / "locks"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(TokenStorageError, match="writable by group or others"):
        KeyringTokenStorage(lock_directory=shared).lock("default")


def test_keyring_missing_package_is_clear_error() -> None:
    # A fresh interpreter where `import keyring` fails, as without the optional extra.
    code = (
        "import sys; sys.modules['keyring'] = None\n"
        "from authgear import KeyringTokenStorage, KeyringUnavailableError\n"
        "try:\n    KeyringTokenStorage()\n"
        "except KeyringUnavailableError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install" in out.stdout


def test_env_does_not_leak_tokens_into_repr(tmp_path: Path) -> None:
    s = FileTokenStorage(tmp_path)
    s.save("default", StoredSession("SECRET-RT", "SECRET-AT"))
    assert "SECRET" not in repr(s.load("default"))
    assert os.fspath(tmp_path) in repr(s)


# --- a shared token folder is not trusted (issue 18.8) ---------------------------------------

OTHER_UID = 12345


def as_other_user(path: Path) -> None:
    """Make ``path`` belong to another local user (the tests run as root in CI)."""
    if os.getuid() != 0:
        pytest.skip("needs root to create files owned by another user")
    os.chown(path, OTHER_UID, OTHER_UID)


def test_world_writable_token_folder_is_refused_before_anything_is_read(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """A shared temporary folder as --token-dir: another user could plant a session there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    storage = FileTokenStorage(shared)
    ag = Authgear("app", scripted.url, token_storage=storage)
    storage.save(ag.storage_key, RECORD)
    shared.chmod(0o777)
    with pytest.raises(TokenStorageError, match=r"writable by group or others \(mode 0777\)"):
        ag.configure()
    for call in (
        lambda: storage.load(ag.storage_key),
        lambda: storage.save(ag.storage_key, RECORD),
        lambda: storage.delete(ag.storage_key),
        lambda: storage.lock(ag.storage_key),
    ):
        with pytest.raises(TokenStorageError, match="chmod 700"):
            call()
    assert scripted.seen == []


def test_token_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    as_other_user(theirs)
    with pytest.raises(TokenStorageError, match=f"owned by uid {OTHER_UID}, not by you"):
        FileTokenStorage(theirs).load("default")


def test_session_file_planted_by_another_user_is_refused_not_loaded(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    """The attacker's refresh token must not become the victim's session."""
    storage = FileTokenStorage(tmp_path)
    ag = Authgear("app", scripted.url, token_storage=storage)
    storage.save(ag.storage_key, StoredSession("attacker-rt", "attacker-at"))
    as_other_user(storage.path(ag.storage_key))
    with pytest.raises(TokenStorageError, match=f"owned by uid {OTHER_UID}.*Delete it"):
        ag.configure()
    assert scripted.seen == []


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o606])
def test_session_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    storage = FileTokenStorage(tmp_path)
    storage.save("default", RECORD)
    storage.path("default").chmod(mode)
    with pytest.raises(TokenStorageError, match=f"mode {mode:04o}.*chmod 600"):
        storage.load("default")


def test_symlinked_session_file_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(RECORD.to_json()))
    elsewhere.chmod(0o600)
    storage = FileTokenStorage(tmp_path / "d")
    storage.save("other", RECORD)  # creates the folder
    storage.path("default").symlink_to(elsewhere)
    with pytest.raises(TokenStorageError, match="symbolic link"):
        storage.load("default")


def test_fifo_as_session_file_is_refused_without_hanging(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path)
    os.mkfifo(storage.path("default"), 0o600)
    with pytest.raises(TokenStorageError, match="not a regular file"):
        storage.load("default")


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[Callable[[Path], None]]:
    """Another process that takes a lock file and never lets go."""
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> None:
        code = (
            "import filelock, sys, time\n"
            "lock = filelock.FileLock(sys.argv[1])\nlock.acquire()\n"
            "print('held', flush=True)\ntime.sleep(3600)\n"
        )
        p = subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True
        )
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "held"

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def _stale() -> StoredSession:
    return StoredSession("rt", "at", expires_at=0.0, refresh_after=0.0)


def test_lock_held_forever_by_another_process_is_a_clear_error_after_the_timeout(
    scripted: ScriptedServer, tmp_path: Path, lock_holder: Callable[[Path], None]
) -> None:
    storage = FileTokenStorage(tmp_path, lock_timeout=0.5)
    ag = Authgear("app", scripted.url, token_storage=storage)
    storage.save(ag.storage_key, _stale())
    ag.configure()
    lock_holder(storage.path(ag.storage_key).with_name(storage.path(ag.storage_key).name + ".lock"))
    with pytest.raises(TokenStorageError, match=r"was not released within 0\.5 s"):
        ag.refresh_access_token_if_needed()
    assert scripted.count("/oauth2/token") == 0
    assert ag.session_state is SessionState.AUTHENTICATED  # nothing was lost


async def test_async_lock_held_forever_by_another_process_is_a_clear_error(
    scripted: ScriptedServer, tmp_path: Path, lock_holder: Callable[[Path], None]
) -> None:
    storage = FileTokenStorage(tmp_path, lock_timeout=0.5)
    ag = AsyncAuthgear("app", scripted.url, token_storage=storage)
    storage.save(ag.storage_key, _stale())
    await ag.configure()
    lock_holder(storage.path(ag.storage_key).with_name(storage.path(ag.storage_key).name + ".lock"))
    with pytest.raises(TokenStorageError, match=r"was not released within 0\.5 s"):
        await ag.refresh_access_token_if_needed()
    assert scripted.count("/oauth2/token") == 0
    await ag.aclose()


# --- sessions stored before keys named the endpoint -------------------------------------------


def legacy_id_token(iss: str, aud: str) -> str:
    # Only read without verification, to tell which app stored the session.
    return jwt.encode({"iss": iss, "aud": aud, "sub": "u"}, "k" * 32, algorithm="HS256")


def test_file_session_of_an_earlier_version_moves_to_the_keyed_file(
    scripted: ScriptedServer, tmp_path: Path
) -> None:
    storage = FileTokenStorage(tmp_path)
    legacy = StoredSession("rt-old", "at-old", 0.0, 0.0, legacy_id_token(scripted.url, "app"))
    storage.save("default", legacy)  # authgear_default.json, as before
    other = Authgear("another-app", scripted.url, token_storage=storage)
    other.configure()
    assert other.session_state is SessionState.NO_SESSION  # not its session
    assert storage.load("default") == legacy
    ag = Authgear("app", scripted.url, token_storage=storage)
    ag.configure()
    assert ag.session_state is SessionState.AUTHENTICATED
    assert not (tmp_path / "authgear_default.json").exists()
    moved = storage.load(ag.storage_key)
    assert moved is not None and moved.refresh_token == "rt-old"
    assert (moved.endpoint, moved.client_id) == (scripted.url, "app")
    assert (storage.path(ag.storage_key).stat().st_mode & 0o777) == 0o600
