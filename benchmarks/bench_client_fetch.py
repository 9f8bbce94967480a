"""Client SDK overhead: ``Authgear.fetch`` vs plain httpx2 with a static Authorization header,
both against the same loopback endpoint (a stdlib HTTP/1.1 keep-alive server in its own
process, so that it does not share the client's GIL).

    .venv/bin/python benchmarks/bench_client_fetch.py [N]

Prints requests/second for each and the ratio (goal: fetch / plain <= 1.05), then the CPU
time per request of each through an in-process mock transport (what the SDK adds, independent
of the machine's load: the wall-clock ratio is only meaningful on an idle machine), then the
single-flight counts (16 threads, 200 tasks with an expired token -> refresh requests).
Bounded: N requests per round (default 3000), 5 alternating rounds, loopback only.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2

from authgear import AsyncAuthgear, Authgear
from authgear.client import MemoryTokenStorage, StoredSession

refreshes = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def log_message(self, *args: object) -> None:
        return

    def _reply(self, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/.well-known/openid-configuration":
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            doc = {
                "issuer": base,
                "authorization_endpoint": base + "/a",
                "token_endpoint": base + "/token",
                "userinfo_endpoint": base + "/u",
                "revocation_endpoint": base + "/r",
                "jwks_uri": base + "/j",
            }
            import json

            self._reply(json.dumps(doc).encode())
            return
        if self.path == "/count":
            self._reply(str(refreshes).encode(), "text/plain")
            return
        self._reply(b'{"ok":true}')

    def do_POST(self) -> None:
        global refreshes
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        if self.path == "/token":
            with lock:
                refreshes += 1
            time.sleep(0.02)  # a server that takes a moment widens the race window
            self._reply(b'{"access_token":"at-new","token_type":"Bearer","expires_in":3600}')
            return
        self._reply(b"{}")


def signed_in(ag: Authgear | AsyncAuthgear, expired: bool) -> None:
    """Store a session for ``ag`` (configure it next)."""
    now = time.time()
    ag.token_storage.save(
        ag.storage_key,
        StoredSession(
            "rt",
            "at",
            expires_at=0.0 if expired else now + 3600,
            refresh_after=0.0 if expired else now + 3000,
        ),
    )


def serve(port_out: multiprocessing.SimpleQueue[int]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_out.put(server.server_address[1])
    server.serve_forever()


def cpu_per_request(n: int) -> tuple[float, float]:
    """Best-of-5 process time per request (microseconds): plain httpx2 with a static header,
    and Authgear.fetch, both through the same in-process mock transport."""
    client = httpx2.Client(transport=httpx2.MockTransport(lambda r: httpx2.Response(200)))
    ag = Authgear(
        "app", "http://127.0.0.1:9", token_storage=MemoryTokenStorage(), http_client=client
    )
    signed_in(ag, expired=False)
    ag.configure()
    url = "http://127.0.0.1:9/api"
    best_plain = best_sdk = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(n):
            client.get(url, headers={"Authorization": "Bearer at"})
        best_plain = min(best_plain, time.process_time() - t)
        t = time.process_time()
        for _ in range(n):
            ag.fetch("GET", url)
        best_sdk = min(best_sdk, time.process_time() - t)
    client.close()
    return best_plain / n * 1e6, best_sdk / n * 1e6


def count_refreshes(base: str) -> int:
    return int(httpx2.get(base + "/count").text)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    ports: multiprocessing.SimpleQueue[int] = multiprocessing.SimpleQueue()
    proc = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{ports.get()}"
    url = base + "/api"

    plain = httpx2.Client()
    ag = Authgear("app", base, token_storage=MemoryTokenStorage())
    signed_in(ag, expired=False)
    ag.configure()
    for _ in range(200):  # warm up both
        plain.get(url, headers={"Authorization": "Bearer at"})
        ag.fetch("GET", url)

    best_plain = best_sdk = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            plain.get(url, headers={"Authorization": "Bearer at"})
        best_plain = min(best_plain, time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(n):
            ag.fetch("GET", url)
        best_sdk = min(best_sdk, time.perf_counter() - t)
    print(f"plain httpx2 + static header: {n / best_plain:8.0f} req/s")
    print(f"Authgear.fetch:               {n / best_sdk:8.0f} req/s")
    print(f"ratio (fetch time / plain time): {best_sdk / best_plain:.3f}  (goal <= 1.05)")
    plain_us, sdk_us = cpu_per_request(n)
    print(
        f"CPU per request, mock transport: plain {plain_us:.1f} us, fetch {sdk_us:.1f} us "
        f"(+{sdk_us - plain_us:.1f} us)"
    )

    before = count_refreshes(base)
    ag16 = Authgear("app", base, token_storage=MemoryTokenStorage())
    signed_in(ag16, expired=True)
    ag16.configure()
    barrier = threading.Barrier(16)

    def call() -> str | None:
        barrier.wait()
        return ag16.refresh_access_token_if_needed()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: call(), range(16)))
    print(f"16 threads, expired token: {count_refreshes(base) - before} refresh request(s)")

    async def tasks() -> None:
        a = AsyncAuthgear("app", base, token_storage=MemoryTokenStorage())
        signed_in(a, expired=True)
        await a.configure()
        await asyncio.gather(*(a.refresh_access_token_if_needed() for _ in range(200)))
        await a.aclose()

    before = count_refreshes(base)
    asyncio.run(tasks())
    print(f"200 asyncio tasks, expired token: {count_refreshes(base) - before} refresh request(s)")
    proc.terminate()
    proc.join()


if __name__ == "__main__":
    main()
