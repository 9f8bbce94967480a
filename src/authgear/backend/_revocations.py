"""The revocation feed a :class:`~authgear.backend.JWTVerifier` polls, so that a revoked
session's access tokens are refused within seconds instead of when they expire.

Authgear's access tokens carry the id of the session they belong to (``sid``). The server lists
the sessions that ended at ``GET /_resolver/revocations?after=<cursor>`` (authenticated as a
confidential client, HTTP Basic). A daemon thread polls it every ``poll_interval`` seconds and
adds what it reads to :class:`RevokedSessions`; the verifier looks a token's ``sid`` up there
(one dict lookup on the cold path, nothing on a cache hit: entries of newly revoked sessions
are dropped from the verified-token cache when they arrive). One thread serves sync and async
apps alike: it never touches an event loop, and a poll costs the app nothing.

When the feed cannot be read, verification goes on with what is known (tokens still expire),
and the poller logs one warning, then one line when the feed is back; never one per request.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2

from authgear.backend._errors import ConfigurationError
from authgear.backend._jwks import MAX_DOCUMENT, check_url

log = logging.getLogger("authgear.backend")

#: Pages read in one poll at most (1000 rows each): a backend starting against a server with a
#: long backlog catches up over a few polls instead of one long one.
MAX_PAGES_PER_POLL = 20
_MAX_SID = 256


@dataclass(frozen=True, slots=True)
class RevocationFeed:
    """Where and how a :class:`~authgear.backend.JWTVerifier` reads revoked sessions.

    ``client_id``/``client_secret``: a confidential client of the Authgear server (any one; a
    backend of its own is tidiest). ``url`` defaults to ``<endpoint>/_resolver/revocations``
    (the server also serves it on ``resolver_port``). ``poll_interval``: seconds between
    polls; a revocation reaches the backend within about that much plus one request."""

    client_id: str
    client_secret: str = field(repr=False)
    url: str | None = None
    poll_interval: float = 2.0

    def __post_init__(self) -> None:
        if not self.client_id or not self.client_secret:
            raise ConfigurationError("the revocation feed needs a client_id and client_secret")
        if not (math.isfinite(self.poll_interval) and 0.05 <= self.poll_interval <= 300):
            raise ConfigurationError("poll_interval must be between 0.05 and 300 seconds")


class FeedError(Exception):
    """The feed answered something other than a page of revocations."""


@dataclass(frozen=True, slots=True)
class FeedPage:
    revoked: dict[str, float]
    cursor: str
    has_more: bool
    retention: float


def parse_page(document: Any) -> FeedPage:
    """A feed answer, checked; :class:`FeedError` when it is not one."""
    if type(document) is not dict:
        raise FeedError("not a JSON object")
    items, cursor = document.get("revocations"), document.get("cursor")
    has_more, retention = document.get("has_more"), document.get("retention")
    if type(items) is not list or type(has_more) is not bool:
        raise FeedError("no revocations list or has_more")
    if type(cursor) is not str or not cursor.isascii() or not cursor.isdigit():
        raise FeedError("no cursor")
    if type(retention) is not int or retention <= 0:
        raise FeedError("no retention")
    revoked: dict[str, float] = {}
    for item in items:
        if type(item) is not dict:
            raise FeedError("a revocation is not an object")
        sid, at = item.get("sid"), item.get("revoked_at")
        if type(sid) is not str or not sid or len(sid) > _MAX_SID or type(at) is not int:
            raise FeedError("a revocation without sid or revoked_at")
        revoked[sid] = max(at, revoked.get(sid, at))
    return FeedPage(revoked, cursor, has_more, float(retention))


class RevokedSessions:
    """What the feed said so far: session id → when it was revoked. No I/O, no threads: the
    poller feeds it pages, the verifier asks :meth:`refuses`.

    A token is refused when its session was revoked at or after it was issued (``iat``), with
    ``leeway`` seconds for the clocks of different server processes: a disabled user's
    sessions come back when the user is enabled, with tokens issued later. An entry is
    forgotten ``retention`` (the server's longest access-token lifetime, plus a margin) after
    its revocation: every token it could refuse has expired by then."""

    def __init__(self, leeway: float) -> None:
        self.leeway = leeway
        self.revoked: dict[str, float] = {}
        self.cursor = "0"
        self.retention = math.inf

    def refuses(self, sid: Any, iat: float) -> bool:
        at = self.revoked.get(sid) if type(sid) is str else None
        return at is not None and iat <= at + self.leeway

    def apply(self, page: FeedPage) -> dict[str, float]:
        """Take in one page; return the sessions it newly revoked (or revoked again later)."""
        news = {
            sid: at for sid, at in page.revoked.items() if self.revoked.get(sid, -math.inf) < at
        }
        self.revoked.update(news)  # single dict operations: safe for lock-free readers
        self.cursor = page.cursor
        self.retention = page.retention
        return news

    def expire(self, now: float) -> None:
        horizon = now - self.retention - self.leeway
        if any(at < horizon for at in self.revoked.values()):
            # A new dict swapped in: readers never see one being shrunk.
            self.revoked = {s: at for s, at in self.revoked.items() if at >= horizon}


class _Verifier(Protocol):
    def _sessions_revoked(self, news: Mapping[str, float]) -> None: ...


def _get_page(http: httpx2.Client, url: str, cursor: str, auth: tuple[str, str]) -> FeedPage:
    params = {"after": cursor, "limit": "1000"}
    with http.stream("GET", url, params=params, auth=auth) as response:
        if response.status_code != 200:
            raise FeedError(f"HTTP {response.status_code}")
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT:
                raise FeedError(f"larger than {MAX_DOCUMENT} bytes")
    try:
        return parse_page(json.loads(bytes(body)))
    except ValueError:
        raise FeedError("not JSON") from None


class RevocationPoller:
    """The daemon thread that reads the feed into a :class:`RevokedSessions`.

    It holds its verifier weakly: a verifier dropped without :meth:`stop` ends its thread at
    the next poll. A verifier used in a process forked after the thread started (a pre-forking
    server) starts a new one there (:meth:`ensure_running`)."""

    def __init__(
        self,
        feed: RevocationFeed,
        url: str,
        state: RevokedSessions,
        verifier: _Verifier,
        *,
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.feed = feed
        self.url = url
        self.state = state
        self.timeout = timeout
        self.clock = clock
        self._verifier = weakref.ref(verifier)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        #: The process the thread runs in (a forked child has none running).
        self.pid = -1
        self._thread: threading.Thread | None = None
        #: Health, for metrics and tests: the clock at the last good poll, polls that failed
        #: in a row, and the last failure (never a secret).
        self.last_success = -math.inf
        self.failures = 0
        self.last_error: str | None = None
        self.polls = 0
        self.first_poll = threading.Event()

    @property
    def healthy(self) -> bool:
        return self.failures == 0 and self.last_success > -math.inf

    def ensure_running(self) -> None:
        if self.pid == os.getpid() or self._stop.is_set():
            return
        with self._lock:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="authgear-revocation-feed", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        with httpx2.Client(timeout=self.timeout) as http:
            while not self._stop.is_set():
                verifier = self._verifier()
                if verifier is None:
                    return
                self.poll(http, verifier)
                del verifier  # not held across the wait: a dropped verifier ends the thread
                self._stop.wait(self.feed.poll_interval)

    def poll(self, http: httpx2.Client, verifier: _Verifier) -> None:
        """Read every page past the cursor (up to MAX_PAGES_PER_POLL); log health changes."""
        auth = (self.feed.client_id, self.feed.client_secret)
        try:
            for _ in range(MAX_PAGES_PER_POLL):
                before = self.state.cursor
                page = _get_page(http, self.url, before, auth)
                news = self.state.apply(page)
                if news:
                    verifier._sessions_revoked(news)
                if not page.has_more or page.cursor == before:
                    break
        except Exception as e:  # network, status, shape: keep verifying with what we know
            self._failed(f"{type(e).__name__}: {e}"[:300])
        else:
            self._succeeded()
        finally:
            self.polls += 1
            self.first_poll.set()
        self.state.expire(self.clock())

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        if self.failures == 1:
            log.warning(
                "the revocation feed %s cannot be read (%s): tokens of sessions revoked from "
                "now on are accepted until they expire, until it can",
                self.url,
                error,
            )

    def _succeeded(self) -> None:
        if self.failures:
            log.warning(
                "the revocation feed %s can be read again (after %d failed polls)",
                self.url,
                self.failures,
            )
        self.failures = 0
        self.last_error = None
        self.last_success = self.clock()


def feed_url(feed: RevocationFeed, endpoint: str | None, allow_insecure_http: bool) -> str:
    if feed.url is not None:
        return check_url(feed.url, "the revocation feed url", allow_insecure_http)
    if endpoint is None:
        raise ConfigurationError("give the revocation feed's url (there is no endpoint)")
    return f"{endpoint}/_resolver/revocations"
