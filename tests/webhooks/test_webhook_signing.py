"""Standard Webhooks signatures, checked against the reference ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as ReferenceError

from overnight._exceptions import WebhookVerificationError
from overnight._models import WebhookEvent
from overnight._webhooks import (
    build_event,
    event_body,
    new_message_id,
    new_webhook_secret,
    sign_webhook,
    verify_webhook,
)


def test_secret_and_message_id_shapes() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 32
    assert new_webhook_secret() != secret
    first, second = new_message_id(), new_message_id()
    assert first.startswith("msg_") and first != second


def test_signature_verifies_with_reference_library(secret: str, payload: str) -> None:
    headers = sign_webhook([secret], "msg_abc", int(time.time()), payload)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(payload.encode(), headers) == json.loads(payload)


def test_rotation_gives_one_signature_per_secret(payload: str) -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = sign_webhook([new, old], "msg_rot", int(time.time()), payload)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    for secret in (old, new):  # a receiver holding either secret accepts the message
        Webhook(secret).verify(payload, headers)
    only_new = {**headers, "webhook-signature": signatures[0]}
    Webhook(new).verify(payload, only_new)
    with pytest.raises(ReferenceError):
        Webhook(old).verify(payload, only_new)


def test_reference_signature_verifies_with_ours(secret: str, payload: str) -> None:
    now = int(time.time())
    signature = Webhook(secret).sign("msg_ref", datetime.fromtimestamp(now, tz=timezone.utc), payload)
    headers = {"Webhook-Id": "msg_ref", "Webhook-Timestamp": str(now), "WEBHOOK-SIGNATURE": signature}
    event = verify_webhook(payload.encode(), headers, secret)
    assert isinstance(event, WebhookEvent)
    assert event.type == "job.succeeded" and event.data["job"]["id"] == "job_1"


def test_receiver_accepts_any_of_several_secrets(payload: str) -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = sign_webhook([old], "msg_1", int(time.time()), payload)
    assert verify_webhook(payload, headers, [new, old]).type == "job.succeeded"
    with pytest.raises(WebhookVerificationError, match="no webhook signature matches"):
        verify_webhook(payload, headers, new)


def test_tampered_body_is_refused(secret: str, payload: str) -> None:
    headers = sign_webhook([secret], "msg_1", int(time.time()), payload)
    tampered = payload.replace("job_1", "job_2")
    with pytest.raises(WebhookVerificationError, match="body was changed") as info:
        verify_webhook(tampered, headers, secret)
    assert info.value.code == "invalid_signature" and not info.value.retryable


def test_changed_id_or_timestamp_is_refused(secret: str, payload: str) -> None:
    ts = int(time.time())
    headers = sign_webhook([secret], "msg_1", ts, payload)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(payload, {**headers, "webhook-id": "msg_2"}, secret)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(payload, {**headers, "webhook-timestamp": str(ts - 1)}, secret)


@pytest.mark.parametrize("offset, word", [(-301, "old"), (301, "future")])
def test_timestamp_outside_tolerance_is_refused(secret: str, payload: str, offset: int, word: str) -> None:
    now = 1_750_000_000
    headers = sign_webhook([secret], "msg_1", now + offset, payload)
    with pytest.raises(WebhookVerificationError, match=word) as info:
        verify_webhook(payload, headers, secret, now=now)
    assert info.value.code == "timestamp_out_of_tolerance"
    # inside the tolerance it verifies; a wider tolerance accepts it too
    verify_webhook(payload, sign_webhook([secret], "msg_1", now + 299, payload), secret, now=now)
    verify_webhook(payload, headers, secret, now=now, tolerance_seconds=600)


def test_stale_message_refused_with_real_clock(secret: str, payload: str) -> None:
    headers = sign_webhook([secret], "msg_1", int(time.time()) - 3600, payload)
    with pytest.raises(WebhookVerificationError, match="old"):
        verify_webhook(payload, headers, secret)


def test_missing_and_malformed_headers(secret: str, payload: str) -> None:
    with pytest.raises(WebhookVerificationError, match="webhook-signature") as info:
        verify_webhook(payload, {"webhook-id": "m", "webhook-timestamp": "1"}, secret)
    assert info.value.code == "missing_signature"
    headers = sign_webhook([secret], "msg_1", int(time.time()), payload)
    with pytest.raises(WebhookVerificationError, match="integer"):
        verify_webhook(payload, {**headers, "webhook-timestamp": "soon"}, secret)
    with pytest.raises(WebhookVerificationError, match="v1"):
        verify_webhook(payload, {**headers, "webhook-signature": "v2,abc"}, secret)


def test_valid_signature_over_a_non_event_body(secret: str) -> None:
    body = b'{"hello": "world"}'
    headers = sign_webhook([secret], "msg_1", int(time.time()), body)
    with pytest.raises(WebhookVerificationError) as info:
        verify_webhook(body, headers, secret)
    assert info.value.code == "invalid_webhook_payload"


def test_event_body_is_deterministic() -> None:
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    first = event_body(build_event("job.failed", {"b": 1, "a": {"z": 2, "y": 3}}, timestamp=when))
    second = event_body(build_event("job.failed", {"a": {"y": 3, "z": 2}, "b": 1}, timestamp=when))
    assert first == second
    assert first == '{"data":{"a":{"y":3,"z":2},"b":1},"timestamp":"2025-01-02T03:04:05Z","type":"job.failed"}'
    with pytest.raises(ValueError):
        build_event("job.exploded", {})


def test_bad_secret_is_a_configuration_error(payload: str) -> None:
    with pytest.raises(ValueError):
        sign_webhook(["whsec_not base64!"], "msg_1", 1, payload)
    with pytest.raises(ValueError):
        sign_webhook([], "msg_1", 1, payload)
