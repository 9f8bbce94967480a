"""Fixtures shared by the files of tests/server."""

from __future__ import annotations

# The server with an upstream oidc-provider and a GitHub-like stub (test_sso*.py).
from sso_support import sso

__all__ = ["sso"]
