"""The server's clock: whole seconds since the epoch, as every stored time is kept.

Its own module so that parts below the request layer (account recovery) can read it without
importing sessions.py, which depends on the server state."""

from __future__ import annotations

import time


def now_s() -> int:
    return int(time.time())
