"""Sending off the request path: a small in-process queue with retries and back-off.

A request only appends to the queue (no I/O, no waiting). Worker tasks, started on the first
message, render the templates and hand the message to the mailer. A transient failure is tried
again after ``retry_delay`` seconds, doubling, up to ``attempts`` tries; each failure is one log
line naming the kind of message, the masked recipient and the reason, never its code or link.

The queue lives in the process that handled the request: with several workers or servers, each
sends its own mail, and a process that stops drains its queue for a bounded time first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol

from authgear.server.mail.transport import Mailer, MailError

log = logging.getLogger("authgear.mail")

MAX_QUEUED = 1000
WORKERS = 2


class Composer(Protocol):
    def __call__(self, kind: str, to: str, context: dict[str, Any]) -> EmailMessage: ...


def mask(address: str) -> str:
    """An address fit for a log line: ``j***@example.com``."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return "***"
    return f"{local[:1]}***@{domain[:100]}"


@dataclass(slots=True)
class Outgoing:
    kind: str
    to: str
    context: dict[str, Any] = field(repr=False)
    attempt: int = 1


class MailQueue:
    def __init__(
        self,
        mailer: Mailer,
        compose: Composer,
        *,
        attempts: int = 5,
        retry_delay: float = 2.0,
        max_queued: int = MAX_QUEUED,
        workers: int = WORKERS,
    ) -> None:
        self.mailer = mailer
        self.compose = compose
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.max_queued = max_queued
        self.workers = workers
        self.sent = 0
        self.failed = 0
        self._queue: asyncio.Queue[Outgoing] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Retries waiting for their time, and what each will queue again.
        self._timers: dict[asyncio.TimerHandle, Outgoing] = {}
        self._in_flight = 0
        self._closed = False

    def submit(self, kind: str, to: str, context: dict[str, Any]) -> bool:
        """Queue one message; False (and a log line) when the queue is full or closed."""
        if self._closed:
            log.error("mail %s to %s not queued: the server is stopping", kind, mask(to))
            return False
        queue = self._start()
        if queue.qsize() + len(self._timers) >= self.max_queued:
            log.error(
                "mail %s to %s not queued: %d messages waiting", kind, mask(to), queue.qsize()
            )
            return False
        queue.put_nowait(Outgoing(kind, to, context))
        return True

    def _start(self) -> asyncio.Queue[Outgoing]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._tasks = [
                asyncio.create_task(self._work(), name=f"authgear-mail-{i}")
                for i in range(self.workers)
            ]
        return self._queue

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            self._in_flight += 1
            try:
                await self._deliver(item)
            except Exception as e:  # a worker must survive anything one message does
                self.failed += 1
                log.error("mail %s to %s dropped: %s", item.kind, mask(item.to), type(e).__name__)
            finally:
                self._in_flight -= 1
                self._queue.task_done()

    async def _deliver(self, item: Outgoing) -> None:
        try:
            message = self.compose(item.kind, item.to, item.context)
        except Exception as e:
            self.failed += 1
            log.error(
                "mail %s to %s dropped: it could not be composed (%s)",
                item.kind,
                mask(item.to),
                type(e).__name__,
            )
            return
        try:
            await self.mailer.send(message)
        except MailError as e:
            self._failed(item, e)
            return
        self.sent += 1
        log.info("mail %s sent to %s", item.kind, mask(item.to))

    def _failed(self, item: Outgoing, error: MailError) -> None:
        if error.permanent or item.attempt >= self.attempts or self._closed:
            self.failed += 1
            log.error(
                "mail %s to %s failed after %d attempt%s, giving up: %s",
                item.kind,
                mask(item.to),
                item.attempt,
                "" if item.attempt == 1 else "s",
                error,
            )
            return
        delay = self.retry_delay * 2 ** (item.attempt - 1)
        log.warning(
            "mail %s to %s failed (attempt %d of %d): %s; retrying in %gs",
            item.kind,
            mask(item.to),
            item.attempt,
            self.attempts,
            error,
            delay,
        )
        item.attempt += 1
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def requeue() -> None:
            if timer is not None:
                self._timers.pop(timer, None)
            if self._queue is not None:
                self._queue.put_nowait(item)

        timer = loop.call_later(delay, requeue)
        self._timers[timer] = item

    @property
    def pending(self) -> int:
        waiting = self._queue.qsize() if self._queue is not None else 0
        return waiting + len(self._timers)

    async def drain(self, grace: float) -> bool:
        """Wait until nothing is queued, in flight or waiting for a retry; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline:
            idle = self._queue is None or (self._queue.empty() and not self._in_flight)
            if idle and not self._timers:
                return True
            await asyncio.sleep(0.05)
        return False

    async def aclose(self, grace: float = 10.0) -> None:
        """Send what is queued (retries stop) for at most ``grace`` seconds, then stop."""
        if self._queue is None:
            self._closed = True
            return
        # A retry waiting for its time gets its last try now, before the process stops.
        for timer, item in list(self._timers.items()):
            timer.cancel()
            self._queue.put_nowait(item)
        self._timers.clear()
        self._closed = True
        await self.drain(grace)
        left = self._queue.qsize() + self._in_flight
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if left:
            log.error(
                "%d queued mail message%s not sent: the server stopped", left, "s" * (left != 1)
            )
