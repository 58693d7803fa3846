"""Overnight errors as Temporal ``ApplicationError``s: Overnight decides, Temporal retries.

    try:
        job = await client.submit_job(call)
    except OvernightError as exc:
        raise to_application_error(exc) from exc

Every error's ``retryable`` flag becomes ``non_retryable`` unchanged, and never gets re-guessed
from a status code. 4xx validation errors are therefore final, while 429, 5xx and connection
errors are retried by the activity's retry policy, after ``Retry-After`` when the service
sent one (``next_retry_delay``). The ``type`` is ``overnight.<code>`` (for example
``overnight.model_not_found``, ``overnight.rate_limited`` or ``overnight.service_error``), so a
retry policy or a workflow can name it. A job that ended without success is final
(``overnight.job_failed``, ``overnight.job_cancelled`` or ``overnight.job_expired``). Retrying would
re-submit under the same idempotency key and attach to the same finished job.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from overnight import Job, JobState, OvernightError

__all__ = [
    "ERROR_TYPE_PREFIX",
    "STEP_TIMEOUT",
    "error_type",
    "job_outcome_error",
    "raise_unless_succeeded",
    "to_application_error",
]

ERROR_TYPE_PREFIX = "overnight."
STEP_TIMEOUT = "overnight.step_timeout"


def error_type(code: str) -> str:
    """The ``ApplicationError.type`` for an Overnight error code."""
    return ERROR_TYPE_PREFIX + code


def to_application_error(exc: OvernightError | ValidationError) -> ApplicationError:
    """Map an Overnight error (or an invalid request model) to an ``ApplicationError``."""
    if isinstance(exc, ValidationError):
        return ApplicationError(
            f"invalid LLM call: {exc.errors()[0].get('msg', exc)}",
            {"code": "invalid_request"},
            type=error_type("invalid_request"),
            non_retryable=True,
        )
    retry_after: float | None = getattr(exc, "retry_after", None)
    details: dict[str, Any] = {"code": exc.code, "status_code": exc.status_code, "param": exc.param}
    return ApplicationError(
        exc.message,
        details,
        type=error_type(exc.code),
        non_retryable=not exc.retryable,
        next_retry_delay=timedelta(seconds=retry_after) if exc.retryable and retry_after is not None else None,
    )


def job_outcome_error(job: Job) -> ApplicationError:
    """The final error for a job that ended ``failed``, ``cancelled`` or ``expired``."""
    message = f"Overnight job {job.id} ended {job.state.value}"
    if job.error is not None:
        message += f": [{job.error.code}] {job.error.message}"
    details = {"job_id": job.id, "state": job.state.value, "error": job.error.model_dump() if job.error else None}
    return ApplicationError(message, details, type=error_type(f"job_{job.state.value}"), non_retryable=True)


def raise_unless_succeeded(job: Job) -> Job:
    """Return ``job`` when it succeeded; raise :func:`job_outcome_error` when it ended otherwise."""
    if job.state is not JobState.SUCCEEDED:
        raise job_outcome_error(job)
    return job
