"""What the provider raises. Whether Airflow retries follows Overnight's ``retryable`` flag.

    AirflowException                      Airflow may retry the task
    ├── OvernightJobException             the job ended without a result, and another try may help
    │   └── OvernightJobTimeout           the operator's own deadline passed; the job was cancelled
    └── OvernightBatchException           items of a batch ended without a result (``.failures``)
    AirflowFailException                  the task fails at once, no retry
    ├── OvernightJobFatalException        refused (unknown model, invalid request, key, conflict) or a
    │                                     non-retryable job error: retrying would fail the same way
    ├── OvernightBatchFatalException      items failed and none of them can succeed on a retry
    └── OvernightConnectionError          the Airflow connection lacks its base URL or API key

    raise exception_for_error(exc, "submitting the job")   # an overnight.OvernightError
    raise exception_for_job(job)                            # a job that ended without succeeding

A retried task never pays twice: it re-attaches to its job, and starts a fresh one only when
that job was cancelled, expired, or failed with a retryable error.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from overnight import Job, JobState, OvernightError

__all__ = [
    "OvernightBatchException",
    "OvernightBatchFatalException",
    "OvernightConnectionError",
    "OvernightJobException",
    "OvernightJobFatalException",
    "OvernightJobTimeout",
    "exception_for_error",
    "exception_for_job",
    "retry_may_help",
]


class OvernightJobException(AirflowException):
    """The job did not succeed, and a retry may help (it starts a fresh job)."""


class OvernightJobTimeout(OvernightJobException):
    """The operator's deadline passed before the job ended; the job was cancelled."""


class OvernightJobFatalException(AirflowFailException):
    """Retrying cannot help: the task fails without using its retries."""


class OvernightConnectionError(AirflowFailException):
    """The Airflow connection is missing its base URL or API key, or its extra is not JSON."""


class _BatchFailures:
    def __init__(self, message: str, failures: list[dict[str, Any]]) -> None:
        super().__init__(message)  # type: ignore[call-arg]
        self.failures = failures


class OvernightBatchException(_BatchFailures, AirflowException):
    """Some items of a batch did not succeed; ``failures`` lists ``{index, state, error}``."""


class OvernightBatchFatalException(_BatchFailures, AirflowFailException):
    """Items failed with errors that no retry can fix (see ``failures``)."""


def exception_for_error(exc: OvernightError, doing: str) -> AirflowException:
    """Map an ``OvernightError`` by its ``retryable`` flag, never by guessing from the status."""
    code = getattr(exc, "code", "error")
    message = f"Overnight error while {doing}: [{code}] {exc}"
    if exc.retryable:
        return OvernightJobException(message)
    return OvernightJobFatalException(message)


def describe_job(job: Job) -> str:
    text = f"job {job.id} ended {job.state.value}"
    if job.error is not None:
        text += f": [{job.error.code}] {job.error.message}"
    return text


def retry_may_help(job: Job) -> bool:
    """Expired jobs and retryable failures may succeed on another try. Cancelled jobs may not:
    somebody stopped them on purpose (clearing the task still starts a fresh job)."""
    return job.state is JobState.EXPIRED or (
        job.state is JobState.FAILED and job.error is not None and job.error.retryable
    )


def exception_for_job(job: Job) -> AirflowException:
    """The exception for a job that ended without succeeding (see :func:`retry_may_help`)."""
    message = f"Overnight {describe_job(job)}"
    return OvernightJobException(message) if retry_may_help(job) else OvernightJobFatalException(message)
