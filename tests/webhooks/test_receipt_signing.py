"""Ed25519 receipts: sign, verify from the wire form, and refuse every kind of tampering."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from overnight._exceptions import ReceiptVerificationError
from overnight._models import ChatMessage, Job, JobTimings, LLMCall, Usage
from overnight._receipts import ReceiptSigner, verify_receipt


def _finished_job(signer: ReceiptSigner) -> Job:
    call = LLMCall(
        model="smollm2-135m",
        max_tokens=16,
        temperature=0.2,
        metadata={"dag": "nightly"},
        callback_url="https://example.com/hook",
        messages=[ChatMessage(role="user", content="What is the capital of France?")],
    )
    result = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "smollm2-135m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    usage = Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12)
    timings = JobTimings(queued_seconds=0.1 + 0.2, engine_seconds=1.234567)
    receipt = signer.sign("job_1", "smollm2-135m", call.engine_body(), result, usage, timings)
    created = datetime(2025, 1, 1, tzinfo=timezone.utc)
    job = Job(
        id="job_1", state="succeeded", model="smollm2-135m", priority="standard", request=call,
        metadata=call.metadata, max_attempts=3, created_at=created,
        expires_at=created + timedelta(hours=24), result=result, usage=usage,
        timings=timings, receipt=receipt,
    )
    return Job.model_validate_json(job.model_dump_json())  # as a client receives it


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner.generate()


def test_round_trip_with_pem_b64_and_key_object(signer: ReceiptSigner) -> None:
    job = _finished_job(signer)
    for key in (signer.public_key_pem(), signer.public_key_b64(), signer.public_key):
        receipt = verify_receipt(job, key)
        assert receipt.job_id == "job_1" and receipt.key_id == signer.key_id
    assert len(signer.key_id) == 16


def test_metadata_is_not_part_of_the_request_hash(signer: ReceiptSigner) -> None:
    job = _finished_job(signer)
    request = job.request.model_copy(update={"metadata": {"dag": "other"}, "priority": "batch"})
    verify_receipt(job.model_copy(update={"request": request}), signer.public_key_b64())


def test_tampered_result_is_refused(signer: ReceiptSigner) -> None:
    job = _finished_job(signer)
    result = {**job.result, "choices": [{"index": 0, "message": {"role": "assistant", "content": "Lyon."}}]}
    with pytest.raises(ReceiptVerificationError, match="response_sha256") as info:
        verify_receipt(job.model_copy(update={"result": result}), signer.public_key_b64())
    assert info.value.code == "invalid_receipt" and not info.value.retryable


def test_tampered_usage_is_refused(signer: ReceiptSigner) -> None:
    job = _finished_job(signer)
    cheaper = Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    with pytest.raises(ReceiptVerificationError, match="usage"):
        verify_receipt(job.model_copy(update={"usage": cheaper}), signer.public_key_b64())
    # changing usage inside the receipt too breaks the signature
    receipt = job.receipt.model_copy(update={"usage": cheaper})
    with pytest.raises(ReceiptVerificationError, match="signature"):
        verify_receipt(job.model_copy(update={"usage": cheaper, "receipt": receipt}), signer.public_key_b64())


def test_tampered_request_and_timings_are_refused(signer: ReceiptSigner) -> None:
    job = _finished_job(signer)
    request = job.request.model_copy(update={"max_tokens": 4096})
    with pytest.raises(ReceiptVerificationError, match="request_sha256"):
        verify_receipt(job.model_copy(update={"request": request}), signer.public_key_b64())
    receipt = job.receipt.model_copy(update={"timings": JobTimings(queued_seconds=0, engine_seconds=0.1)})
    with pytest.raises(ReceiptVerificationError, match="signature"):
        verify_receipt(job.model_copy(update={"receipt": receipt}), signer.public_key_b64())
    with pytest.raises(ReceiptVerificationError, match="issued for job"):
        verify_receipt(job.model_copy(update={"id": "job_2"}), signer.public_key_b64())


def test_wrong_key_is_refused(signer: ReceiptSigner) -> None:
    job = _finished_job(signer)
    other = ReceiptSigner.generate()
    with pytest.raises(ReceiptVerificationError, match="wrong key"):
        verify_receipt(job, other.public_key_pem())
    # a forged key_id does not help: the signature itself is checked
    forged = job.receipt.model_copy(update={"key_id": other.key_id})
    with pytest.raises(ReceiptVerificationError, match="signature"):
        verify_receipt(job.model_copy(update={"receipt": forged}), other.public_key_b64())


def test_missing_receipt_and_bad_key_text(signer: ReceiptSigner) -> None:
    job = _finished_job(signer)
    with pytest.raises(ReceiptVerificationError, match="no receipt"):
        verify_receipt(job.model_copy(update={"receipt": None}), signer.public_key_b64())
    with pytest.raises(ReceiptVerificationError, match="Ed25519"):
        verify_receipt(job, "not a key")


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "receipt.pem"
    first = ReceiptSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    again = ReceiptSigner.load_or_create(path)
    assert again.key_id == first.key_id and again.public_key_b64() == first.public_key_b64()
    assert [p.name for p in path.parent.iterdir()] == ["receipt.pem"]  # no temp files left
    job = _finished_job(first)
    verify_receipt(job, again.public_key_pem())
