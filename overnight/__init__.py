"""Overnight: asynchronous batch LLM inference for workflow engines.

    from overnight import Client, LLMCall
    client = Client(api_key="ovn_...")               # base_url from OVERNIGHT_BASE_URL or arg
    job = LLMCall(model="smollm2-135m")
    job.add_user_message("Summarize the attached contract...")
    job_id = client.send_job(job, callback_url="https://your-api.example.com/done")
    result = client.wait_for_job(job_id)
"""

from ._client import AsyncClient, BaseClient, Client
from ._exceptions import (
    APIError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    JobFailedError,
    NotFoundError,
    OvernightError,
    PayloadTooLargeError,
    RateLimitError,
    ReceiptVerificationError,
    ServiceError,
    TransportError,
    WaitTimeout,
    WebhookVerificationError,
)
from ._hashing import derive_idempotency_key
from ._models import (
    Attempt,
    BulkItemResult,
    BulkJobsResponse,
    ChatMessage,
    ErrorBody,
    ErrorDetail,
    Job,
    JobError,
    JobPage,
    JobState,
    JobTimings,
    LLMCall,
    Priority,
    Receipt,
    TERMINAL_STATES,
    Usage,
    WebhookEvent,
)
from ._receipts import verify_receipt
from ._webhooks import verify_webhook

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "Attempt",
    "AuthenticationError",
    "BulkItemResult",
    "BaseClient",
    "BulkJobsResponse",
    "ChatMessage",
    "Client",
    "ConflictError",
    "ErrorBody",
    "ErrorDetail",
    "InvalidRequestError",
    "Job",
    "JobError",
    "JobFailedError",
    "JobPage",
    "JobState",
    "JobTimings",
    "LLMCall",
    "NotFoundError",
    "OvernightError",
    "PayloadTooLargeError",
    "Priority",
    "RateLimitError",
    "Receipt",
    "ReceiptVerificationError",
    "ServiceError",
    "TERMINAL_STATES",
    "TransportError",
    "Usage",
    "WaitTimeout",
    "WebhookEvent",
    "WebhookVerificationError",
    "__version__",
    "derive_idempotency_key",
    "verify_receipt",
    "verify_webhook",
]
