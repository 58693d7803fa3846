"""Signed receipts: an Ed25519 signature proving what ran and what it cost.

    signer = ReceiptSigner.load_or_create(Path("~/.overnight/receipt_key.pem").expanduser())
    receipt = signer.sign(job_id, model, call.engine_body(), response, usage, timings)
    ...
    verify_receipt(job, signer.public_key_b64())   # anyone, with only the public key

The signature covers ``canonical_json(receipt.signed_fields())``: job id, model, SHA-256
of the engine request body and of the response, usage, timings, ``signed_at`` and
``key_id``. :func:`verify_receipt` recomputes both hashes from the job itself, so a result,
request or usage edited after signing is refused with :class:`ReceiptVerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._exceptions import ReceiptVerificationError
from ._hashing import canonical_json, sha256_hex
from ._models import Job, JobTimings, Receipt, Usage

__all__ = ["ReceiptSigner", "key_id_for", "load_public_key", "verify_receipt"]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of the SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


class ReceiptSigner:
    """Holds the service's Ed25519 private key and signs receipts with it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_for(self.public_key)

    @classmethod
    def generate(cls) -> "ReceiptSigner":
        """A signer with a fresh in-memory key (tests, throwaway servers)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path | str) -> "ReceiptSigner":
        """Load the PEM key at ``path``, or create it (mode 0600, written atomically).

        Two processes racing to create the key end up with the same one: the file
        appears only fully written, and the loser loads the winner's key.
        """
        path = Path(path)
        if path.exists():
            return cls._load(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_key = Ed25519PrivateKey.generate()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # whatever the umask
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # never overwrites a key another process just made
            except FileExistsError:
                return cls._load(path)
        finally:
            tmp.unlink(missing_ok=True)
        return cls(private_key)

    @classmethod
    def _load(cls, path: Path) -> "ReceiptSigner":
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return cls(key)

    def public_key_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def public_key_b64(self) -> str:
        """The raw 32-byte public key, base64: what ``GET /v1/receipts/public-key`` publishes."""
        return base64.b64encode(_raw(self.public_key)).decode()

    def sign(
        self,
        job_id: str,
        model: str,
        request_body: dict[str, Any],
        response: dict[str, Any],
        usage: Usage,
        timings: JobTimings,
        *,
        signed_at: datetime | None = None,
    ) -> Receipt:
        """Sign a finished job. ``request_body`` is ``job.request.engine_body()``."""
        unsigned = Receipt(
            job_id=job_id,
            model=model,
            request_sha256=sha256_hex(request_body),
            response_sha256=sha256_hex(response),
            usage=usage,
            timings=timings,
            signed_at=signed_at or datetime.now(timezone.utc),
            key_id=self.key_id,
            signature="",
        )
        message = canonical_json(unsigned.signed_fields()).encode()
        signature = base64.b64encode(self._private_key.sign(message)).decode()
        return unsigned.model_copy(update={"signature": signature})


def load_public_key(public_key: str | bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    """Accept a key object, a PEM string/bytes, raw 32 bytes, or their base64."""
    if isinstance(public_key, Ed25519PublicKey):
        return public_key
    data = public_key.encode() if isinstance(public_key, str) else bytes(public_key)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"a {type(key).__name__}")
            return key
        if len(data) != 32 or isinstance(public_key, str):
            data = base64.b64decode(data.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(data)
    except (ValueError, binascii.Error) as exc:
        raise ReceiptVerificationError(
            f"public key is not an Ed25519 key as PEM or base64 of 32 raw bytes ({exc})",
            code="invalid_public_key",
        ) from None


def verify_receipt(job: Job, public_key: str | bytes | Ed25519PublicKey) -> Receipt:
    """Check ``job.receipt`` against the job and the service's public key; return the receipt.

    Raises :class:`ReceiptVerificationError` naming the first thing that does not match.
    """
    receipt = job.receipt
    if receipt is None:
        raise ReceiptVerificationError(
            f"job {job.id} has no receipt (only succeeded jobs carry one)", code="missing_receipt"
        )
    key = load_public_key(public_key)

    def fail(what: str) -> ReceiptVerificationError:
        return ReceiptVerificationError(f"receipt for job {job.id} does not verify: {what}")

    if receipt.job_id != job.id:
        raise fail(f"it was issued for job {receipt.job_id!r}")
    if receipt.model != job.model:
        raise fail(f"it names model {receipt.model!r}, the job says {job.model!r}")
    if job.usage is None or job.usage != receipt.usage:
        raise fail(
            f"usage differs (job {job.usage.model_dump() if job.usage else None}, "
            f"receipt {receipt.usage.model_dump()})"
        )
    if sha256_hex(job.request.engine_body()) != receipt.request_sha256:
        raise fail("request_sha256 differs: the job's request is not the one that ran")
    if job.result is None:
        raise fail("the job has no result to check response_sha256 against")
    if sha256_hex(job.result) != receipt.response_sha256:
        raise fail("response_sha256 differs: the result was changed after signing")
    given_key_id = key_id_for(key)
    if given_key_id != receipt.key_id:
        raise fail(
            f"it was signed by key {receipt.key_id}, but the public key given is {given_key_id} "
            "(wrong key, or the service rotated its key)"
        )
    try:
        signature = base64.b64decode(receipt.signature, validate=True)
        key.verify(signature, canonical_json(receipt.signed_fields()).encode())
    except (InvalidSignature, binascii.Error, ValueError):
        raise fail("the Ed25519 signature is invalid: receipt fields were altered") from None
    return receipt
