"""Benchmark our server against npm oidc-provider: refresh grant, userinfo, resolver.

    .venv/bin/python benchmarks/bench_server.py            # both servers, ~2 minutes
    .venv/bin/python benchmarks/bench_server.py --help     # durations, connections, subsets

What it does (all on 127.0.0.1, every port picked free, everything stopped at the end):
1. Installs what it needs when missing: Debian's `wrk` (the load generator, a separate C
   process: light on the CPU the servers share) and the npm packages of benchmarks/oidc_provider.
2. Starts OUR server (`authgear serve` on a temporary data folder, rate limits off), creates
   users with `authgear users create`, logs in through the real login form (code + PKCE) to get
   one refresh token and one access token per grant.
3. Drives each scenario with wrk for a fixed time (after a short warm-up) and prints req/s,
   p50 and p99: refresh grant, userinfo (GET, Bearer), resolver (GET /_resolver/resolve, Bearer).
4. Starts oidc-provider (benchmarks/oidc_provider/server.mjs, in-memory, rotation off) with two
   clients and logs in `--grants` times with each through its dev interactions over HTTP:
   `bench-native` (refresh grant returning an RS256 JWT access token for a resource and an RS256
   ID token) for the same refresh-grant load, and `bench-userinfo` (no resource, so opaque access
   tokens, the only kind its userinfo `/me` accepts) for the same userinfo load.
5. Prints a results table and the ratios against issue 11's goals (refresh >= 1.2x and refresh
   p99 <= 1.0x oidc-provider's, resolver >= 5x our refresh; userinfo and resolver against
   oidc-provider's userinfo, reported); writes them as JSON to benchmarks/results/.

Results and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
OIDC_PROVIDER_DIR = BENCH_DIR / "oidc_provider"
WRK_SCRIPT = BENCH_DIR / "wrk_load.lua"
RESULTS_DIR = BENCH_DIR / "results"
AUTHGEAR = ROOT / ".venv" / "bin" / "authgear"
AUTHGEAR_SCOPE = "openid offline_access https://authgear.com/scopes/full-access"
LOOPBACK_REDIRECT = "http://127.0.0.1/callback"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- prerequisites ---------------------------------------------------------------------------


def ensure_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log("installing Debian's wrk (the load generator)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=True, env=env)
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk is still not on PATH after apt-get install wrk")
    return wrk


def ensure_npm_packages(folder: Path) -> None:
    stamp = folder / "node_modules" / ".authgear-stamp"
    digest = hashlib.sha256(
        (folder / "package.json").read_bytes() + (folder / "package-lock.json").read_bytes()
    ).hexdigest()
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return
    log(f"npm ci in {folder.relative_to(ROOT)}")
    env = {**os.environ, "npm_config_cache": str(ROOT / ".venv" / ".cache" / "npm")}
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        check=True,
        env=env,
    )
    stamp.write_text(digest + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- logging in through an HTML form (ours and oidc-provider's dev interactions) -------------


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._seen_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._seen_form:
            self._in_form = self._seen_form = True
            self.action = a.get("action", "")
            self.method = a.get("method", "get").lower()
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Grant:
    refresh_token: str
    access_token: str
    token_response_keys: list[str]


def login(
    http: httpx.Client,
    discovery: dict[str, Any],
    client_id: str,
    redirect_uri: str,
    scope: str,
    credentials: dict[str, str],
    extra_params: dict[str, str] | None = None,
) -> Grant:
    """Authorization code + PKCE through the server's HTML forms; returns the token response."""
    http.cookies.clear()
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(16)
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": scope,
        "state": state,
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **(extra_params or {}),
    }
    url = discovery["authorization_endpoint"] + "?" + urlencode(params)
    response = http.get(url)
    for _ in range(12):
        if response.is_redirect:
            url = urljoin(str(response.url), response.headers["location"])
            if url.startswith(redirect_uri.split("?")[0]):
                break
            response = http.get(url)
            continue
        if response.status_code != 200:
            raise RuntimeError(f"login: HTTP {response.status_code} at {response.url}")
        form = _FormParser()
        form.feed(response.text)
        if form.action is None or form.method != "post":
            raise RuntimeError(f"login: no POST form at {response.url}")
        data = dict(form.fields)
        for name in list(data):
            if name in credentials:
                data[name] = credentials[name]
        for name, value in credentials.items():
            data.setdefault(name, value)
        target = urljoin(str(response.url), form.action or str(response.url))
        response = http.post(target, data=data)
    else:
        raise RuntimeError("login: too many steps")
    query = dict(httpx.URL(url).params)
    if query.get("state") != state or "code" not in query:
        raise RuntimeError(f"login: bad callback ({sorted(query)})")
    token = http.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    if token.status_code != 200:
        raise RuntimeError(f"code exchange: HTTP {token.status_code} {token.text[:200]}")
    body = token.json()
    return Grant(body["refresh_token"], body["access_token"], sorted(body))


def jwt_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    header: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return header


def check_refresh_response(http: httpx.Client, token_endpoint: str, body: str) -> dict[str, Any]:
    """One refresh by hand before the load: same shape on both servers, RS256 everywhere."""
    r = http.post(
        token_endpoint,
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    if r.status_code != 200:
        raise RuntimeError(f"refresh grant: HTTP {r.status_code} {r.text[:200]}")
    data = r.json()
    sent = parse_qs(body)["refresh_token"][0]
    at, it = jwt_header(data["access_token"]), jwt_header(data["id_token"])
    if at.get("alg") != "RS256" or it.get("alg") != "RS256":
        raise RuntimeError(f"refresh grant: access token {at}, id token {it}: want RS256 JWTs")
    return {
        "keys": sorted(data),
        "access_token_header": {k: at[k] for k in ("alg", "typ") if k in at},
        "id_token_alg": it["alg"],
        # oidc-provider repeats the same refresh token when rotation is off; ours sends none.
        "returns_refresh_token": "refresh_token" in data,
        "rotated": data.get("refresh_token", sent) != sent,
    }


def check_userinfo_response(
    http: httpx.Client, userinfo_endpoint: str, access_token: str
) -> dict[str, Any]:
    """One userinfo call by hand before the load: 200 with a `sub`."""
    r = http.get(userinfo_endpoint, headers={"Authorization": f"Bearer {access_token}"})
    if r.status_code != 200:
        raise RuntimeError(f"userinfo: HTTP {r.status_code} {r.text[:200]}")
    data = r.json()
    if not data.get("sub"):
        raise RuntimeError(f"userinfo: no sub in {sorted(data)}")
    return {"keys": sorted(data), "access_token_is_jwt": access_token.count(".") == 2}


# --- processes -------------------------------------------------------------------------------


def _proc_stats() -> dict[int, list[str]]:
    """Every process's /proc/<pid>/stat fields after the command name (Linux)."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        stats[int(entry.name)] = raw[raw.rindex(")") + 2 :].split()
    return stats


def process_tree_pids(pid: int, stats: dict[int, list[str]] | None = None) -> list[int]:
    """A process and all its descendants that are still alive (Linux /proc)."""
    stats = _proc_stats() if stats is None else stats
    children: dict[int, list[int]] = {}
    for p, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            found.append(p)
        todo.extend(children.get(p, []))
    return found


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = _proc_stats()
    total = sum(int(stats[p][11]) + int(stats[p][12]) for p in process_tree_pids(pid, stats))
    return total / ticks


@contextlib.contextmanager
def running(
    cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path = ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_for(
    url: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited ({proc.returncode}); log:\n{log_path.read_text()[-3000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(url, timeout=2, headers=headers)
            if r.status_code == 200:
                data: dict[str, Any] = r.json()
                return data
        time.sleep(0.2)
    raise RuntimeError(
        f"no answer from {url} within {timeout:.0f} s; log:\n{log_path.read_text()[-3000:]}"
    )


# --- load ------------------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    scenario: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_percent: float
    raw: dict[str, Any] = field(repr=False)


@dataclass
class Load:
    wrk: str
    connections: int
    threads: int
    duration: float
    warmup: float
    workdir: Path

    def run(
        self, server: str, scenario: str, url: str, mode: str, lines: list[str], server_pid: int
    ) -> Result:
        env = self.env(f"{server}-{scenario}", mode, lines)
        if self.warmup > 0:
            self.wrk_json(url, env, self.warmup)
        cpu_before = process_tree_cpu_seconds(server_pid)
        raw = self.wrk_json(url, env, self.duration)
        cpu = process_tree_cpu_seconds(server_pid) - cpu_before
        seconds = raw["duration_us"] / 1e6
        errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
        result = Result(
            server=server,
            scenario=scenario,
            requests=raw["requests"],
            seconds=round(seconds, 2),
            rps=round(raw["requests"] / seconds, 1),
            p50_ms=round(raw["p50_us"] / 1000, 2),
            p99_ms=round(raw["p99_us"] / 1000, 2),
            errors=errors,
            server_cpu_percent=round(100 * cpu / seconds, 0),
            raw=raw,
        )
        log(
            f"{server:13} {scenario:9} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  errors {errors}  "
            f"server CPU {result.server_cpu_percent:.0f}%"
        )
        return result

    def env(self, name: str, mode: str, lines: list[str]) -> dict[str, str]:
        """wrk's environment for benchmarks/wrk_load.lua: `mode` "form" or "bearer", `lines`
        the bodies or access tokens cycled through (written to a file in the workdir)."""
        lines_file = self.workdir / f"{name}.lines"
        lines_file.write_text("\n".join(lines) + "\n")
        return {**os.environ, "BENCH_MODE": mode, "BENCH_LINES": str(lines_file)}

    def wrk_json(
        self, url: str, env: dict[str, str], seconds: float, connections: int | None = None
    ) -> dict[str, Any]:
        """One wrk run of `seconds`; its BENCH_JSON summary (requests, errors, percentiles)."""
        cmd = [
            self.wrk,
            f"-t{self.threads}",
            f"-c{connections or self.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(WRK_SCRIPT),
            url,
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
        for line in out.stdout.splitlines():
            if line.startswith("BENCH_JSON "):
                data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
                return data
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")


# --- the two servers -------------------------------------------------------------------------


def _write_config_without_rotation(data_dir: Path, port: int) -> None:
    """The generated config, but the native client does not rotate refresh tokens (public
    clients rotate by default): the load refreshes one token for minutes, as oidc-provider does
    with rotation off, and a rotated token reused after the grace period would end the grant."""
    from authgear.server.config import default_config_text

    text, _ = default_config_text("127.0.0.1", port)
    text = text.replace("refresh_token_rotation: true", "refresh_token_rotation: false", 1)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / "authgear.yaml"
    path.write_text(text)
    path.chmod(0o600)


AUTHGEAR_ENV = {
    "AUTHGEAR_RATE_LIMITS__ENABLED": "false",
    "AUTHGEAR_LOCKOUT__ENABLED": "false",
    "AUTHGEAR_LOG_LEVEL": "warning",
}


@dataclass
class AuthgearServer:
    """Our server as started by `authgear_server` (shared with bench_soak.py)."""

    proc: subprocess.Popen[bytes]
    base: str
    discovery: dict[str, Any]
    data_dir: Path
    env: dict[str, str]
    client_id: str
    database_url: str | None

    def cli(self, *args: str) -> list[str]:
        """An `authgear` command line against this server's data folder and database."""
        db = ["--database-url", self.database_url] if self.database_url else []
        return [str(AUTHGEAR), *args, "--data-dir", str(self.data_dir), *db]


@contextlib.contextmanager
def authgear_server(
    workdir: Path, workers: int, database_url: str | None
) -> Iterator[AuthgearServer]:
    """`authgear serve` on a temporary data folder, rate limits and lockout off, log level
    warning, refresh-token rotation off; stopped (whole process group) on exit."""
    if not AUTHGEAR.exists():
        raise SystemExit(
            f"{AUTHGEAR} missing: run scripts/test or pip install -e '.[server]' first"
        )
    data_dir = workdir / "authgear-data"
    port = free_port()
    _write_config_without_rotation(data_dir, port)
    env = {**os.environ, **AUTHGEAR_ENV}
    log_path = workdir / "authgear.log"
    cmd = [str(AUTHGEAR), "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", str(workers)]
    if database_url:
        cmd += ["--database-url", database_url]
    with running(cmd, log_path, env) as proc:
        base = f"http://127.0.0.1:{port}"
        discovery = wait_for(f"{base}/.well-known/openid-configuration", proc, log_path)
        config = yaml.safe_load((data_dir / "authgear.yaml").read_text())
        client_id = next(
            c["id"] for c in config["clients"] if LOOPBACK_REDIRECT in c.get("redirect_uris", [])
        )
        yield AuthgearServer(proc, base, discovery, data_dir, env, client_id, database_url)


def create_users(server: AuthgearServer, count: int) -> list[dict[str, str]]:
    """`authgear users create --password-stdin` bench0@example.com … with random passwords."""
    users = []
    for i in range(count):
        email, password = f"bench{i}@example.com", secrets.token_urlsafe(16)
        subprocess.run(
            server.cli("users", "create", email, "--password-stdin"),
            input=password + "\n",
            text=True,
            check=True,
            env=server.env,
            capture_output=True,
            timeout=60,
        )
        users.append({"email": email, "password": password})
    return users


def login_grants(
    server: AuthgearServer, http: httpx.Client, users: list[dict[str, str]], count: int
) -> list[Grant]:
    """`count` logins through the login form, cycling through the users."""
    return [
        login(
            http,
            server.discovery,
            server.client_id,
            f"http://127.0.0.1:{free_port()}/callback",
            AUTHGEAR_SCOPE,
            users[i % len(users)],
        )
        for i in range(count)
    ]


def refresh_bodies(client_id: str, grants: list[Grant]) -> list[str]:
    """One refresh-grant form body per grant (the lines wrk cycles through)."""
    return [
        urlencode(
            {
                "grant_type": "refresh_token",
                "client_id": client_id,
                "refresh_token": g.refresh_token,
            }
        )
        for g in grants
    ]


def bench_authgear(
    args: argparse.Namespace, load: Load, workdir: Path
) -> tuple[list[Result], dict[str, Any]]:
    results: list[Result] = []
    with authgear_server(workdir, args.workers, args.database_url) as server:
        proc, discovery, client_id = server.proc, server.discovery, server.client_id
        users = create_users(server, args.users)
        log(f"authgear: {args.users} users created; logging in {args.grants} times")
        with httpx.Client(timeout=30) as http:
            grants = login_grants(server, http, users, args.grants)
            bodies = refresh_bodies(client_id, grants)
            shape = check_refresh_response(http, discovery["token_endpoint"], bodies[0])
            resolver = f"{server.base}/_resolver/resolve"
            r = http.get(resolver, headers={"Authorization": f"Bearer {grants[0].access_token}"})
            if r.headers.get("x-authgear-session-valid") != "true":
                raise RuntimeError(f"resolver did not accept the access token: {dict(r.headers)}")
            userinfo_shape = check_userinfo_response(
                http, discovery["userinfo_endpoint"], grants[0].access_token
            )
        log(f"authgear refresh response: {shape}")
        log(f"authgear userinfo response: {userinfo_shape}")
        access = [g.access_token for g in grants]
        if "refresh" in args.scenarios:
            results.append(
                load.run(
                    "authgear", "refresh", discovery["token_endpoint"], "form", bodies, proc.pid
                )
            )
        if "userinfo" in args.scenarios:
            results.append(
                load.run(
                    "authgear",
                    "userinfo",
                    discovery["userinfo_endpoint"],
                    "bearer",
                    access,
                    proc.pid,
                )
            )
        if "resolver" in args.scenarios:
            results.append(load.run("authgear", "resolver", resolver, "bearer", access, proc.pid))
    return results, {
        "client_id": client_id,
        "refresh_response": shape,
        "userinfo_response": userinfo_shape,
    }


def bench_oidc_provider(
    args: argparse.Namespace, load: Load, workdir: Path
) -> tuple[list[Result], dict[str, Any]]:
    ensure_npm_packages(OIDC_PROVIDER_DIR)
    log_path = workdir / "oidc-provider.log"
    env = {**os.environ, "NODE_ENV": "production"}
    node = shutil.which("node") or "node"
    with running(
        [node, str(OIDC_PROVIDER_DIR / "server.mjs")], log_path, env, cwd=OIDC_PROVIDER_DIR
    ) as proc:
        ready: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while not ready and time.monotonic() < deadline:
            for line in log_path.read_text().splitlines():
                if line.startswith("{") and '"ready"' in line:
                    ready = json.loads(line)
            if proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        if not ready:
            raise RuntimeError(f"oidc-provider did not start; log:\n{log_path.read_text()[-3000:]}")
        issuer = ready["issuer"]
        discovery = wait_for(f"{issuer}/.well-known/openid-configuration", proc, log_path)
        with httpx.Client(timeout=30) as http:
            grants = _oidc_provider_logins(http, args, discovery, ready, "client_id", "scope")
            bodies = [
                urlencode(
                    {
                        "grant_type": "refresh_token",
                        "client_id": ready["client_id"],
                        "refresh_token": g.refresh_token,
                    }
                )
                for g in grants
            ]
            shape = check_refresh_response(http, discovery["token_endpoint"], bodies[0])
            # The refresh client's JWTs are for a resource (they carry an `aud`): /me refuses
            # them, so userinfo gets its own client's opaque tokens.
            userinfo_grants = _oidc_provider_logins(
                http, args, discovery, ready, "userinfo_client_id", "userinfo_scope"
            )
            userinfo_shape = check_userinfo_response(
                http, discovery["userinfo_endpoint"], userinfo_grants[0].access_token
            )
        log(f"oidc-provider refresh response: {shape}")
        log(f"oidc-provider userinfo response: {userinfo_shape}")
        results = []
        if "refresh" in args.scenarios:
            results.append(
                load.run(
                    "oidc-provider",
                    "refresh",
                    discovery["token_endpoint"],
                    "form",
                    bodies,
                    proc.pid,
                )
            )
        if "userinfo" in args.scenarios:
            results.append(
                load.run(
                    "oidc-provider",
                    "userinfo",
                    discovery["userinfo_endpoint"],
                    "bearer",
                    [g.access_token for g in userinfo_grants],
                    proc.pid,
                )
            )
    version = json.loads(
        (OIDC_PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json").read_text()
    )["version"]
    return results, {
        "version": version,
        "refresh_response": shape,
        "userinfo_client_id": ready["userinfo_client_id"],
        "userinfo_response": userinfo_shape,
    }


def _oidc_provider_logins(
    http: httpx.Client,
    args: argparse.Namespace,
    discovery: dict[str, Any],
    ready: dict[str, Any],
    client_key: str,
    scope_key: str,
) -> list[Grant]:
    """`--grants` logins through oidc-provider's dev interactions (any password; consent asked
    for so offline_access yields a refresh token) with the client named in its ready line."""
    return [
        login(
            http,
            discovery,
            ready[client_key],
            ready["redirect_uri"],
            ready[scope_key],
            {"login": f"bench{i % args.users}@example.com", "password": "any"},
            {"prompt": "consent"},
        )
        for i in range(args.grants)
    ]


# --- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    value: float
    goal: float | None = None
    # Throughput ratios are better high; latency ratios (ours / theirs) are better low.
    lower_is_better: bool = False

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value <= self.goal if self.lower_is_better else self.value >= self.goal

    @property
    def goal_text(self) -> str:
        if self.goal is None:
            return ""
        return f"{'<=' if self.lower_is_better else '>='} {self.goal:.1f}"


def compute_ratios(results: list[Result]) -> dict[str, Ratio]:
    """The ratios against the goals of issue 11 (points 1 and 2); a ratio is left out when
    one of its two scenarios did not run."""
    by = {(r.server, r.scenario): r for r in results}
    ours, theirs = by.get(("authgear", "refresh")), by.get(("oidc-provider", "refresh"))
    userinfo, resolver = by.get(("authgear", "userinfo")), by.get(("authgear", "resolver"))
    their_userinfo = by.get(("oidc-provider", "userinfo"))
    ratios: dict[str, Ratio] = {}

    def add(
        name: str, num: float, den: float, goal: float | None = None, lower: bool = False
    ) -> None:
        if den > 0:  # a scenario with no answered request has no ratio, not a crash
            ratios[name] = Ratio(num / den, goal, lower)

    if ours and theirs:
        add("refresh: authgear / oidc-provider", ours.rps, theirs.rps, 1.2)
        add("refresh p99: authgear / oidc-provider", ours.p99_ms, theirs.p99_ms, 1.0, lower=True)
    if ours and resolver:
        add("authgear: resolver / refresh", resolver.rps, ours.rps, 5.0)
    if ours and userinfo:
        add("authgear: userinfo / refresh", userinfo.rps, ours.rps)
    if userinfo and their_userinfo:
        add("userinfo: authgear / oidc-provider", userinfo.rps, their_userinfo.rps)
    if resolver and their_userinfo:
        add("resolver: authgear / oidc-provider userinfo", resolver.rps, their_userinfo.rps)
    return ratios


def report(results: list[Result], args: argparse.Namespace, info: dict[str, Any]) -> None:
    print()
    print(
        f"{'server':14} {'scenario':9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>7} {'srv CPU':>8}"
    )
    for r in results:
        print(
            f"{r.server:14} {r.scenario:9} {r.rps:9.1f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
            f"{r.errors:7d} {r.server_cpu_percent:7.0f}%"
        )
    ratios = compute_ratios(results)
    if ratios:
        print()
        print(f"{'ratio':44} {'value':>7} {'goal':>7}")
        for name, ratio in ratios.items():
            verdict = "" if ratio.goal is None else ("  met" if ratio.met else "  NOT met")
            print(f"{name:44} {ratio.value:6.2f}x {ratio.goal_text:>7}{verdict}".rstrip())
    if any(r.errors for r in results):
        print(
            "\nWARNING: some requests failed (HTTP >= 400, timeouts or socket errors): "
            "see the errors column"
        )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / time.strftime("bench-%Y%m%d-%H%M%S.json")
    out.write_text(
        json.dumps(
            {
                "settings": {k: v for k, v in vars(args).items()},
                "machine": info,
                "results": [asdict(r) for r in results],
                "ratios": {k: round(r.value, 3) for k, r in ratios.items()},
                "goals": {k: r.goal_text for k, r in ratios.items() if r.goal is not None},
            },
            indent=2,
        )
    )
    print(f"\nsaved {out.relative_to(ROOT)}")


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def out(*cmd: str) -> str:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    commit = out("git", "rev-parse", "--short", "HEAD")
    if out("git", "status", "--porcelain", "--", "src"):
        commit += " + uncommitted changes in src/"
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "node": out("node", "--version"),
        "commit": commit,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=10,
        help="seconds of measured load per scenario (default 10)",
    )
    parser.add_argument(
        "--warmup", type=float, default=3, help="seconds of unmeasured load before each (default 3)"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (default 1: leave the CPU to the servers)",
    )
    parser.add_argument("--users", type=int, default=4, help="users to create (default 4)")
    parser.add_argument(
        "--grants", type=int, default=16, help="logins = refresh tokens cycled through (default 16)"
    )
    parser.add_argument(
        "--scenarios", default="refresh,userinfo,resolver", help="comma-separated subset"
    )
    parser.add_argument(
        "--skip-authgear", action="store_true", help="only the oidc-provider baseline"
    )
    parser.add_argument("--skip-oidc-provider", action="store_true", help="only our server")
    parser.add_argument(
        "--database-url", help="our server's database (default: SQLite in a temp folder)"
    )
    parser.add_argument("--workers", type=int, default=1, help="our server's processes (default 1)")
    args = parser.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - {"refresh", "userinfo", "resolver"}
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if (
        not 1 <= args.duration <= 120
        or not 0 <= args.warmup <= 30
        or not 1 <= args.connections <= 512
    ):
        parser.error("keep --duration in 1..120, --warmup in 0..30, --connections in 1..512")

    wrk = ensure_wrk()
    info = machine_info()
    log(f"machine: {info}")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="authgear-bench-") as tmp:
        workdir = Path(tmp)
        load = Load(wrk, args.connections, args.threads, args.duration, args.warmup, workdir)
        if not args.skip_authgear:
            r, info["authgear"] = bench_authgear(args, load, workdir)
            results += r
        if not args.skip_oidc_provider:
            r, info["oidc_provider"] = bench_oidc_provider(args, load, workdir)
            results += r
    report(results, args, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
