"""Scale-out benchmark on PostgreSQL: refresh grant and resolver with 1 and 2 worker processes,
and the resolver's p99 with 1 000 vs 1 000 000 stored sessions.

    .venv/bin/python benchmarks/bench_scale.py                 # about 4 minutes
    .venv/bin/python benchmarks/bench_scale.py --duration 5    # shorter runs

Starts a throwaway PostgreSQL cluster (Debian's postgresql, default durable settings) on a free
loopback port in a temp folder, then runs benchmarks/bench_server.py against our server on it for
each case (wrk load, see docs/benchmarks.md). Everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from agtest.services import Postgres, start_postgres  # noqa: E402

AUTHGEAR = ROOT / ".venv" / "bin" / "authgear"
RESULTS = ROOT / "benchmarks" / "results"

SEED = """
INSERT INTO users (id, email, email_key, password_hash, email_verified, roles,
                   standard_attributes, custom_attributes, disabled, created_at, updated_at)
VALUES ('seed-user', 'seed@example.com', 'seed@example.com', NULL, false, '[]', '{}', '{}',
        false, 0, 0);
INSERT INTO offline_grants (id, user_id, client_id, scopes, refresh_hash, previous_hashes,
                            created_at, authenticated_at, amr, last_access_at, device_info,
                            expires_at)
SELECT 'seed-' || i, 'seed-user', 'seed', '["openid"]', md5(i::text) || md5(i::text), '[]',
       0, 0, '[]', 0, '{}', 4102444800
FROM generate_series(1, $N) AS i;
INSERT INTO access_tokens (token_hash, jti, session_kind, session_id, user_id, client_id, scope,
                           auth_time, amr, issued_at, expires_at)
SELECT md5('t' || i) || md5('u' || i), 'seed-' || i, 'offline', 'seed-' || i, 'seed-user',
       'seed', 'openid', 0, '[]', 0, 4102444800
FROM generate_series(1, $N) AS i;
ANALYZE;
"""


def log(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


def psql(pg: Postgres, db: str, sql: str) -> None:
    subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-q", "-h", "127.0.0.1", "-p", str(pg.port),
         "-U", "authgear", "-d", db],
        input=sql, text=True, check=True, capture_output=True,
        env={"PGPASSWORD": "authgear", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def bench(args: argparse.Namespace, url: str, workers: int, scenarios: str) -> list[dict[str, Any]]:
    before = set(RESULTS.glob("bench-*.json")) if RESULTS.exists() else set()
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_server.py"), "--skip-oidc-provider",
         "--database-url", url, "--workers", str(workers), "--scenarios", scenarios,
         "--duration", str(args.duration), "--warmup", str(args.warmup)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    new = sorted(set(RESULTS.glob("bench-*.json")) - before)
    results: list[dict[str, Any]] = json.loads(new[-1].read_text())["results"]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--sessions", type=int, default=1_000_000, help="the large case")
    args = parser.parse_args()
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="authgear-scale-") as tmp:
        pg = start_postgres(Path(tmp) / "pg", durable=True)
        try:
            for workers in (1, 2):
                name = f"w{workers}"
                url = pg.create_database(name)
                log(f"PostgreSQL, {workers} worker(s): refresh and resolver")
                for r in bench(args, url, workers, "refresh,resolver"):
                    rows.append((f"{workers} worker(s)", r))
            for n in (1_000, args.sessions):
                name = f"s{n}"
                url = pg.create_database(name)
                subprocess.run(
                    [str(AUTHGEAR), "db", "upgrade", "--database-url", url,
                     "--data-dir", str(Path(tmp) / name)],
                    check=True, capture_output=True,
                )  # fmt: skip
                started = time.monotonic()
                psql(pg, name, SEED.replace("$N", str(n)))
                log(f"seeded {n} sessions in {time.monotonic() - started:.0f} s; resolver")
                for r in bench(args, url, 1, "resolver"):
                    rows.append((f"{n:,} sessions", r))
        finally:
            pg.stop("fast")
    print(f"\n{'case':20} {'scenario':9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for case, r in rows:
        print(
            f"{case:20} {r['scenario']:9} {r['rps']:9.1f} {r['p50_ms']:8.2f} "
            f"{r['p99_ms']:8.2f} {r['errors']:7d}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / time.strftime("scale-%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps([{"case": c, **r} for c, r in rows], indent=2))
    print(f"\nsaved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
