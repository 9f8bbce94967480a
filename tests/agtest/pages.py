"""A cookie-keeping HTTP client for the account pages (forms with CSRF tokens), like a person
without JavaScript."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx2

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no csrf token on the page"
    return m.group(1)


@dataclass
class Pages:
    base: str
    http: httpx2.Client = field(init=False)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx2.Client(
            base_url=self.base, follow_redirects=False, timeout=30, headers=self.headers
        )

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kwargs: Any) -> httpx2.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict[str, str], *, page: str | None = None) -> httpx2.Response:
        """POST a form of ``page`` (default: ``path``), with the CSRF token that page shows."""
        shown = self.http.get(page or path)
        assert shown.status_code == 200, (shown.status_code, shown.text[:300])
        return self.post_with(path, data, shown.text)

    def post_with(self, path: str, data: dict[str, str], html: str) -> httpx2.Response:
        """POST with the CSRF token of a page already received (``html``)."""
        return self.http.post(path, data={"csrf_token": csrf_of(html), **data})

    def signup(self, email: str, password: str, path: str = "/signup") -> httpx2.Response:
        return self.post(path, {"email": email, "password": password})

    def login(self, email: str, password: str, path: str = "/login") -> httpx2.Response:
        return self.post(path, {"email": email, "password": password})

    def forgot(self, email: str, path: str = "/forgot-password") -> httpx2.Response:
        return self.post(path, {"email": email})
