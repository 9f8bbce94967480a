"""WebAuthn (passkeys) for this server, on py_webauthn: the relying party, the options a
browser gets, and the checks of what it sends back. Pure apart from the library's crypto.

RP ID = the public origin's host; the only accepted origin = the public origin (accounts spec
§3 uses the request's host; we use the configured origin, which is what users see). WebAuthn
refuses IP literals as RP IDs, so on an origin like ``http://127.0.0.1:3000`` passkeys are off.
Beyond Authgear (which prefers user verification), both ceremonies *require* it: a passkey signs
in alone, so it must prove the user (PIN or biometric) as well as the device to count as both
factors. Credentials must be discoverable (``residentKey: required``) for sign-in without an
email. Attestation is ``none`` (see docs/decisions.md).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url, options_to_json
from webauthn.helpers.base64url_to_bytes import base64url_to_bytes
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

# Milliseconds the browser may wait for the user (Authgear: 5 minutes for a modal ceremony).
CEREMONY_TIMEOUT_MS = 300_000
# Seconds a challenge stays usable.
CHALLENGE_TTL = 300
MAX_CREDENTIAL_JSON = 16_384
ALGORITHMS = [
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]


class PasskeyError(Exception):
    """A credential or assertion that does not verify; the message is safe to log."""


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    name: str
    origin: str


def relying_party(issuer: str, name: str) -> RelyingParty | None:
    """The RP for this server's public origin, or None when passkeys cannot work there."""
    host = urlsplit(issuer).hostname or ""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not host:
        return None
    return RelyingParty(id=host, name=name or host, origin=issuer)


def _descriptors(credential_ids: list[str]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in credential_ids]


def registration_options(
    rp: RelyingParty,
    *,
    user_id: str,
    user_name: str,
    exclude: list[str],
    challenge: bytes,
) -> dict[str, Any]:
    """``PublicKeyCredentialCreationOptions`` as JSON (WebAuthn L3 ``toJSON`` form), with the
    user's passkeys in ``excludeCredentials`` so one authenticator is not registered twice."""
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_name=user_name,
        user_id=user_id.encode(),
        user_display_name=user_name,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(exclude),
        supported_pub_key_algs=ALGORITHMS,
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def authentication_options(
    rp: RelyingParty, *, challenge: bytes, allow: list[str] | None
) -> dict[str, Any]:
    """``PublicKeyCredentialRequestOptions`` as JSON; ``allow`` None = any discoverable
    credential (sign-in without an email)."""
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        allow_credentials=_descriptors(allow) if allow is not None else None,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


@dataclass(frozen=True, slots=True)
class NewPasskey:
    credential_id: str
    public_key: str = field(repr=False)
    sign_count: int
    aaguid: str
    backed_up: bool
    transports: list[str]


def _load(raw: str) -> dict[str, Any]:
    if not raw or len(raw) > MAX_CREDENTIAL_JSON:
        raise PasskeyError("missing or oversized credential")
    try:
        data = json.loads(raw)
    except ValueError:
        raise PasskeyError("credential is not JSON") from None
    if not isinstance(data, dict):
        raise PasskeyError("credential is not a JSON object")
    return data


def verify_registration(rp: RelyingParty, raw: str, challenge: bytes) -> NewPasskey:
    data = _load(raw)
    try:
        verified = verify_registration_response(
            credential=data,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            require_user_verification=True,
            supported_pub_key_algs=ALGORITHMS,
        )
    except Exception as e:
        # The library parses attacker-supplied CBOR and base64: any failure there is a refusal.
        raise PasskeyError(f"registration refused: {type(e).__name__}") from None
    response = data.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    return NewPasskey(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=bytes_to_base64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        aaguid=str(verified.aaguid),
        backed_up=bool(verified.credential_backed_up),
        transports=[t for t in transports if isinstance(t, str)][:8]
        if isinstance(transports, list)
        else [],
    )


@dataclass(frozen=True, slots=True)
class Assertion:
    """What a browser sent for a sign-in, parsed but not yet verified."""

    credential_id: str
    user_handle: str | None
    data: dict[str, Any] = field(repr=False)


def parse_assertion(raw: str) -> Assertion:
    data = _load(raw)
    cred_id = data.get("id")
    raw_id = data.get("rawId")
    if not isinstance(cred_id, str) or not cred_id or len(cred_id) > 1400 or cred_id != raw_id:
        raise PasskeyError("credential id missing or inconsistent")
    response = data.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    user_handle: str | None = None
    if isinstance(handle, str) and handle:
        try:
            user_handle = base64url_to_bytes(handle).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise PasskeyError("malformed user handle") from None
    return Assertion(cred_id, user_handle, data)


def verify_assertion(
    rp: RelyingParty, assertion: Assertion, challenge: bytes, public_key: str, sign_count: int
) -> int:
    """The new sign count of a verified assertion (py_webauthn refuses a count that did not
    grow, unless the authenticator keeps none: both zero)."""
    try:
        verified = verify_authentication_response(
            credential=assertion.data,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=base64url_to_bytes(public_key),
            credential_current_sign_count=sign_count,
            require_user_verification=True,
        )
    except Exception as e:
        raise PasskeyError(f"assertion refused: {type(e).__name__}") from None
    return int(verified.new_sign_count)
