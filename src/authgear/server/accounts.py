"""Account recovery and verification as services: emailed codes and links, password changes
under the policy, verified and changed email addresses. Pages (endpoints/account.py,
endpoints/recovery.py), the admin API, the portal and the CLI all call these.

Limits follow Authgear's OTP mechanics (spec §5.4), counted before the work they guard:
- sending: per IP and per recipient address (fixed windows, shared by every process), plus a
  cooldown per purpose and subject decided atomically in the database (issue_code);
- checking: per IP (a right code is given back), and per code: the try is counted on the code's
  row before the comparison, and the code is revoked after ``code_max_failed_attempts``.
A password reset answers alike whether or not the address has an account, and does the same
work: a code row is stored for an unknown address too (limits and cooldown apply to it); only
the mail is not sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from authgear.server.clock import now_s
from authgear.server.config import ServerConfig
from authgear.server.passwords import hash_password, run_bounded, verify_password
from authgear.server.ratelimit import RateLimiter, ip_bucket
from authgear.server.security import codes, password_policy
from authgear.server.security.lockout import LockoutPolicy
from authgear.server.storage import EmailTaken, Repository, User
from authgear.server.storage.accounts import AccountRepository, CodeRef, EmailCode, PasswordSet

if TYPE_CHECKING:
    from authgear.server.mail import MailService

GENERIC_CHANGE_FAILURE = "We could not change your email address to this one. Try another address."


class AccountError(Exception):
    """A refusal with a message fit for the page; ``status`` is the HTTP status to answer."""

    status = 400
    kind = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooMany(AccountError):
    status = 429
    kind = "rate_limited"


class CodeInvalid(AccountError):
    kind = "invalid_code"

    def __init__(self, message: str = "That code is not valid or has expired.") -> None:
        super().__init__(message)


class WrongPassword(AccountError):
    status = 401
    kind = "invalid_credentials"

    def __init__(self) -> None:
        super().__init__("Your current password is not correct.")


class PolicyViolated(AccountError):
    kind = "password_policy"

    def __init__(self, violations: list[password_policy.Violation]) -> None:
        super().__init__(password_policy.summary(violations))
        self.violations = violations


@dataclass(frozen=True, slots=True)
class Sent:
    """A code was issued (and mailed, when its address has an account)."""

    target: str
    minutes: int


def lockout_policy(config: ServerConfig) -> LockoutPolicy:
    cfg = config.lockout
    return LockoutPolicy(
        max_attempts=cfg.max_attempts,
        history_duration=cfg.history_duration,
        minimum_duration=cfg.minimum_duration,
        maximum_duration=cfg.maximum_duration,
    )


class AccountService:
    """Built from the parts it uses, so that the CLI (no server running) can build one too."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        repo: Repository,
        limiter: RateLimiter,
        mail: MailService,
    ) -> None:
        self.config = config
        self.repo = repo
        self.store: AccountRepository = repo.accounts
        self.limiter = limiter
        self.mail = mail
        self._key: bytes | None = None

    async def key(self) -> bytes:
        """The HMAC key of stored codes, made once and shared by every process."""
        if self._key is None:
            from authgear.server.keys import EMAIL_CODE_KEY, KeyCipher, load_server_secret

            cipher = KeyCipher.from_config(self.config)
            self._key = await load_server_secret(self.repo, EMAIL_CODE_KEY, cipher)
        return self._key

    # -- limits -------------------------------------------------------------------------------
    async def _count_send(self, ip: str | None, target: str) -> None:
        limits = self.config.rate_limits
        limiter = self.limiter
        if not await limiter.hit(
            "code_send_ip", ip_bucket(ip), limits.code_sends_per_ip_per_hour, 3600
        ):
            raise TooMany("Too many codes were requested from your network. Try again later.")
        if not await limiter.hit(
            "code_send_email", target.lower(), limits.code_sends_per_email_per_hour, 3600
        ):
            raise TooMany("Too many codes were sent to this address. Try again later.")

    def _cooldown(self) -> int | None:
        limits = self.config.rate_limits
        return limits.code_resend_cooldown if limits.enabled else None

    async def _issue(
        self,
        purpose: str,
        subject: str,
        user_id: str | None,
        target: str,
        lifetime: int,
        *,
        link: bool,
        cooldown: int | None,
    ) -> tuple[str, str | None]:
        """A new code (and link token) for (purpose, subject), stored hashed; raises TooMany
        within the cooldown of the previous one."""
        key = await self.key()
        code = codes.new_code()
        token = codes.new_link_token() if link else None
        now = now_s()
        issued = await self.store.issue_code(
            EmailCode(
                purpose=purpose,
                subject=subject,
                user_id=user_id,
                target=target,
                code_hash=codes.code_hash(key, purpose, subject, code),
                link_hash=codes.link_hash(key, purpose, token) if token else None,
                created_at=now,
                expires_at=now + lifetime,
                failed_attempts=0,
            ),
            cooldown=cooldown,
        )
        if not issued:
            raise TooMany("A code was sent less than a minute ago. Wait a minute and try again.")
        return code, token

    async def _check(
        self, purpose: str, subject: str, value: str, ip: str | None
    ) -> tuple[CodeRef, EmailCode]:
        """The live code of (purpose, subject) that ``value`` is, as a reference to spend it;
        raises CodeInvalid or TooMany. Counted per IP (given back when right) and per code."""
        limits = self.config.rate_limits
        bucket = ip_bucket(ip)
        if not await self.limiter.hit(
            "code_check", bucket, limits.code_checks_per_ip_per_minute, 60
        ):
            raise TooMany("Too many codes were tried from your network. Wait a minute.")
        code = codes.normalize_code(value)
        if code is None:
            raise CodeInvalid("Enter the 6-digit code from the email.")
        key = await self.key()
        hashed = codes.code_hash(key, purpose, subject, code)
        found = await self.store.check_code(
            purpose, subject, hashed, now_s(), max_failed=self.config.code_max_failed_attempts
        )
        if found is None:
            raise CodeInvalid()
        await self.limiter.refund("code_check", bucket, 60)
        return CodeRef(purpose, subject=subject, code_hash=hashed), found

    async def link_ref(self, purpose: str, token: str) -> tuple[CodeRef, EmailCode] | None:
        """A live link: its reference and its code row (a 160-bit token: nothing to count)."""
        normalized = codes.normalize_link_token(token)
        if normalized is None:
            return None
        hashed = codes.link_hash(await self.key(), purpose, normalized)
        found = await self.store.find_link(purpose, hashed, now_s())
        if found is None:
            return None
        return CodeRef(purpose, link_hash=hashed), found

    def _link(self, path: str, token: str) -> str:
        # Always the configured public origin, never the request's Host header.
        return f"{self.config.issuer}{path}?code={token}"

    # -- passwords ----------------------------------------------------------------------------
    async def policy_problems(
        self, password: str, email: str | None, user_id: str | None = None
    ) -> list[password_policy.Violation]:
        """Every rule of the password policy ``password`` breaks; the history too when the
        password is for an existing user."""
        policy = self.config.password_policy
        level = None
        too_long = len(password.encode("utf-8", "surrogatepass")) > password_policy.MAX_BYTES
        if policy.minimum_guessable_level and not too_long:
            inputs = [self.config.app_name]
            if email:
                inputs += [email, email.partition("@")[0]]
            level = await run_bounded(password_policy.guessable_level, password, inputs)
        problems = password_policy.check(policy, password, email=email, level=level)
        if problems or user_id is None or not (policy.history_size or policy.history_days):
            return problems
        hashes = await self.store.password_history(
            user_id, size=policy.history_size, days=policy.history_days, now=now_s()
        )
        for stored in hashes:
            if await verify_password(stored, password):
                return [
                    password_policy.Violation(
                        "PasswordReused", "Do not reuse one of your recent passwords."
                    )
                ]
        return []

    async def _enforce_policy(self, password: str, email: str, user_id: str | None) -> None:
        problems = await self.policy_problems(password, email, user_id)
        if problems:
            raise PolicyViolated(problems)

    def _history(self) -> tuple[int, int] | None:
        policy = self.config.password_policy
        if policy.history_size or policy.history_days:
            return policy.history_size, policy.history_days
        return None

    async def _store_password(
        self,
        user: User,
        password: str,
        *,
        keep_session: str | None,
        spend: CodeRef | None,
        how: str,
        end_sessions: bool | None = None,
    ) -> PasswordSet:
        ends = self.config.password_change_ends_sessions if end_sessions is None else end_sessions
        result = await self.store.set_password(
            user.id,
            await hash_password(password),
            now_s(),
            history=self._history(),
            end_sessions=ends,
            keep_session=keep_session,
            spend=spend,
        )
        if result is None:
            raise CodeInvalid()
        self.mail.submit(
            "password_changed", result.user.email, how=how, sessions_ended=result.ended_sessions > 0
        )
        return result

    async def check_current_password(self, user: User, password: str, ip: str | None) -> None:
        """The user's current password, counted like a sign-in: the per-IP failure limit and
        the account lockout are reserved before argon2 runs and given back when it is right."""
        limits = self.config.rate_limits
        if not await self.limiter.hit(
            "password", ip, limits.password_failures_per_ip_per_minute, 60
        ):
            raise TooMany("Too many attempts. Wait a minute and try again.")
        lock_key = f"email:{user.email.strip().lower()[:320]}"
        lockout = self.config.lockout
        if lockout.enabled and not await self.repo.reserve_login_attempt(
            lock_key, now_s(), lockout_policy(self.config)
        ):
            await self.limiter.refund("password", ip, 60)
            raise TooMany("Too many attempts. Wait a while and try again.")
        if not await verify_password(user.password_hash, password[:8192]):
            raise WrongPassword()
        await self.limiter.refund("password", ip, 60)
        if lockout.enabled:
            await self.repo.clear_login_failures(lock_key)

    async def change_password(
        self, user: User, current: str, new: str, *, ip: str | None, keep_session: str | None
    ) -> PasswordSet:
        """/settings/account: the current password first (counted like a sign-in), then the
        policy with the history; other sessions end when configured."""
        await self.check_current_password(user, current, ip)
        await self._enforce_policy(new, user.email, user.id)
        return await self._store_password(
            user, new, keep_session=keep_session, spend=None, how="changed"
        )

    async def admin_set_password(
        self, user: User, password: str, *, end_sessions: bool | None = None
    ) -> PasswordSet:
        """An administrator's new password for a user: the policy applies (not the history,
        which is the user's own)."""
        problems = await self.policy_problems(password, user.email)
        if problems:
            raise PolicyViolated(problems)
        return await self._store_password(
            user, password, keep_session=None, spend=None, how="admin", end_sessions=end_sessions
        )

    # -- forgot password ----------------------------------------------------------------------
    async def request_reset(self, email: str, ip: str | None) -> Sent:
        """Send a reset code and link to ``email`` if it has an account; the same answer and
        the same work either way. Raises TooMany."""
        lifetime = self.config.forgot_password.lifetime
        await self._count_send(ip, email)
        user = await self.repo.get_user_by_email(email)
        if user is not None and user.disabled:
            user = None
        target = user.email if user is not None else email
        code, token = await self._issue(
            codes.PURPOSE_RESET,
            email.lower(),
            user.id if user else None,
            target,
            lifetime,
            link=True,
            cooldown=self._cooldown(),
        )
        if user is not None and token is not None:
            self._mail_reset(user.email, code, token, lifetime)
        return Sent(target, lifetime // 60)

    def _mail_reset(self, to: str, code: str, token: str, lifetime: int) -> None:
        self.mail.submit(
            "reset_password",
            to,
            code=code,
            link=self._link("/reset-password", token),
            minutes=lifetime // 60,
        )

    async def admin_send_reset(self, user: User) -> Sent:
        """An administrator sends the user a reset mail: no limits, no cooldown."""
        lifetime = self.config.forgot_password.lifetime
        code, token = await self._issue(
            codes.PURPOSE_RESET,
            user.email.lower(),
            user.id,
            user.email,
            lifetime,
            link=True,
            cooldown=None,
        )
        assert token is not None
        self._mail_reset(user.email, code, token, lifetime)
        return Sent(user.email, lifetime // 60)

    async def reset_ref(
        self, *, email: str | None, code: str | None, token: str | None, ip: str | None
    ) -> tuple[CodeRef, User]:
        """The reset a form names, by the emailed code (with its address) or the link token;
        raises CodeInvalid or TooMany. Nothing is spent yet."""
        if token:
            found = await self.link_ref(codes.PURPOSE_RESET, token)
            if found is None:
                raise CodeInvalid("This link is not valid or has expired. Ask for a new one.")
            ref, row = found
        else:
            if not email:
                raise CodeInvalid("Enter your email address.")
            ref, row = await self._check(codes.PURPOSE_RESET, email.lower(), code or "", ip)
        user_id = row.user_id
        user = await self.repo.get_user(user_id) if user_id else None
        if user is None or user.disabled:
            raise CodeInvalid()
        return ref, user

    async def reset_password(
        self,
        *,
        email: str | None,
        code: str | None,
        token: str | None,
        password: str,
        ip: str | None,
    ) -> PasswordSet:
        """Spend a reset code or link on a new password. All sessions end when configured;
        the lockout of the address is lifted (the mailbox was proven)."""
        ref, user = await self.reset_ref(email=email, code=code, token=token, ip=ip)
        await self._enforce_policy(password, user.email, user.id)
        result = await self._store_password(
            user, password, keep_session=None, spend=ref, how="reset"
        )
        await self.repo.clear_login_failures(f"email:{user.email.lower()[:320]}")
        return result

    # -- verification -------------------------------------------------------------------------
    async def send_verification(self, user: User, ip: str | None, *, limited: bool = True) -> Sent:
        lifetime = self.config.verification_code_lifetime
        if limited:
            await self._count_send(ip, user.email)
        code, token = await self._issue(
            codes.PURPOSE_VERIFY,
            user.id,
            user.id,
            user.email,
            lifetime,
            link=True,
            cooldown=self._cooldown() if limited else None,
        )
        assert token is not None
        self.mail.submit(
            "verify_email",
            user.email,
            code=code,
            link=self._link("/verify-email", token),
            minutes=lifetime // 60,
        )
        return Sent(user.email, lifetime // 60)

    async def verify_with_code(self, user: User, code: str, ip: str | None) -> User:
        ref, _ = await self._check(codes.PURPOSE_VERIFY, user.id, code, ip)
        verified = await self.store.verify_with_code(ref, now_s())
        if verified is None:
            raise CodeInvalid()
        return verified

    async def verify_with_link(self, token: str) -> User:
        found = await self.link_ref(codes.PURPOSE_VERIFY, token)
        verified = await self.store.verify_with_code(found[0], now_s()) if found else None
        if verified is None:
            raise CodeInvalid("This link is not valid or has expired. Ask for a new code.")
        return verified

    # -- change of email ----------------------------------------------------------------------
    async def request_email_change(
        self, user: User, new_email: str, password: str, ip: str | None
    ) -> Sent:
        """A code to the new address, after the current password. A taken address gets the
        same answer (and a code row) without a mail, so the form tells nothing."""
        if new_email.lower() == user.email.lower():
            raise AccountError("This is already your email address.")
        await self.check_current_password(user, password, ip)
        await self._count_send(ip, new_email)
        lifetime = self.config.verification_code_lifetime
        taken = await self.repo.get_user_by_email(new_email) is not None
        code, _ = await self._issue(
            codes.PURPOSE_CHANGE_EMAIL,
            user.id,
            user.id,
            new_email,
            lifetime,
            link=False,
            cooldown=self._cooldown(),
        )
        if not taken:
            self.mail.submit("change_email", new_email, code=code, minutes=lifetime // 60)
        return Sent(new_email, lifetime // 60)

    async def confirm_email_change(self, user: User, code: str, ip: str | None) -> User:
        ref, _ = await self._check(codes.PURPOSE_CHANGE_EMAIL, user.id, code, ip)
        try:
            changed = await self.store.change_email(ref, now_s())
        except EmailTaken:
            raise AccountError(GENERIC_CHANGE_FAILURE) from None
        if changed is None:
            raise CodeInvalid()
        new_user, old_email = changed
        self.mail.submit("email_changed", old_email, new_email=new_user.email)
        return new_user

    async def pending_email_change(self, user: User) -> str | None:
        """The address a live change-of-email code was sent to, if any."""
        return await self.store.pending_target(codes.PURPOSE_CHANGE_EMAIL, user.id, now_s())
