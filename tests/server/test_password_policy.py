"""The password policy: the pure check with canned input (every rule, Authgear's cause names),
then on the real server: the rules shown before submit, every failed rule named after it, the
guessability score, and the history refusing a recent password (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from agtest.pages import Pages
from agtest.server import ServerProcess, new_email
from authgear.server.config import PasswordPolicyConfig
from authgear.server.security import password_policy as pp

STRICT = PasswordPolicyConfig(
    min_length=10,
    uppercase_required=True,
    lowercase_required=True,
    digit_required=True,
    symbol_required=True,
    excluded_keywords=("acme",),
)


def kinds(password: str, policy: PasswordPolicyConfig = STRICT, **kw: object) -> list[str]:
    return [v.kind for v in pp.check(policy, password, **kw)]  # type: ignore[arg-type]


def test_each_rule_has_authgears_cause_name() -> None:
    assert kinds("short") == [
        "PasswordTooShort",
        "PasswordUppercaseRequired",
        "PasswordDigitRequired",
        "PasswordSymbolRequired",
    ]
    assert kinds("ALLUPPERCASE1!") == ["PasswordLowercaseRequired"]
    assert kinds("Acme-Rocket-2024") == ["PasswordContainingExcludedKeywords"]
    assert kinds("Good-Enough-42") == []
    alphabet = PasswordPolicyConfig(alphabet_required=True)
    assert kinds("12345678!", alphabet) == ["PasswordAlphabetRequired"]


def test_length_is_in_code_points_and_input_is_capped_at_8192_bytes() -> None:
    policy = PasswordPolicyConfig(min_length=8)
    assert kinds("ééééééé", policy) == ["PasswordTooShort"]  # 7 code points, 14 bytes
    assert kinds("éééééééé", policy) == []
    assert kinds("€" * 2731, policy) == ["PasswordTooLong"]  # 8193 bytes
    assert kinds("a" * 8192, policy) == []


def test_classes_are_ascii_and_a_symbol_is_anything_else() -> None:
    policy = PasswordPolicyConfig(uppercase_required=True, symbol_required=True)
    # Non-ASCII letters are not uppercase letters, and they count as symbols.
    assert kinds("éÉèÈàÀüÜ", policy) == ["PasswordUppercaseRequired"]
    assert kinds("Passwordé", policy) == []


def test_the_email_and_its_local_part_are_excluded_case_insensitively() -> None:
    policy = PasswordPolicyConfig()
    email = "Alice.Smith@example.com"
    assert kinds("my alice.smith pass", policy, email=email) == [
        "PasswordContainingExcludedKeywords"
    ]
    assert kinds("xALICE.SMITH@EXAMPLE.COMx", policy, email=email) == [
        "PasswordContainingExcludedKeywords"
    ]
    # A short local part alone is no keyword (it would refuse half of all passwords).
    assert kinds("bobsleigh run", policy, email="bo@example.com") == []


@pytest.mark.parametrize(
    ("level", "score", "ok"),
    [(1, 0, True), (3, 1, False), (3, 2, True), (5, 3, False), (5, 4, True)],
)
def test_guessable_level_passes_when_score_reaches_level_minus_one(
    level: int, score: int, ok: bool
) -> None:
    policy = PasswordPolicyConfig(minimum_guessable_level=level)
    assert (kinds("whatever it is", policy, level=score + 1) == []) is ok


def test_zxcvbn_scores_common_and_random_passwords_apart() -> None:
    assert pp.guessable_level("password", []) == 1
    assert pp.guessable_level("correct horse battery staple 93", []) == 5
    # The user's own data counts as guessable.
    assert pp.guessable_level("alicesmith1990", ["alicesmith"]) <= 2
    # Long input is scored on its first 72 characters, never refused by zxcvbn itself.
    assert pp.guessable_level("a" * 9000, []) == 1


def test_hints_list_the_configured_rules() -> None:
    hints = pp.hints(STRICT)
    assert hints[0] == "At least 10 characters."
    assert "A symbol (not a letter or digit)." in hints
    assert "Not one of your recent passwords." not in hints
    assert "Not one of your recent passwords." in pp.hints(PasswordPolicyConfig(history_size=3))


def _signup(server: ServerProcess, email: str, password: str) -> tuple[int, str]:
    pages = Pages(server.url)
    try:
        r = pages.signup(email, password)
        return r.status_code, r.text
    finally:
        pages.close()


def test_signup_shows_the_rules_before_submit_and_names_each_failed_one(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.config["password_policy"] = {
        "min_length": 10,
        "digit_required": True,
        "symbol_required": True,
        "minimum_guessable_level": 4,
        "excluded_keywords": ["acme"],
    }
    server.start()
    page = Pages(server.url).get("/signup").text
    for rule in ("At least 10 characters.", "A digit (0-9).", "Hard to guess"):
        assert rule in page
    status, text = _signup(server, new_email(), "acme")
    assert status == 400
    for message in (
        "Use at least 10 characters.",
        "Include a digit (0-9).",
        "Include a symbol",
        "a word this site does not allow",
        "harder to guess",
    ):
        assert message in text
    status, text = _signup(server, new_email(), "Password123!")
    assert status == 400 and "harder to guess" in text and "at least" not in text
    email = new_email()
    assert _signup(server, email, "violet-Kettle-93-harbour")[0] == 303
    assert server.query("SELECT count(*) FROM users WHERE email = ?", email)[0][0] == 1


def test_history_refuses_a_recent_password_at_change_and_reset(
    fresh_server: ServerProcess,
) -> None:
    server = fresh_server
    server.config["password_policy"] = {"history_size": 3}
    server.start()
    email = new_email()
    passwords = ["first passphrase", "second passphrase", "third passphrase"]
    assert _signup(server, email, passwords[0])[0] == 303
    pages = Pages(server.url)
    assert pages.login(email, passwords[0]).status_code == 303

    def change(current: str, new: str) -> tuple[int, str]:
        r = pages.post(
            "/settings/account/password",
            {"current_password": current, "new_password": new, "new_password_confirm": new},
            page="/settings/account",
        )
        return r.status_code, r.text

    # The current password is part of the history.
    status, text = change(passwords[0], passwords[0])
    assert status == 400 and "recent passwords" in text
    assert change(passwords[0], passwords[1])[0] == 303
    assert change(passwords[1], passwords[2])[0] == 303
    # The last three (the current one counted) are refused ...
    for old in passwords:
        status, text = change(passwords[2], old)
        assert status == 400 and "recent passwords" in text
    # ... and only hashes are kept.
    stored = server.query(
        "SELECT h.password_hash FROM password_history h JOIN users u ON u.id = h.user_id "
        "WHERE u.email = ?",
        email,
    )
    assert len(stored) == 2 and all(row[0].startswith("$argon2id$") for row in stored)
    assert change(passwords[2], "fourth passphrase")[0] == 303
    # The first one fell out of the last three.
    assert change("fourth passphrase", passwords[0])[0] == 303
    pages.close()
