"""What each HTTP protocol implementation does with a hostile header, and what the limits
cost: uvicorn's httptools, uvicorn's h11 (with its incomplete-event cap), and httptools with
authgear's GuardedProtocol (what `authgear serve` runs).

    .venv/bin/python benchmarks/bench_http_protocols.py            # about a minute
    .venv/bin/python benchmarks/bench_http_protocols.py --seconds 5

For each, one uvicorn process serving a tiny ASGI app (a 15-byte JSON body) on 127.0.0.1:
1. a 64 MiB header sent at once: the status answered, how many bytes the server took before
   closing, and its peak resident memory growth;
2. wrk (2 threads, 64 connections, keep-alive) for --seconds: requests per second; the
   table reports each as a ratio to plain httptools measured in the same run.

Results: docs/benchmarks.md, "HTTP protocol limits"; the choice: docs/decisions.md.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import RESULTS_DIR, ensure_wrk, free_port, log

KINDS = ("httptools", "guarded", "h11")
BODY = b'{"status":"ok"}'


async def tiny_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def serve(kind: str, port: int) -> None:
    """Run in a child process: one uvicorn server with the given protocol."""
    import uvicorn

    from authgear.server import serving
    from authgear.server.config import HTTPConfig

    options: dict[str, Any] = {"http": kind}
    if kind == "guarded":
        options["http"] = serving.GuardedProtocol
    if kind == "h11":
        options["h11_max_incomplete_event_size"] = 65536
    config = uvicorn.Config(
        tiny_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **options
    )
    setattr(config, serving.LIMITS, HTTPConfig())
    setattr(config, serving.MAX_CONNECTIONS, 10_000)
    uvicorn.Server(config).run()


def peak_rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(m.group(1)) if m else 0


def big_header(port: int) -> tuple[str, int]:
    """Send a 64 MiB header; the status line answered (or how it ended) and bytes taken."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
    chunk = b"a" * 65536
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.sendall(b"\r\n\r\n")
    except OSError:
        pass
    try:
        answer = sock.recv(200)
    except OSError as e:
        answer = f"({type(e).__name__})".encode()
    sock.close()
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(closed)"
    return status, sent


def wrk_rate(wrk: str, port: int, seconds: int) -> float:
    out = subprocess.run(
        [wrk, "-t2", "-c64", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    return float(m.group(1))


def measure(kind: str, wrk: str, seconds: int) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        before = peak_rss_kib(proc.pid)
        status, sent = big_header(port)
        time.sleep(0.5)
        grown = peak_rss_kib(proc.pid) - before
        rate = wrk_rate(wrk, port, seconds)
    finally:
        proc.terminate()
        proc.wait(10)
    return {"kind": kind, "status": status, "bytes_taken": sent, "peak_rss_growth_kib": grown,
            "req_per_s": rate}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per protocol")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    wrk = ensure_wrk()
    rows = [measure(kind, wrk, args.seconds) for kind in KINDS]
    base = rows[0]["req_per_s"]
    print(
        "| protocol | 64 MiB header | bytes read before closing | peak RSS growth | req/s | ratio |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['status']} | {r['bytes_taken'] // 1024} KiB | "
            f"{r['peak_rss_growth_kib'] // 1024} MiB | {r['req_per_s']:.0f} | "
            f"{r['req_per_s'] / base:.2f} |"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"http_protocols_{int(time.time())}.json"
    out.write_text(json.dumps(rows, indent=2))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
