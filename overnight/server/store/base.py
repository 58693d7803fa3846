"""The ``JobStore`` interface: every durable state change of a job goes through here.

At-least-once execution with leases, the way SQS and Postgres job queues work:

    job_ids = await store.submit(tenant, [NewJob(...)])          # idempotent per key
    claimed = await store.claim("smollm2-135m", limit=8, worker="w1", lease_seconds=30)
    await store.heartbeat(claimed[0].id, claimed[0].attempt, lease_seconds=30)
    await store.complete(claimed[0].id, claimed[0].attempt, outcome)  # fenced by attempt

The fencing token is the attempt number: each claim increments it, and ``complete``,
``fail`` and ``heartbeat`` only touch a job whose running attempt still matches. A stale
worker's write is refused with :class:`LeaseLost`. A terminal transition and its webhook
outbox row commit in one transaction.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..._exceptions import ConflictError, OvernightError
from ..._models import Job, JobError, JobState, LLMCall, OpenAIBatch, OpenAIFile, Usage

__all__ = [
    "ClaimedJob",
    "JobFilter",
    "JobOutcome",
    "JobStore",
    "LeaseLost",
    "NewJob",
    "OutboxMessage",
    "RetryPolicy",
    "Tenant",
]


class LeaseLost(OvernightError):
    """The job is no longer running under this attempt (cancelled, expired or re-claimed)."""

    code = "lease_lost"
    status_code = 409


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    webhook_secrets: tuple[str, ...]
    """Active ``whsec_`` secrets, newest first; webhooks carry one signature per secret."""
    webhook_url: str | None = None
    """Where tenant-level events (OpenAI ``batch.*``) go."""


@dataclass(frozen=True)
class NewJob:
    """A validated request plus what the service derives from it."""

    request: LLMCall
    request_sha256: str
    idempotency_key: str | None = None
    batch_id: str | None = None


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant_id: str
    model: str
    request: LLMCall
    priority_rank: int
    attempt: int
    """The fencing token: pass it back to heartbeat/complete/fail."""
    lease_expires_at: float
    queued_seconds: float
    """From submission to the first claim."""
    engine_seconds_before: float
    """Engine time spent by earlier attempts."""


@dataclass(frozen=True)
class JobOutcome:
    """A finished attempt: the engine's response, usage and the signed receipt."""

    result: dict[str, Any]
    usage: Usage
    engine_seconds: float
    receipt: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff before a retryable failure or an expired lease is claimable again.

    Attempt ``n`` waits ``min(max_seconds, base_seconds * 2 ** (n - 1))``.
    """

    base_seconds: float = 1.0
    max_seconds: float = 300.0

    def delay(self, attempt: int) -> float:
        return min(self.max_seconds, self.base_seconds * 2 ** max(0, attempt - 1))


@dataclass(frozen=True)
class JobFilter:
    state: JobState | None = None
    model: str | None = None
    batch_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxMessage:
    """One webhook to deliver. ``id`` is the stable ``webhook-id`` across retries."""

    id: str
    tenant_id: str
    url: str
    event_type: str
    payload: str
    attempts: int
    created_at: float


class JobStore(abc.ABC):
    """Durable queue. Implementations: ``SQLiteJobStore`` (embedded default)."""

    # -- lifecycle -------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # -- tenants and keys ------------------------------------------------------------
    @abc.abstractmethod
    async def create_tenant(self, name: str) -> Tenant:
        """Make a tenant with a fresh ``whsec_`` webhook secret (returns the existing one by name)."""

    @abc.abstractmethod
    async def create_api_key(self, tenant_id: str) -> str:
        """Return a new plaintext key; only its SHA-256 is stored."""

    @abc.abstractmethod
    async def tenant_for_key(self, api_key: str) -> Tenant | None: ...

    @abc.abstractmethod
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    @abc.abstractmethod
    async def rotate_webhook_secret(self, tenant_id: str, keep_previous: bool = True) -> Tenant:
        """Add a new secret; the previous one keeps signing until dropped (``keep_previous=False``)."""

    # -- submission ------------------------------------------------------------------
    @abc.abstractmethod
    async def submit(
        self, tenant_id: str, jobs: Sequence[NewJob]
    ) -> list[tuple[Job, bool] | ConflictError]:
        """Insert jobs atomically; per item return ``(job, created)`` or a ConflictError.

        The same idempotency key with the same ``request_sha256`` returns the original
        job with ``created=False``; a different body is a ConflictError.
        """

    @abc.abstractmethod
    async def create_batch(
        self, tenant_id: str, callback_url: str | None, metadata: dict[str, str], batch_id: str | None = None
    ) -> str:
        """Open a batch (``batch.completed`` fires when its jobs end). Re-creating an id is a no-op."""

    # -- reading -----------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, tenant_id: str | None, job_id: str) -> Job:
        """Raise NotFoundError when missing or owned by another tenant (None = any tenant)."""

    @abc.abstractmethod
    async def list(
        self, tenant_id: str, filter: JobFilter, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        """Newest first; returns the page and the cursor of the next page (or None)."""

    @abc.abstractmethod
    async def count_active(self, tenant_id: str) -> int:
        """The tenant's queued and running jobs (for admission control)."""

    @abc.abstractmethod
    async def count_by_state(self) -> dict[tuple[str, str], int]:
        """``{(model, state): n}`` for the metrics gauge."""

    # -- the worker side -------------------------------------------------------------
    @abc.abstractmethod
    async def claim(
        self, model: str, limit: int, worker: str, lease_seconds: float
    ) -> list[ClaimedJob]:
        """Lease up to ``limit`` queued jobs of ``model``, highest priority then oldest first."""

    @abc.abstractmethod
    async def heartbeat(self, job_id: str, attempt: int, lease_seconds: float) -> None:
        """Extend the lease or raise LeaseLost."""

    @abc.abstractmethod
    async def complete(self, job_id: str, attempt: int, outcome: JobOutcome) -> Job:
        """Mark succeeded, store the result and queue its webhook; raise LeaseLost if stale."""

    @abc.abstractmethod
    async def complete_many(self, items: Sequence[tuple[str, int, JobOutcome]]) -> list[Job | LeaseLost]:
        """``complete`` for many jobs in one transaction (group commit); stale items come back as LeaseLost."""

    @abc.abstractmethod
    async def fail(self, job_id: str, attempt: int, error: JobError) -> Job:
        """End the attempt. Retryable errors requeue with backoff until ``max_attempts``."""

    @abc.abstractmethod
    async def cancel(self, tenant_id: str | None, job_id: str) -> Job:
        """Cancel a queued or running job; a finished job is a ConflictError."""

    @abc.abstractmethod
    async def requeue_expired_leases(self) -> list[str]:
        """Requeue (or fail, past max_attempts) running jobs whose lease ran out."""

    @abc.abstractmethod
    async def expire_overdue(self) -> list[str]:
        """Move jobs past their completion window to ``expired``."""

    # -- OpenAI files and batches --------------------------------------------------------
    @abc.abstractmethod
    async def create_file(self, tenant_id: str, purpose: str, filename: str, size: int, path: str) -> OpenAIFile: ...

    @abc.abstractmethod
    async def get_file(self, tenant_id: str, file_id: str) -> tuple[OpenAIFile, str]:
        """The file and the path of its content (NotFoundError for other tenants)."""

    @abc.abstractmethod
    async def list_files(self, tenant_id: str, purpose: str | None = None) -> list[OpenAIFile]: ...

    @abc.abstractmethod
    async def delete_file(self, tenant_id: str, file_id: str) -> str:
        """Mark deleted; return the content path for the caller to remove."""

    @abc.abstractmethod
    async def create_openai_batch(
        self, tenant_id: str, endpoint: str, input_file_id: str, completion_window: str, metadata: dict[str, str]
    ) -> OpenAIBatch: ...

    @abc.abstractmethod
    async def get_openai_batch(self, tenant_id: str | None, batch_id: str) -> OpenAIBatch: ...

    @abc.abstractmethod
    async def list_openai_batches(self, tenant_id: str, limit: int, after: str | None) -> list[OpenAIBatch]: ...

    @abc.abstractmethod
    async def open_openai_batches(self) -> list[tuple[str, OpenAIBatch]]:
        """``(tenant_id, batch)`` for batches validating, in progress, finalizing or cancelling."""

    @abc.abstractmethod
    async def set_openai_batch_status(self, batch_id: str, to: str, expected: Sequence[str], **fields: Any) -> bool:
        """Compare-and-set the status; fields: ``errors``, ``output_file_id``, ``error_file_id``."""

    @abc.abstractmethod
    async def batch_jobs(self, batch_id: str) -> list[Job]:
        """Every job of a batch, in submission order."""

    @abc.abstractmethod
    async def cancel_batch_jobs(self, batch_id: str) -> int:
        """Cancel the batch's queued and running jobs; return how many."""

    @abc.abstractmethod
    async def set_webhook_url(self, tenant_id: str, url: str | None) -> Tenant: ...

    @abc.abstractmethod
    async def enqueue_tenant_webhook(self, tenant_id: str, event_type: str, data: dict[str, Any]) -> bool:
        """Queue an event for the tenant's endpoint; False when it has none."""

    # -- webhook outbox ----------------------------------------------------------------
    @abc.abstractmethod
    async def claim_due_webhooks(self, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        """Lease up to ``limit`` messages whose next attempt is due."""

    @abc.abstractmethod
    async def mark_webhook_delivered(self, message_id: str, status_code: int) -> None: ...

    @abc.abstractmethod
    async def reschedule_webhook(
        self, message_id: str, next_attempt_at: float | None, status_code: int | None, error: str
    ) -> None:
        """Record a failed attempt; ``next_attempt_at=None`` gives up for good."""

