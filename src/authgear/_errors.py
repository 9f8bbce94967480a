"""The one base class every exception of ``authgear`` derives from.

A neutral module (not ``authgear.client``, not ``authgear.backend``) so that the client SDK and
the backend integration share one family without importing each other: ``except AuthgearError``
catches whatever either raises.
"""

from __future__ import annotations

__all__ = ["AuthgearError"]


class AuthgearError(Exception):
    """Base class of every error ``authgear`` raises (client SDK and backend integration)."""
