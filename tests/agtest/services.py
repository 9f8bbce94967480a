"""Throwaway PostgreSQL and Redis servers for tests: free loopback ports, temp folders.

PostgreSQL refuses to run as root, so as root (CI) the cluster belongs to the `postgres` user
that Debian's package creates; as anyone else it belongs to the current user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agtest.server import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"PostgreSQL's {name} not found: install Debian's postgresql")
    return path


def _as_owner(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@dataclass
class Postgres:
    folder: Path
    port: int
    # Not durable: fast for tests, but a crash (stop -m immediate) loses recent commits.
    durable: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://authgear:authgear@127.0.0.1:{self.port}/authgear"

    def _run(self, *cmd: str) -> None:
        subprocess.run(_as_owner(list(cmd)), check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            # The parents must be traversable by the postgres user.
            parent = self.folder.parent
            while parent != parent.parent:
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
                parent = parent.parent
        pwfile = self.folder.parent / f"{self.folder.name}.pw"
        pwfile.write_text("authgear\n")
        os.chmod(pwfile, 0o644)
        self._run(
            _pg_bin("initdb"),
            "-D", str(self.folder / "data"),
            "-U", "authgear",
            "--pwfile", str(pwfile),
            "-A", "scram-sha-256",
            "-E", "UTF8",
        )  # fmt: skip
        pwfile.unlink()
        with open(self.folder / "data" / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\nmax_connections = 200\n"
            )
            if not self.durable:
                conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.folder / "data"), "-l",
            str(self.folder / "postgres.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def running(self) -> bool:
        status = subprocess.run(
            _as_owner([_pg_bin("pg_ctl"), "-D", str(self.folder / "data"), "status"]),
            capture_output=True,
            timeout=30,
        )
        return status.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        if not self.running():
            return
        self._run(_pg_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        env = {**os.environ, "PGPASSWORD": "authgear"}
        subprocess.run(
            [_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "authgear", name],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        return f"postgresql://authgear:authgear@127.0.0.1:{self.port}/{name}"


def start_postgres(folder: Path, *, durable: bool = False) -> Postgres:
    pg = Postgres(folder, free_port(), durable)
    pg.init()
    pg.start()
    pg.create_database("authgear")
    return pg


@dataclass
class Redis:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_redis(folder: Path, port: int | None = None) -> Redis:
    """``port``: restart one on the port a stopped one used."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    import socket

    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return Redis(port, proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")
