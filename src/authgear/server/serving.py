"""The HTTP server itself: uvicorn, with the limits a public listener needs and a graceful
shutdown.

uvicorn's httptools protocol has no header size or count limit, no timeout for a request head
or body (only between requests), and accepts connections until the process runs out of file
descriptors; its h11 protocol caps headers (answering 400, not 431) but parses in pure Python
at a fraction of the speed. So the server runs httptools with :class:`GuardedProtocol`, which
adds, per connection: a cap on the request head's bytes and header count (431; 414 for the URL
alone), a deadline for the head and another for the body (408), and per process: a connection
cap (the longest-idle connection is closed to make room, else 503) and a cap on requests in
flight (503 + Retry-After). See docs/decisions.md.

On SIGTERM, :class:`DrainingServer` first drains (``/readyz`` 503, responses close their
connections) for ``shutdown.drain_seconds`` while still serving, then closes the listeners and
gives requests in flight ``shutdown.grace_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import resource
import select
import signal
import socket
import threading
import time
from asyncio import TimerHandle
from types import FrameType
from typing import Any

import uvicorn
import uvicorn.supervisors.multiprocess as uvicorn_multiprocess
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from authgear.server import metrics
from authgear.server.config import HTTPConfig, Settings
from authgear.server.lifecycle import DRAIN
from authgear.server.middleware import STATUS_OVERRIDE

log = logging.getLogger("authgear.http")

# Extra attributes on uvicorn's Config (it is pickled into each worker process with them).
LIMITS = "authgear_http_limits"
MAX_CONNECTIONS = "authgear_max_connections"
DRAIN_SECONDS = "authgear_drain_seconds"
SHARES = "authgear_connection_shares"
# A worker with more connections than another waits this long at most before it accepts
# anyway (the other may be gone, or too busy to come back to accept()).
ACCEPT_DEFERRAL = 0.002
# How often an accept thread looks up from poll() to see whether its worker is stopping.
POLL_MS = 500
# File descriptors kept free for everything but client connections: the database pool (a
# socket each, and a spare), log files, the listeners, Python itself.
RESERVED_FDS = 64


def _response(status: int, reason: str, description: str, *, retry_after: int = 0) -> bytes:
    body = json.dumps(
        {
            "error": "temporarily_unavailable" if status == 503 else "invalid_request",
            "error_description": description,
        }
    ).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "cache-control: no-store",
        "x-content-type-options: nosniff",
        "connection: close",
    ]
    if retry_after:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


TOO_MANY_CONNECTIONS = _response(503, "Service Unavailable", "too many connections", retry_after=1)
HEADER_TOO_LARGE = _response(431, "Request Header Fields Too Large", "request header too large")
URL_TOO_LONG = _response(414, "URI Too Long", "request URL too long")
HEADER_TIMEOUT = _response(408, "Request Timeout", "the request head took too long")
BODY_TIMEOUT = _response(408, "Request Timeout", "the request body took too long")


async def _overloaded(scope: Any, receive: Any, send: Any) -> None:
    """The app for a request over max_concurrent_requests."""
    body = json.dumps(
        {"error": "temporarily_unavailable", "error_description": "server busy, try again"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with per-connection and per-process limits."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: HTTPConfig = getattr(config, LIMITS)
        self.max_connections: int = getattr(config, MAX_CONNECTIONS)
        self.limit_concurrency = None  # ours: max_concurrent_requests, tasks only
        self.in_head = False  # part of a request head has arrived, not all of it
        self.began_here = False  # a request head began in the chunk being parsed
        self.body_expected = False  # the current request's body has not all arrived
        self.head_bytes = 0
        self.rejected = False  # answered (431, 408, 503...) and closing: ignore the rest
        self.counted = False
        self.shares: ConnectionShares | None = getattr(config, SHARES, None)
        self.shared = False
        self.head_timer: TimerHandle | None = None
        self.body_timer: TimerHandle | None = None
        self.idle_since: float | None = time.monotonic()

    # -- connections --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Counted in the worker's share when its accept thread took it (BalancedServer).
        self.shared = self.shares is not None
        if len(self.connections) >= self.max_connections and not self._reclaim_idle():
            self.transport = transport
            self._refuse(TOO_MANY_CONNECTIONS, "connection_limit")
            return
        super().connection_made(transport)
        self.counted = True
        metrics.HTTP_CONNECTIONS.inc()
        # A new connection must send its first request head in time, or it is closed.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self.shared and self.shares is not None:
            self.shared = False
            self.shares.add(-1)
        if self.counted:
            self.counted = False
            metrics.HTTP_CONNECTIONS.dec()
        if self.flow is None:  # refused before it was set up
            self.connections.discard(self)
            return
        super().connection_lost(exc)

    def is_idle(self) -> bool:
        """No request on this connection now: closing it loses nothing (a client retries an
        idempotent request on a kept-alive connection closed before any response)."""
        return (
            not self.in_head
            and not self.rejected
            and (self.cycle is None or self.cycle.response_complete)
            and not self.pipeline
        )

    def _reclaim_idle(self) -> bool:
        """At the cap: close the connection idle the longest (nginx does the same with its
        reusable connections), so idle sockets cannot lock out new clients."""
        idle = [
            c
            for c in self.connections
            if isinstance(c, GuardedProtocol) and c.transport is not None and c.is_idle()
        ]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since or 0.0)
        victim.transport.close()
        self.connections.discard(victim)
        metrics.HTTP_REFUSED.labels("idle_closed_at_limit").inc()
        return True

    def _refuse(self, response: bytes, reason: str) -> None:
        self.rejected = True
        self._cancel_timers()
        metrics.HTTP_REFUSED.labels(reason).inc()
        peer = self.client[0] if self.client else "-"
        log.info("refused %s from %s: %s", response[9:12].decode(), peer, reason)
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    # -- timers -------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _cancel_timers(self) -> None:
        for timer in (self.head_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.body_timer = None

    def _head_late(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.rejected:
            return
        if self.in_head:
            self._refuse(HEADER_TIMEOUT, "header_timeout")
        elif self.is_idle():
            self.transport.close()  # connected, never asked anything

    def _body_late(self) -> None:
        self.body_timer = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        cycle.scope[STATUS_OVERRIDE] = 408  # type: ignore[literal-required]
        started = cycle.response_started
        # The app sees the client gone (its read ends), and answers nothing more.
        cycle.disconnected = True
        cycle.message_event.set()
        if started:
            self.rejected = True
            metrics.HTTP_REFUSED.labels("body_timeout").inc()
            self.transport.close()
        else:
            self._refuse(BODY_TIMEOUT, "body_timeout")

    # -- parsing ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return
        fresh = self.is_idle()
        self.began_here = False
        super().data_received(data)
        if self.rejected or self.transport.is_closing():
            return
        # Timers only for what did not arrive whole in this chunk (most requests do).
        if self.in_head:
            self._arm_head_timer()
        elif self.body_expected and self.body_timer is None:
            self.body_timer = self.loop.call_later(self.limits.body_timeout, self._body_late)
        if self.in_head:
            # The head is still incomplete: count what arrived. A chunk in which the head
            # began after the end of a pipelined request is not counted (its split is
            # unknown); the exact check runs when the head completes. So at most one read
            # buffer more than the limit is ever held.
            if fresh or not self.began_here:
                self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                if len(self.url) > self.limits.max_header_bytes:
                    self._refuse(URL_TOO_LONG, "url_too_long")
                else:
                    self._refuse(HEADER_TOO_LARGE, "header_too_large")

    def on_message_begin(self) -> None:
        if self.rejected:
            return
        super().on_message_begin()
        self.in_head = True
        self.began_here = True
        self.head_bytes = 0
        self.idle_since = None

    # on_url and on_header are not guarded: after a refusal they only fill a dead request's
    # head (bounded: the connection is closing), and guarding them costs every header a call.

    def on_headers_complete(self) -> None:
        if self.rejected:
            return
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        size = len(self.url)
        body = False
        for name, value in self.headers:
            size += len(name) + len(value) + 4
            if name == b"transfer-encoding" or (
                name == b"content-length" and value.strip() not in (b"", b"0")
            ):
                body = True
        if len(self.url) > self.limits.max_header_bytes:
            self._refuse(URL_TOO_LONG, "url_too_long")
            return
        if size > self.limits.max_header_bytes or len(self.headers) > self.limits.max_headers:
            self._refuse(HEADER_TOO_LARGE, "header_too_large")
            return
        app = self.app
        if len(self.tasks) >= self.limits.max_concurrent_requests:
            metrics.HTTP_REFUSED.labels("overloaded").inc()
            self.app = _overloaded
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        # A body is coming; its deadline is armed if it does not arrive with the head.
        self.body_expected = body

    def on_body(self, body: bytes) -> None:
        if not self.rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            return
        self.body_expected = False
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.idle_since = time.monotonic()
        super().on_response_complete()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining first on SIGTERM (see the module docstring). A second
    SIGTERM, or SIGINT (Ctrl-C), skips the rest of the drain."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.drain_seconds: float = getattr(config, DRAIN_SECONDS, 0.0)
        self.stop_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.stop_at is None and self.drain_seconds > 0:
            DRAIN.start()
            self.stop_at = time.monotonic() + self.drain_seconds
            log.info(
                "SIGTERM: draining for %.0f s (readyz answers 503), then closing",
                self.drain_seconds,
            )
            return
        if self.stop_at is not None and not self.should_exit:
            self.should_exit = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.stop_at is not None and time.monotonic() >= self.stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


class ConnectionShares:
    """Each worker's live connections, in memory shared by the workers of one ``serve
    --workers N`` (made before they are spawned, handed to each with uvicorn's config). A
    worker writes its own slot only: its accept thread adds a connection as soon as it has
    taken it (so that the next look at the counts already sees it), its event loop removes it
    when it closes; any worker reads them all."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        # Typed Any: typeshed's shared arrays do not say what they hold.
        self._pids: Any = context.Array("q", workers)  # with a lock, for claiming a slot
        self._counts: Any = context.Array("q", workers, lock=False)
        self._slot = -1
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"pids": self._pids, "counts": self._counts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._pids, self._counts = state["pids"], state["counts"]
        self._slot = -1
        self._lock = threading.Lock()

    def claim(self) -> None:
        """Take a free slot, or the slot of a worker that has died (a restarted one)."""
        with self._pids.get_lock():
            for i, pid in enumerate(self._pids):
                if pid == 0 or not _alive(pid):
                    self._pids[i] = os.getpid()
                    self._counts[i] = 0
                    self._slot = i
                    return

    def add(self, n: int) -> None:
        if self._slot >= 0:
            with self._lock:  # the accept thread and the event loop both write this slot
                self._counts[self._slot] += n

    def busier_than_another(self) -> bool:
        """This worker holds more connections than some other live one."""
        if self._slot < 0:
            return False
        mine, counts = self._counts[self._slot], self._counts
        return any(pid and i != self._slot and counts[i] < mine for i, pid in enumerate(self._pids))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BalancedServer(DrainingServer):
    """A worker of ``serve --workers N`` that accepts from the shared listening sockets in a
    thread of its own, leaving a new connection to a worker with fewer when it can.

    Workers that all watch a shared socket with epoll are all woken for each connection and the
    first to call accept() wins, so a burst of new keep-alive connections (a load balancer's or
    a proxy's pool opening at once) splits at random: 13 and 19 of 32 is common, and the busier
    worker's queue sets the tail latency for as long as those connections live. Here each
    worker's accept thread polls the socket, and one that holds more connections than another
    defers (at most ACCEPT_DEFERRAL) so that the other takes the connection. (A blocking
    accept() does not do it: the kernel wakes one waiter and that one drains the whole backlog
    of a burst.) Measured: docs/benchmarks.md."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.accepting = True
        self.shares: ConnectionShares | None = getattr(config, SHARES, None)
        self._connecting: set[asyncio.Future[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if not sockets or self.shares is None:
            await super().startup(sockets)
            return
        self.shares.claim()
        await super().startup([])  # the lifespan and the server state; no listener on the loop
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        for sock in sockets:
            # What create_server would do: listen, non-blocking (the accept thread polls).
            sock.listen(self.config.backlog)
            sock.setblocking(False)
            thread = threading.Thread(
                target=self._accept_forever, args=(sock, loop), name="accept", daemon=True
            )
            thread.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.accepting = False
        await super().shutdown(sockets)

    def _accept_forever(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        shares = self.shares
        assert shares is not None
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while self.accepting:
            # Every worker's thread wakes for a waiting connection (poll is level-triggered):
            # one holding more than another defers to it for a moment, then takes it anyway.
            if not poller.poll(POLL_MS):
                continue
            deadline = time.monotonic() + ACCEPT_DEFERRAL
            while shares.busier_than_another() and time.monotonic() < deadline:
                time.sleep(ACCEPT_DEFERRAL / 10)
            try:
                conn, _ = sock.accept()
            except BlockingIOError:
                continue  # another worker took it
            except OSError as e:
                if not self.accepting:
                    return
                log.warning("accept failed: %s", e.strerror or type(e).__name__)
                time.sleep(0.05)  # e.g. out of file descriptors: let the loop close some
                continue
            shares.add(1)
            conn.setblocking(False)
            try:
                loop.call_soon_threadsafe(self._connect, conn)
            except RuntimeError:  # the loop has closed: this worker is gone
                conn.close()
                return

    def _protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol

    def _connect(self, conn: socket.socket) -> None:
        if not self.accepting:
            conn.close()
            return
        task = asyncio.ensure_future(
            asyncio.get_running_loop().connect_accepted_socket(self._protocol, conn)
        )
        self._connecting.add(task)  # a reference until it is done (the loop keeps a weak one)
        task.add_done_callback(self._connecting.discard)


class WorkerProcess(uvicorn_multiprocess.Process):
    """A worker of `serve --workers N`: runs a BalancedServer."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = BalancedServer(config=self.config)
        return self._server


class Supervisor(uvicorn_multiprocess.Multiprocess):
    """uvicorn's supervisor; on exit it closes its own copy of the listening sockets first, so
    the port stops accepting once the workers have closed theirs (a copy left open would
    queue connections that nobody will ever accept)."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def connection_cap(limits: HTTPConfig, pool: int) -> int:
    """max_connections, or what the open-file limit leaves after the database pool."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = 100_000 if soft == resource.RLIM_INFINITY else soft - RESERVED_FDS - 2 * pool
    room = max(room, 16)
    return min(limits.max_connections, room) if limits.max_connections else room


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; OSError (address in use, permission) for the caller to report."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def uvicorn_config(settings: Settings, app: Any, *, workers: int = 1) -> uvicorn.Config:
    config = settings.config
    limits = config.http
    uconfig = uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers if workers > 1 else None,
        http=GuardedProtocol,
        ws="none",
        lifespan="on",
        log_config=None,
        log_level=config.log_level,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=limits.keep_alive_timeout,
        timeout_graceful_shutdown=int(config.shutdown.grace_seconds),
    )
    setattr(uconfig, LIMITS, limits)
    pool = config.database_pool_size + config.database_max_overflow
    setattr(uconfig, MAX_CONNECTIONS, connection_cap(limits, pool))
    setattr(uconfig, DRAIN_SECONDS, config.shutdown.drain_seconds)
    return uconfig


def run(settings: Settings, sockets: list[socket.socket]) -> None:
    """Serve on ``sockets`` until SIGTERM/SIGINT: in this process, or in ``workers``
    processes that share the sockets (the database is migrated already)."""
    from authgear.server.app import create_app

    workers = settings.config.workers
    if workers == 1:
        server = DrainingServer(uvicorn_config(settings, create_app(settings, migrate_first=False)))
        server.run(sockets)
        return
    uconfig = uvicorn_config(settings, "authgear.server.app:app_from_environment", workers=workers)
    setattr(uconfig, SHARES, ConnectionShares(workers))
    # uvicorn's supervisor builds its workers from this module-level name; ours run a
    # DrainingServer. Only this (the serving) process is affected.
    uvicorn_multiprocess.Process = WorkerProcess  # type: ignore[misc]
    Supervisor(uconfig, sockets=sockets).run()
