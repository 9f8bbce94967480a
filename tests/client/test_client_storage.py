"""Token storages: file format, permissions, corruption, keyring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from authgear import Authgear, SessionState, SessionStateChangeReason
from authgear.client import (
    FileTokenStorage,
    KeyringTokenStorage,
    KeyringUnavailableError,
    MemoryTokenStorage,
    StoredSession,
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


def test_keyring_storage(tmp_path: Path) -> None:
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
        s = KeyringTokenStorage(lock_directory=tmp_path)
        s.save("default", RECORD)
        assert backend.data[("authgear", "authgear_default_refreshToken")] == "rt"
        assert s.load("default") == RECORD
        s.delete("default")
        assert s.load("default") is None and backend.data == {}
        from keyring.backends import fail

        keyring.set_keyring(fail.Keyring())
        with pytest.raises(KeyringUnavailableError, match="no OS keyring backend"):
            KeyringTokenStorage()
    finally:
        keyring.set_keyring(previous)


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
