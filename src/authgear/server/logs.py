"""Logging an operator can use: text or JSON lines, each carrying the request id.

``configure`` installs one handler on the root logger, so uvicorn's own loggers (started,
stopped, invalid requests) come out in the same format. The request id is accepted from the
client's ``X-Request-ID`` (when it is short and plain) or generated, echoed in the response,
and attached to every line logged while the request is handled (a context variable).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
from contextvars import ContextVar
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("authgear_request_id", default=None)
# Plain tokens only: an id is written into every log line, so it must not carry a line break
# or anything a log viewer would interpret.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:+=/-]{1,128}$")
# Attributes every LogRecord has; anything else on a record is an `extra` field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",  # uvicorn's coloured duplicate of the message
    "taskName",
}

# Set on a request (its ASGI scope) whose 5xx answer was logged with its cause already: the
# HTTP layer then adds no ERROR line of its own.
CAUSE_LOGGED = "authgear.cause_logged"


def request_id(header: str | None) -> str:
    """The client's X-Request-ID when it is a plain token, else a new one."""
    if header and _REQUEST_ID_RE.match(header):
        return header
    return os.urandom(16).hex()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [request_id=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [request_id={rid}]" if rid else line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and the
    structured fields a call passed as ``extra`` (event, status, client_ip, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """One stderr handler on the root logger, in ``fmt`` ("text" or "json"); uvicorn's
    loggers propagate to it (start uvicorn with ``log_config=None``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's access log is off (ours has the route, the real client IP and the id).
    logging.getLogger("uvicorn.access").disabled = True
