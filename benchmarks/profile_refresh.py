"""Where the refresh grant's CPU goes: py-spy samples our server under the benchmark's load.

Runs ``bench_server.py --scenarios refresh --skip-oidc-provider`` (our server, the same wrk
load) and, while wrk runs, samples the server's processes with py-spy (``--format raw``:
collapsed stacks). Each sample is put in one bucket by the innermost frame that names a known
library (RSA signing, PyJWT, SQLAlchemy, the SQLite driver, Starlette, uvicorn, JSON, our own
code...), and the server's CPU time per refresh (from bench_server's figures: server CPU ÷
requests) is split between the buckets in proportion.

    .venv/bin/python benchmarks/profile_refresh.py [--workers 1] [--seconds 10]

py-spy is installed into the virtualenv if missing. It needs ptrace (root, or
CAP_SYS_PTRACE in a container).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
RESULTS = ROOT / "benchmarks" / "results"

# (bucket, pattern on a frame "function (file:line)"), the first match from the leaf upwards.
BUCKETS: list[tuple[str, re.Pattern[str]]] = [
    # PyJWT's RSAAlgorithm.sign calls cryptography's (native, so py-spy shows PyJWT's frame).
    ("RSA sign (cryptography)", re.compile(r"^RSAAlgorithm\.sign \(jwt/")),
    ("RSA verify (cryptography)", re.compile(r"^RSAAlgorithm\.verify \(jwt/")),
    ("PyJWT (claims, JSON, base64)", re.compile(r"\(jwt/")),
    ("SQLAlchemy", re.compile(r"\(sqlalchemy/")),
    ("SQLite driver", re.compile(r"\((sqlite3|aiosqlite)/")),
    ("PostgreSQL driver", re.compile(r"\(asyncpg/")),
    ("JSON", re.compile(r"\((json|orjson)/")),
    ("Starlette", re.compile(r"\(starlette/")),
    ("uvicorn + httptools", re.compile(r"\((uvicorn|httptools)/")),
    ("asyncio", re.compile(r"\((asyncio|uvloop)/")),
    ("our code: token endpoint", re.compile(r"\(authgear/server/endpoints/token\.py")),
    ("our code: sessions/tokens", re.compile(r"\(authgear/server/(sessions|tokens|keys)\.py")),
    ("our code: other", re.compile(r"\(authgear/")),
]


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, pattern in BUCKETS:
            if pattern.search(frame):
                return name
    return "other (stdlib, interpreter)"


def descendants(root: int) -> dict[int, str]:
    """pid → command line of every process under ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                try:
                    cmd = (Path("/proc") / str(child) / "cmdline").read_bytes()
                except OSError:
                    continue
                found[child] = cmd.replace(b"\0", b" ").decode(errors="replace")
                todo.append(child)
    return found


def server_pids(root: int) -> list[int]:
    """The ``authgear serve`` process and its worker processes."""
    serve = [pid for pid, cmd in descendants(root).items() if "authgear serve" in cmd]
    return serve + [pid for s in serve for pid in descendants(s)]


def wrk_pids(root: int) -> set[int]:
    return {pid for pid, cmd in descendants(root).items() if "wrk_load.lua" in cmd}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0, help="sampling time")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    if not PY_SPY.exists():
        subprocess.run([PYTHON, "-m", "pip", "install", "-q", "py-spy"], check=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bench = subprocess.Popen(
        [
            PYTHON,
            str(ROOT / "benchmarks" / "bench_server.py"),
            "--scenarios",
            "refresh",
            "--skip-oidc-provider",
            "--workers",
            str(args.workers),
            "--warmup",
            "3",
            "--duration",
            str(args.seconds + 8),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    def read() -> None:
        assert bench.stdout is not None
        for line in bench.stdout:
            output.append(line)
            sys.stdout.write(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    # Wait for the measured run: the second wrk process (the first is the warm-up).
    seen: set[int] = set()
    deadline = time.monotonic() + 300
    while len(seen) < 2 and time.monotonic() < deadline and bench.poll() is None:
        seen |= wrk_pids(bench.pid)
        time.sleep(0.05)
    time.sleep(2)
    stacks: collections.Counter[str] = collections.Counter()
    procs = []
    files = []
    for pid in server_pids(bench.pid):
        out = RESULTS / f"profile-{stamp}-{pid}.txt"
        files.append(out)
        procs.append(
            subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for p in procs:
        p.wait()
    bench.wait()
    reader.join(5)
    for f in files:
        if not f.exists():
            continue
        for line in f.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[stack] += int(count)
    text = "".join(output)
    m = re.search(r"authgear\s+refresh\s+([\d.]+) req/s.*server CPU\s+(\d+)%", text)
    if m is None or not stacks:
        print("no figures: see the output above", file=sys.stderr)
        return 1
    rps, cpu = float(m.group(1)), float(m.group(2))
    per_request_us = cpu / 100 / rps * 1e6
    buckets: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        buckets[classify(stack)] += count
    total = sum(buckets.values())
    print(
        f"\nrefresh: {rps:.0f} req/s, server CPU {cpu:.0f}% → {per_request_us:.0f} µs per refresh"
    )
    print(f"{total} samples of the server's processes\n")
    print(f"{'where':34} {'share':>6} {'µs/refresh':>11}")
    rows = []
    for name, count in buckets.most_common():
        share = count / total
        rows.append({"bucket": name, "share": round(share, 4), "us": round(share * per_request_us)})
        print(f"{name:34} {share:6.1%} {share * per_request_us:11.0f}")
    summary = RESULTS / f"profile-{stamp}.json"
    summary.write_text(
        json.dumps(
            {
                "workers": args.workers,
                "rps": rps,
                "cpu_percent": cpu,
                "us_per_refresh": per_request_us,
                "buckets": rows,
            },
            indent=2,
        )
    )
    print(f"\nsaved {summary.relative_to(ROOT)} (and the raw stacks beside it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
