"""The device grant's pure parts with canned input: user codes (RFC 8628 §6.1), the scope
rules of a device authorization request, and the answer to each poll (§3.5)."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from authgear.server.config import DEVICE_CODE_GRANT, ClientConfig
from authgear.server.device_flow import (
    authorization_body,
    poll_error,
    requested_scopes,
)
from authgear.server.endpoints.authorize import SUPPORTED_SCOPES
from authgear.server.http import OAuthError
from authgear.server.security import user_codes
from authgear.server.storage.devices import APPROVED, DENIED, ISSUED, PENDING, DeviceCode

CODE = DeviceCode(
    id="d1",
    device_code_hash="h",
    user_code_hash="u",
    client_id="c",
    scopes=["openid"],
    created_at=1000,
    expires_at=1600,
    poll_interval=5,
    last_poll_at=None,
    last_poll_too_fast=False,
    status=PENDING,
    failures_base=0,
    request_ip=None,
    request_user_agent=None,
)


def test_user_codes_are_eight_unambiguous_consonants_shown_in_two_halves() -> None:
    seen = collections.Counter[str]()
    for _ in range(2000):
        code = user_codes.new_user_code()
        assert len(code) == 8 and set(code) <= set(user_codes.ALPHABET)
        seen.update(code)
    # No vowels (no words), no digits or look-alikes (0/O, 1/I/L, 5/S, 8/B are not all there).
    assert not set(user_codes.ALPHABET) & set("AEIOUY0123456789")
    assert len(user_codes.ALPHABET) == 20 and set(seen) == set(user_codes.ALPHABET)
    assert user_codes.display("BCDFGHJK") == "BCDF-GHJK"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("BCDF-GHJK", "BCDFGHJK"),
        ("bcdf-ghjk", "BCDFGHJK"),
        (" bcdf ghjk ", "BCDFGHJK"),
        ("BC-DF-GH-JK", "BCDFGHJK"),
        ("bcdf\tghjk", "BCDFGHJK"),
        ("BCDFGHJ", None),  # too short
        ("BCDFGHJKL", None),  # too long
        ("BCDF-GHJA", None),  # a vowel is never in a code
        ("BCDF-GHJ0", None),
        (
            "\uff22\uff23\uff24\uff26-\uff27\uff28\uff2a\uff2b",
            None,
        ),  # full-width letters are not typed-as-ASCII
        ("bcdf-ghjß", None),  # "ß".upper() == "SS": checked as ASCII first
        ("BCDF\u200bGHJK", None),  # zero-width space
        ("BCDF\nGHJK", None),
        ("", None),
        (None, None),
        ("B" * 10_000, None),
    ],
)
def test_typed_user_codes_are_normalised_and_anything_else_never_matches(
    typed: str | None, expected: str | None
) -> None:
    assert user_codes.normalize(typed) == expected


def test_user_code_hash_is_keyed_so_a_leaked_table_is_not_a_dictionary() -> None:
    key_a, key_b = user_codes.derive_key(b"a" * 32), user_codes.derive_key(b"b" * 32)
    assert key_a != key_b and key_a != b"a" * 32
    a = user_codes.user_code_hash(key_a, "BCDFGHJK")
    assert a == user_codes.user_code_hash(key_a, "BCDFGHJK")
    assert a != user_codes.user_code_hash(key_b, "BCDFGHJK")
    assert "BCDFGHJK" not in a


def client(**extra: object) -> ClientConfig:
    grants = extra.pop("grant_types", ["authorization_code", "refresh_token", DEVICE_CODE_GRANT])
    return ClientConfig.model_validate({"id": "c", "grant_types": grants, **extra})


def test_device_scopes_follow_the_authorize_rules() -> None:
    full = "openid offline_access openid https://authgear.com/scopes/full-access"
    assert requested_scopes(client(), full, SUPPORTED_SCOPES) == [
        "openid",
        "offline_access",
        "https://authgear.com/scopes/full-access",
    ]
    # Without the refresh_token grant, offline_access is ignored (OIDC Core §11).
    no_refresh = client(grant_types=["authorization_code", DEVICE_CODE_GRANT])
    assert requested_scopes(no_refresh, "openid offline_access", SUPPORTED_SCOPES) == ["openid"]
    for bad in (None, "", "offline_access", "email", "openid admin"):
        with pytest.raises(OAuthError) as e:
            requested_scopes(client(), bad, SUPPORTED_SCOPES)
        assert e.value.error == "invalid_scope"


def test_authorization_body_matches_rfc_8628_section_3_2() -> None:
    body = authorization_body("https://auth.example.com", "dc", "BCDFGHJK", CODE)
    assert body == {
        "device_code": "dc",
        "user_code": "BCDF-GHJK",
        "verification_uri": "https://auth.example.com/device",
        "verification_uri_complete": "https://auth.example.com/device?user_code=BCDF-GHJK",
        "expires_in": 600,
        "interval": 5,
    }


@pytest.mark.parametrize(
    ("changes", "now", "error"),
    [
        ({}, 1100, "authorization_pending"),
        ({"last_poll_too_fast": True}, 1100, "slow_down"),
        ({"status": APPROVED, "last_poll_too_fast": True}, 1100, "slow_down"),
        ({"status": APPROVED}, 1100, None),
        ({"status": DENIED}, 1100, "access_denied"),
        # final answers need no slowing down
        ({"status": DENIED, "last_poll_too_fast": True}, 1100, "access_denied"),
        ({"status": ISSUED}, 1100, "invalid_grant"),
        ({"status": ISSUED, "last_poll_too_fast": True}, 1100, "invalid_grant"),
        ({}, 1600, "expired_token"),
        ({"status": APPROVED}, 1600, "expired_token"),
        ({"status": "something else"}, 1100, "invalid_grant"),
    ],
)
def test_each_poll_gets_the_rfc_8628_answer(
    changes: dict[str, object], now: int, error: str | None
) -> None:
    got = poll_error(dataclasses.replace(CODE, **changes), now)  # type: ignore[arg-type]
    assert (got.error if got else None) == error


def test_an_unknown_or_foreign_device_code_is_invalid_grant() -> None:
    got = poll_error(None, 1100)
    assert got is not None and got.error == "invalid_grant"
