"""The password policy, as Authgear has it (authenticator.password.policy), as a pure check.

``check`` returns every rule a password fails, each a :class:`Violation` with Authgear's cause
name (``PasswordTooShort``, ``PasswordBelowGuessableLevel``, ...) and a sentence for the page;
an empty list means the password is accepted. The guessability score comes from zxcvbn, which
Authgear uses too; it is given to ``check`` (see :func:`guessable_level`) so the check stays pure
and the caller decides where the ~50-100 ms of zxcvbn run (a bounded worker, not the loop).

Password history is not checked here: it needs the stored hashes (accounts.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from authgear.server.config import PasswordPolicyConfig

# Authgear refuses longer passwords when hashing (pkg/util/password/constants.go).
MAX_BYTES = 8192
# zxcvbn's cost grows with the length; it sees this many characters (zxcvbn-python's own cap).
GUESS_CHARS = 72


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    message: str


def _ascii_upper(c: str) -> bool:
    return "A" <= c <= "Z"


def _ascii_lower(c: str) -> bool:
    return "a" <= c <= "z"


def _ascii_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _ascii_letter(c: str) -> bool:
    return _ascii_upper(c) or _ascii_lower(c)


def _symbol(c: str) -> bool:
    return not (_ascii_letter(c) or _ascii_digit(c))


def check(
    policy: PasswordPolicyConfig,
    password: str,
    *,
    email: str | None = None,
    level: int | None = None,
) -> list[Violation]:
    """Every rule ``password`` breaks. ``level``: its zxcvbn level (score + 1), needed when
    the policy has a minimum_guessable_level."""
    out: list[Violation] = []
    if len(password.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        out.append(Violation("PasswordTooLong", f"Use at most {MAX_BYTES} bytes."))
    if len(password) < policy.min_length:
        out.append(Violation("PasswordTooShort", f"Use at least {policy.min_length} characters."))
    classes = (
        (policy.uppercase_required, _ascii_upper, "Uppercase", "an uppercase letter (A-Z)"),
        (policy.lowercase_required, _ascii_lower, "Lowercase", "a lowercase letter (a-z)"),
        (policy.alphabet_required, _ascii_letter, "Alphabet", "a letter (A-Z or a-z)"),
        (policy.digit_required, _ascii_digit, "Digit", "a digit (0-9)"),
        (policy.symbol_required, _symbol, "Symbol", "a symbol (not a letter or digit)"),
    )
    for required, test, name, what in classes:
        if required and not any(test(c) for c in password):
            out.append(Violation(f"Password{name}Required", f"Include {what}."))
    if _contains_keyword(policy, password, email):
        out.append(
            Violation(
                "PasswordContainingExcludedKeywords",
                "Do not use your email address or a word this site does not allow.",
            )
        )
    if policy.minimum_guessable_level and level is not None:
        needed = min(policy.minimum_guessable_level - 1, 4)
        if level - 1 < needed:
            out.append(
                Violation(
                    "PasswordBelowGuessableLevel",
                    "Choose a password that is harder to guess (avoid common words, names, "
                    "dates and patterns).",
                )
            )
    return out


def _keywords(policy: PasswordPolicyConfig, email: str | None) -> list[str]:
    words = [k.strip().lower() for k in policy.excluded_keywords if k.strip()]
    if email:
        address = email.strip().lower()
        words.append(address)
        local = address.partition("@")[0]
        # The local part too, when it is long enough to be a real choice and not a letter.
        if len(local) >= 4:
            words.append(local)
    return words


def _contains_keyword(policy: PasswordPolicyConfig, password: str, email: str | None) -> bool:
    lowered = password.lower()
    return any(word in lowered for word in _keywords(policy, email))


def guessable_level(password: str, user_inputs: list[str]) -> int:
    """zxcvbn's score + 1 (1..5) for the first GUESS_CHARS characters. CPU-bound: run it off
    the event loop."""
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:GUESS_CHARS], user_inputs=user_inputs[:20], max_length=GUESS_CHARS)
    return int(result["score"]) + 1


def hints(policy: PasswordPolicyConfig) -> list[str]:
    """The rules as a list shown next to the password field, before anything is submitted."""
    out = [f"At least {policy.min_length} characters."]
    for required, text in (
        (policy.uppercase_required, "An uppercase letter (A-Z)."),
        (policy.lowercase_required, "A lowercase letter (a-z)."),
        (policy.alphabet_required, "A letter (A-Z or a-z)."),
        (policy.digit_required, "A digit (0-9)."),
        (policy.symbol_required, "A symbol (not a letter or digit)."),
    ):
        if required:
            out.append(text)
    if policy.minimum_guessable_level:
        out.append("Hard to guess: no common words, names, dates or keyboard patterns.")
    out.append("Not your email address.")
    if policy.history_size or policy.history_days:
        out.append("Not one of your recent passwords.")
    return out


def summary(violations: list[Violation]) -> str:
    """One message naming every failed rule."""
    return "This password does not meet the rules: " + " ".join(v.message for v in violations)
