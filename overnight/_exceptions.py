"""The error tree. Every error says whether retrying can help.

    OvernightError                 code, message, retryable, status_code
    ├── APIError                   an error body from the service (status_code is the HTTP status)
    │   ├── InvalidRequestError    400/422 invalid_request, not retryable
    │   ├── AuthenticationError    401 unauthorized, not retryable
    │   ├── NotFoundError          404 not_found, not retryable
    │   ├── ConflictError          409 idempotency_conflict / invalid_state, not retryable
    │   ├── PayloadTooLargeError   413 payload_too_large, not retryable
    │   ├── RateLimitError         429 rate_limited, retryable (retry_after)
    │   └── ServiceError           5xx, retryable
    ├── TransportError             could not reach the service, retryable
    ├── JobFailedError             the job ended failed/cancelled/expired (carries the Job)
    ├── WaitTimeout                waiting for a job took longer than asked, retryable
    ├── WebhookVerificationError   a webhook signature did not verify, not retryable
    └── ReceiptVerificationError   a receipt did not verify, not retryable

Integrations map ``retryable`` (Temporal ``non_retryable``, Airflow retry, n8n per-item
errors) and never re-guess it from the status code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import Job

__all__ = [
    "APIError",
    "AuthenticationError",
    "ConflictError",
    "InvalidRequestError",
    "JobFailedError",
    "NotFoundError",
    "OvernightError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ReceiptVerificationError",
    "ServiceError",
    "TransportError",
    "WaitTimeout",
    "WebhookVerificationError",
    "error_from_response",
]


class OvernightError(Exception):
    """Root of every error raised by Overnight code."""

    code: str = "overnight_error"
    status_code: int = 500
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retryable: bool | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        if status_code is not None:
            self.status_code = status_code

    def to_body(self) -> dict[str, Any]:
        """The wire form: ``{"error": {"code", "message", "param"}}``."""
        return {"error": {"code": self.code, "message": self.message, "param": self.param}}


class APIError(OvernightError):
    """The service answered with an error body."""

    retry_after: float | None = None


class InvalidRequestError(APIError):
    code = "invalid_request"
    status_code = 400


class AuthenticationError(APIError):
    code = "unauthorized"
    status_code = 401


class NotFoundError(APIError):
    code = "not_found"
    status_code = 404


class ConflictError(APIError):
    code = "conflict"
    status_code = 409


class PayloadTooLargeError(APIError):
    code = "payload_too_large"
    status_code = 413


class RateLimitError(APIError):
    code = "rate_limited"
    status_code = 429
    retryable = True


class ServiceError(APIError):
    code = "service_error"
    status_code = 500
    retryable = True


class TransportError(OvernightError):
    code = "transport_error"
    retryable = True


class JobFailedError(OvernightError):
    """Raised by ``wait_for_job(..., raise_on_failure=True)`` when a job does not succeed."""

    code = "job_failed"

    def __init__(self, job: "Job") -> None:
        error = job.error
        message = f"job {job.id} ended {job.state.value}"
        if error is not None:
            message += f": [{error.code}] {error.message}"
        super().__init__(
            message,
            code=error.code if error else f"job_{job.state.value}",
            retryable=bool(error and error.retryable),
        )
        self.job = job


class WaitTimeout(OvernightError):
    code = "wait_timeout"
    retryable = True


class WebhookVerificationError(OvernightError):
    code = "invalid_signature"
    status_code = 400


class ReceiptVerificationError(OvernightError):
    code = "invalid_receipt"


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def error_from_response(status_code: int, body: Any, retry_after: float | None = None) -> APIError:
    """Build the matching :class:`APIError` from an HTTP status and a decoded error body."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {"code": None, "message": str(body)[:500] or f"HTTP {status_code}"}
    cls = _BY_STATUS.get(status_code, ServiceError if status_code >= 500 else InvalidRequestError)
    error = cls(
        str(detail.get("message") or f"HTTP {status_code}"),
        code=detail.get("code") or None,
        param=detail.get("param"),
        status_code=status_code,
    )
    error.retry_after = retry_after
    return error
