"""Standard Webhooks (https://www.standardwebhooks.com): sign on the server, verify anywhere.

    secret = new_webhook_secret()                                  # "whsec_..."
    body = event_body(build_event("job.succeeded", {"job": job.model_dump(mode="json")}))
    headers = sign_webhook([secret], new_message_id(), int(time.time()), body)
    ...
    event = verify_webhook(request_body, request_headers, secret)  # receiver side
    event.type, event.data["job"]["id"]

Headers: ``webhook-id`` (stable across retries), ``webhook-timestamp`` (unix seconds) and
``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>``,
one per active secret so receivers keep verifying while a secret rotates. The HMAC key is
the base64-decoded part after ``whsec_``. Receivers refuse timestamps more than five
minutes away from their clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
import time
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from ._exceptions import WebhookVerificationError
from ._hashing import canonical_json
from ._models import WebhookEvent

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "build_event",
    "event_body",
    "new_message_id",
    "new_webhook_secret",
    "sign_webhook",
    "verify_webhook",
]

DEFAULT_TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"


def new_webhook_secret(nbytes: int = 32) -> str:
    """A fresh ``whsec_`` secret holding ``nbytes`` (24-64) random bytes."""
    if not 24 <= nbytes <= 64:
        raise ValueError("webhook secrets hold between 24 and 64 random bytes")
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(nbytes)).decode()


def new_message_id() -> str:
    """A fresh ``webhook-id``: make it once per event and reuse it on every retry."""
    return "msg_" + _random.token_hex(16)


def build_event(
    event_type: str, data: dict[str, Any], *, timestamp: datetime | None = None
) -> WebhookEvent:
    """The envelope every webhook carries: ``{"type", "timestamp", "data"}``."""
    when = timestamp or datetime.now(timezone.utc)
    return WebhookEvent.model_validate({"type": event_type, "timestamp": when, "data": data})


def event_body(event: WebhookEvent) -> str:
    """Deterministic JSON for an event; store it once and send these exact bytes each time."""
    return canonical_json(event.model_dump(mode="json"))


def _secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the prefix is optional, as in the reference libraries)."""
    if not isinstance(secret, str):
        raise TypeError("a webhook secret is a 'whsec_...' string")
    encoded = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret must be 'whsec_' followed by base64") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _as_list(secret: str | Sequence[str]) -> list[str]:
    items = [secret] if isinstance(secret, str) else list(secret)
    if not items:
        raise ValueError("give at least one webhook secret")
    return items


def _as_bytes(body: bytes | str) -> bytes:
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError("webhook body must be bytes or str (the raw request body)")


def sign_webhook(
    secrets: Sequence[str], message_id: str, timestamp: int, body: bytes | str
) -> dict[str, str]:
    """The three Standard Webhooks headers, with one ``v1`` signature per secret (newest first)."""
    if not message_id or any(c.isspace() for c in message_id):
        raise ValueError("message_id must be non-empty and hold no whitespace")
    ts = int(timestamp)
    to_sign = f"{message_id}.{ts}.".encode() + _as_bytes(body)
    signatures = [
        "v1," + base64.b64encode(hmac.new(_secret_key(s), to_sign, hashlib.sha256).digest()).decode()
        for s in _as_list(secrets)
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signatures),
    }


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Sequence[str],
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | datetime | None = None,
) -> WebhookEvent:
    """Check a received webhook and return its event, or raise :class:`WebhookVerificationError`.

    ``body`` must be the raw request body, byte for byte. ``headers`` are matched
    case-insensitively. ``secret`` may be several secrets (accepting any) during rotation.
    ``now`` (unix seconds or an aware datetime) defaults to the current time.
    """
    payload = _as_bytes(body)
    keys = [_secret_key(s) for s in _as_list(secret)]
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if not lowered.get(h)]
    if missing:
        raise WebhookVerificationError(
            f"missing header(s) {', '.join(missing)}: this request is not a Standard Webhooks delivery",
            code="missing_signature",
        )
    message_id = lowered["webhook-id"]
    raw_ts = lowered["webhook-timestamp"].strip()
    if not raw_ts.isdigit():
        raise WebhookVerificationError(
            f"webhook-timestamp must be integer unix seconds, got {raw_ts[:32]!r}",
            code="invalid_timestamp",
        )
    ts = int(raw_ts)
    current = now.timestamp() if isinstance(now, datetime) else (time.time() if now is None else now)
    skew = current - ts
    if skew > tolerance_seconds:
        raise WebhookVerificationError(
            f"webhook timestamp is {skew:.0f}s old (tolerance {tolerance_seconds:.0f}s): "
            "a replay, or the receiver's clock is wrong",
            code="timestamp_out_of_tolerance",
        )
    if -skew > tolerance_seconds:
        raise WebhookVerificationError(
            f"webhook timestamp is {-skew:.0f}s in the future (tolerance {tolerance_seconds:.0f}s): "
            "check the clocks of sender and receiver",
            code="timestamp_out_of_tolerance",
        )

    offered = [s for s in lowered["webhook-signature"].split(" ") if s.startswith("v1,")]
    if not offered:
        raise WebhookVerificationError(
            "webhook-signature holds no 'v1,' signature", code="invalid_signature"
        )
    signed_at = datetime.fromtimestamp(ts, tz=timezone.utc)
    # The reference library computes the expected signature, so our signer is checked
    # against an independent implementation.
    expected = [Webhook(key).sign(message_id, signed_at, payload).encode() for key in keys]
    if not any(hmac.compare_digest(e, o.encode()) for e in expected for o in offered):
        raise WebhookVerificationError(
            "no webhook signature matches: the body was changed, or the secret is not the "
            "one this endpoint was given (after a rotation, pass both secrets)",
            code="invalid_signature",
        )
    try:
        return WebhookEvent.model_validate_json(payload)
    except ValidationError as exc:
        raise WebhookVerificationError(
            f"signature is valid but the body is not an Overnight webhook event: "
            f"{exc.errors()[0].get('msg', 'invalid')}",
            code="invalid_webhook_payload",
        ) from None
