"""Soak: does our server's storage and memory grow with sustained refresh + userinfo traffic?

    .venv/bin/python benchmarks/bench_soak.py                        # 10 minutes, SQLite
    .venv/bin/python benchmarks/bench_soak.py --minutes 60 --workers 2
    .venv/bin/python benchmarks/bench_soak.py --minutes 1 --sample 10  # a quick check
    .venv/bin/python benchmarks/bench_soak.py --help

What it does (all on 127.0.0.1, ports picked free, everything stopped at the end):
1. Starts our server exactly as benchmarks/bench_server.py does (temporary data folder, rate
   limits and lockout off, log level warning, refresh-token rotation off), creates `--users`
   users and logs in `--grants` times through the real login form.
2. Runs two wrk processes at once for `--minutes`, each with half of `--connections`: one
   refresh-grant load cycling through the grants' refresh tokens, one userinfo load cycling
   through their access tokens. wrk runs in segments of `--sample` seconds (it reports only
   when it ends); after each segment the script records the requests done so far (summed
   from wrk's reports), the database's size (SQLite: the `authgear.db` file and its `-wal`;
   PostgreSQL: pg_database_size), the row counts of every table that could grow with traffic,
   and the server's resident memory (VmRSS summed over its process tree).
3. Prints the samples, the growth per million requests of database bytes, rows and RSS from the
   first sample after `--warmup` to the last, and the baseline issue 11 names: what the old
   design held (a ~480-byte access_tokens row per refresh, kept for the token's 30 minutes), as
   a ratio. Saves everything as JSON in benchmarks/results/ (soak-*.json).

Results and how to read them: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from bench_server import (
    RESULTS_DIR,
    ROOT,
    AuthgearServer,
    Grant,
    Load,
    authgear_server,
    check_refresh_response,
    create_users,
    ensure_wrk,
    login_grants,
    machine_info,
    process_tree_pids,
    refresh_bodies,
)

# Tables a request could add rows to (sessions, tokens, revocations, flows, codes). Users,
# keys, authenticators and settings are created by hand, never by a refresh or a userinfo.
GROWABLE_TABLES = (
    "offline_grants",
    "idp_sessions",
    "access_tokens",
    "revoked_tokens",
    "revoked_sessions",
    "auth_flows",
    "auth_codes",
)
# Issue 11's baseline: before JWT access tokens lost their row, each refresh inserted an
# access_tokens row of about 480 bytes (row, two indexes' entries and page overhead) that was
# kept until the token expired (access_token_lifetime, 1800 s by default).
OLD_ROW_BYTES = 480
OLD_ROW_SECONDS = 1800
# The login's access tokens expire after 30 minutes; userinfo gets fresh ones well before.
RENEW_ACCESS_TOKENS_S = 600


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


@dataclass
class Sample:
    t_s: float  # seconds of load so far
    refreshes: int  # requests done so far (wrk's reports, summed)
    userinfos: int
    errors: int
    db_bytes: int
    wal_bytes: int
    rows: dict[str, int]
    rss_kib: int  # VmRSS summed over the server's process tree
    processes: int

    @property
    def requests(self) -> int:
        return self.refreshes + self.userinfos

    @property
    def storage_bytes(self) -> int:
        return self.db_bytes + self.wal_bytes


# --- what the server holds -------------------------------------------------------------------


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS summed over a process tree in KiB, processes counted); shared pages count once
    per process, which is fine for watching growth."""
    total, count = 0, 0
    for p in process_tree_pids(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                count += 1
    return total, count


class Storage:
    """Reads the database's size and row counts without writing to it."""

    def __init__(self, server: AuthgearServer) -> None:
        self.url = server.database_url
        # The server's default database (ServerSettings.database_url): <data-dir>/authgear.db.
        self.path = server.data_dir / "authgear.db"

    def measure(self) -> tuple[int, int, dict[str, int]]:
        """(database bytes, WAL bytes, rows per table)."""
        if self.url:
            return asyncio.run(self._postgres())
        size = self.path.stat().st_size
        wal = Path(f"{self.path}-wal")
        wal_size = wal.stat().st_size if wal.exists() else 0
        # Read-only and closed right away: an open reader would hold back the WAL checkpoint.
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            rows = {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in GROWABLE_TABLES
            }
        finally:
            conn.close()
        return size, wal_size, rows

    async def _postgres(self) -> tuple[int, int, dict[str, int]]:
        import asyncpg  # the server's own PostgreSQL driver

        assert self.url is not None
        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            size = await conn.fetchval("SELECT pg_database_size(current_database())")
            rows = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in GROWABLE_TABLES}
        finally:
            await conn.close()
        return int(size), 0, rows


# --- the load --------------------------------------------------------------------------------


@dataclass
class Soak:
    server: AuthgearServer
    load: Load
    grants: list[Grant]
    storage: Storage
    samples: list[Sample] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)

    def sample(self, t_s: float, refreshes: int, userinfos: int, errors: int) -> Sample:
        db, wal, rows = self.storage.measure()
        rss, processes = rss_kib(self.server.proc.pid)
        s = Sample(round(t_s, 1), refreshes, userinfos, errors, db, wal, rows, rss, processes)
        self.samples.append(s)
        log(
            f"t={s.t_s:7.1f}s requests {s.requests:9d}  db {s.db_bytes / 1024:8.0f} KiB  "
            f"wal {s.wal_bytes / 1024:6.0f} KiB  rows {sum(rows.values()):6d}  "
            f"RSS {s.rss_kib / 1024:6.1f} MiB  errors {errors}"
        )
        return s

    def renew_access_tokens(self, http: httpx.Client, bodies: list[str]) -> list[str]:
        """A refresh per grant, by hand: fresh access tokens for the userinfo load."""
        tokens = []
        for body in bodies:
            r = http.post(
                self.server.discovery["token_endpoint"],
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            r.raise_for_status()
            tokens.append(r.json()["access_token"])
        return tokens

    def run(self, minutes: float, sample_s: float, connections: int) -> None:
        """Segments of `sample_s` seconds: both wrk processes at once, then one sample."""
        discovery = self.server.discovery
        bodies = refresh_bodies(self.server.client_id, self.grants)
        refresh_env = self.load.env("soak-refresh", "form", bodies)
        access = [g.access_token for g in self.grants]
        userinfo_env = self.load.env("soak-userinfo", "bearer", access)
        half = max(1, connections // 2)
        refreshes = userinfos = errors = 0
        self.sample(0, 0, 0, 0)
        start = renewed = time.monotonic()
        segments = max(1, round(minutes * 60 / sample_s))
        with ThreadPoolExecutor(2) as pool, httpx.Client(timeout=30) as http:
            for _ in range(segments):
                if time.monotonic() - renewed > RENEW_ACCESS_TOKENS_S:
                    access = self.renew_access_tokens(http, bodies)
                    userinfo_env = self.load.env("soak-userinfo", "bearer", access)
                    renewed = time.monotonic()
                a = pool.submit(
                    self.load.wrk_json, discovery["token_endpoint"], refresh_env, sample_s, half
                )
                b = pool.submit(
                    self.load.wrk_json, discovery["userinfo_endpoint"], userinfo_env, sample_s, half
                )
                ra, rb = a.result(), b.result()
                self.segments.append({"refresh": ra, "userinfo": rb})
                refreshes += ra["requests"]
                userinfos += rb["requests"]
                errors += sum(v for r in (ra, rb) for k, v in r.items() if k.startswith("errors_"))
                self.sample(time.monotonic() - start, refreshes, userinfos, errors)


# --- report ----------------------------------------------------------------------------------


def old_design_bytes(samples: list[Sample], at: int) -> float:
    """What the old design held at sample `at`: 480 bytes per refresh done in the 30 minutes
    before it (refreshes spread evenly over each segment)."""
    end = samples[at].t_s
    held = 0.0
    for prev, cur in itertools.pairwise(samples[: at + 1]):
        length = cur.t_s - prev.t_s
        inside = max(0.0, cur.t_s - max(prev.t_s, end - OLD_ROW_SECONDS))
        if length > 0:
            held += (cur.refreshes - prev.refreshes) * min(1.0, inside / length)
    return held * OLD_ROW_BYTES


def growth(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """Growth from the first sample at or after the warm-up to the last, per million requests."""
    first = next((i for i, s in enumerate(samples) if s.t_s >= warmup_s), len(samples) - 1)
    if first == len(samples) - 1 and len(samples) > 2:
        first = 1  # a run shorter than its warm-up: measure from the first segment's end
    a, b = samples[first], samples[-1]
    requests = b.requests - a.requests
    per_m = 1e6 / requests if requests else 0.0
    rows = sum(b.rows.values()) - sum(a.rows.values())
    old_growth = old_design_bytes(samples, len(samples) - 1) - old_design_bytes(samples, first)
    storage = b.storage_bytes - a.storage_bytes
    return {
        "from_t_s": a.t_s,
        "to_t_s": b.t_s,
        "requests": requests,
        "refreshes": b.refreshes - a.refreshes,
        "req_per_s": round(requests / (b.t_s - a.t_s), 1) if b.t_s > a.t_s else 0.0,
        "db_bytes": b.db_bytes - a.db_bytes,
        "wal_bytes": b.wal_bytes - a.wal_bytes,
        "storage_bytes": storage,
        "rows": rows,
        "rows_by_table": {t: b.rows[t] - a.rows[t] for t in b.rows},
        "rss_kib": b.rss_kib - a.rss_kib,
        "per_million_requests": {
            "storage_bytes": round(storage * per_m),
            # SQLite's WAL is rewound at each checkpoint (1 000 pages): bounded, not growth.
            "wal_bytes": round((b.wal_bytes - a.wal_bytes) * per_m),
            "rows": round(rows * per_m, 1),
            "rss_kib": round((b.rss_kib - a.rss_kib) * per_m),
        },
        "old_design_held_bytes_at_end": round(old_design_bytes(samples, len(samples) - 1)),
        "old_design_growth_bytes": round(old_growth),
        # Measured storage growth over what the old design would have added in the same time.
        "ratio_to_old_design": round(storage / old_growth, 4) if old_growth else None,
    }


def report(soak: Soak, args: argparse.Namespace, info: dict[str, Any]) -> None:
    samples = soak.samples
    print()
    short = {"offline_grants": "grants", "idp_sessions": "idp", "access_tokens": "at"}
    short |= {"revoked_tokens": "rev_t", "revoked_sessions": "rev_s", "auth_flows": "flows"}
    short |= {"auth_codes": "codes"}
    header = f"{'t s':>7} {'requests':>10} {'errors':>6} {'db KiB':>9} {'wal KiB':>8} "
    header += " ".join(f"{short[t]:>6}" for t in GROWABLE_TABLES) + f" {'RSS MiB':>8} {'procs':>5}"
    print(header)
    for s in samples:
        print(
            f"{s.t_s:7.1f} {s.requests:10d} {s.errors:6d} {s.db_bytes / 1024:9.0f} "
            f"{s.wal_bytes / 1024:8.0f} "
            + " ".join(f"{s.rows[t]:6d}" for t in GROWABLE_TABLES)
            + f" {s.rss_kib / 1024:8.1f} {s.processes:5d}"
        )
    g = growth(samples, args.warmup)
    pm = g["per_million_requests"]
    print(
        f"\nfrom t={g['from_t_s']:.0f}s to t={g['to_t_s']:.0f}s: {g['requests']} requests "
        f"({g['refreshes']} refreshes), {g['req_per_s']:.0f} req/s"
    )
    print(f"{'growth':24} {'total':>14} {'per 1M requests':>16}")
    print(f"{'database + WAL bytes':24} {g['storage_bytes']:14d} {pm['storage_bytes']:16d}")
    print(f"{'  of which WAL bytes':24} {g['wal_bytes']:14d} {pm['wal_bytes']:16d}")
    print(f"{'rows (growable tables)':24} {g['rows']:14d} {pm['rows']:16.1f}")
    print(f"{'server RSS KiB':24} {g['rss_kib']:14d} {pm['rss_kib']:16d}")
    held = g["old_design_held_bytes_at_end"]
    print(
        f"\nold design (issue 11): {OLD_ROW_BYTES} B x refreshes in the last "
        f"{OLD_ROW_SECONDS // 60} min = {held / 1e6:.1f} MB held at the end; it would have "
        f"grown by {g['old_design_growth_bytes'] / 1e6:.2f} MB over the same interval"
    )
    ratio = g["ratio_to_old_design"]
    if ratio is not None:
        print(f"measured storage growth / old design's growth: {ratio:.4f}")
    if samples[-1].errors:
        print("\nWARNING: some requests failed (HTTP >= 400, timeouts or socket errors)")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / time.strftime("soak-%Y%m%d-%H%M%S.json")
    data = {
        "settings": vars(args),
        "machine": info,
        "samples": [asdict(s) for s in samples],
        "segments": soak.segments,
        "growth": g,
    }
    out.write_text(json.dumps(data, indent=2))
    print(f"\nsaved {out.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="load time (default 10)")
    parser.add_argument(
        "--sample", type=float, default=30, help="seconds between samples (default 30)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=60,
        help="growth is measured from the first sample at or after this many seconds (default "
        "60; a shorter run measures from the first sample after the first segment)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="keep-alive connections in all, half refresh, half userinfo (default 32)",
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per wrk (default 1)")
    parser.add_argument("--users", type=int, default=4, help="users to create (default 4)")
    parser.add_argument(
        "--grants", type=int, default=16, help="logins = refresh tokens cycled through (default 16)"
    )
    parser.add_argument("--workers", type=int, default=1, help="our server's processes (default 1)")
    parser.add_argument(
        "--database-url", help="our server's database (default: SQLite in a temp folder)"
    )
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60 or not 1 <= args.sample <= 600:
        parser.error("keep --minutes in (0, 1440] and --sample in 1..600")
    if not 2 <= args.connections <= 512 or args.threads > args.connections // 2:
        parser.error("keep --connections in 2..512 and --threads at most half of them")

    wrk = ensure_wrk()
    info = machine_info()
    log(f"machine: {info}")
    with tempfile.TemporaryDirectory(prefix="authgear-soak-") as tmp:
        workdir = Path(tmp)
        load = Load(wrk, args.connections, args.threads, args.sample, 0, workdir)
        with authgear_server(workdir, args.workers, args.database_url) as server:
            users = create_users(server, args.users)
            log(f"{args.users} users created; logging in {args.grants} times")
            with httpx.Client(timeout=30) as http:
                grants = login_grants(server, http, users, args.grants)
                bodies = refresh_bodies(server.client_id, grants)
                shape = check_refresh_response(http, server.discovery["token_endpoint"], bodies[0])
            info["refresh_response"] = shape
            soak = Soak(server, load, grants, Storage(server))
            log(f"soak: {args.minutes:g} min, a sample every {args.sample:g} s")
            soak.run(args.minutes, args.sample, args.connections)
    report(soak, args, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
