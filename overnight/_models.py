"""Wire models: every JSON body that crosses a process boundary.

One module, pydantic v2. The server, the clients and every integration import from
here, so a field is named in exactly one place.

    >>> call = LLMCall(model="smollm2-135m")
    >>> call.add_user_message("Summarize the attached contract...")
    >>> call.messages[0].role
    'user'

Shapes follow OpenAI where one exists (`messages`, `max_tokens`, `choices`, `usage`).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Attempt",
    "BulkItemResult",
    "BulkJobsRequest",
    "BatchError",
    "BatchErrors",
    "BatchRequestCounts",
    "BulkJobsResponse",
    "ChatMessage",
    "ErrorBody",
    "ErrorDetail",
    "Job",
    "JobError",
    "JobPage",
    "JobState",
    "JobTimings",
    "LLMCall",
    "OpenAIBatch",
    "OpenAIFile",
    "Priority",
    "Receipt",
    "TERMINAL_STATES",
    "Usage",
    "WebhookEvent",
    "WebhookEventType",
    "batch_output_line",
    "parse_completion_window",
]

MAX_METADATA_KEYS = 16
MAX_METADATA_VALUE_CHARS = 512


class JobState(str, Enum):
    """Lifecycle: ``queued -> running -> succeeded | failed | cancelled | expired``.

    A running job whose attempt fails with a retryable error goes back to ``queued``.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)


class Priority(str, Enum):
    """Claim order: ``interactive`` jobs jump ahead of ``standard``, which jump ahead of ``batch``."""

    INTERACTIVE = "interactive"
    STANDARD = "standard"
    BATCH = "batch"

    @property
    def rank(self) -> int:
        """Higher ranks are claimed first."""
        return {"interactive": 2, "standard": 1, "batch": 0}[self.value]


_WINDOW_RE = re.compile(r"^(\d+)([smhd])$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_completion_window(window: str) -> float:
    """Turn ``"24h"``, ``"30m"``, ``"90s"`` or ``"2d"`` into seconds.

    >>> parse_completion_window("24h")
    86400.0
    """
    match = _WINDOW_RE.match(window.strip())
    if not match or int(match.group(1)) <= 0:
        raise ValueError(
            f"completion_window must look like '24h', '30m', '90s' or '2d', got {window!r}"
        )
    return float(int(match.group(1)) * _WINDOW_UNITS[match.group(2)])


class ChatMessage(BaseModel):
    """One OpenAI chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str = Field(max_length=1_000_000)
    name: str | None = None


class LLMCall(BaseModel):
    """A job request: an OpenAI-shaped chat body (or embedding ``input``) plus queue options.

        call = LLMCall(model="smollm2-135m", max_tokens=128, priority="batch")
        call.add_system_message("You summarise legal text.")
        call.add_user_message("Summarize the attached contract...")
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(default_factory=list)
    prompt: str | None = Field(
        default=None, max_length=1_000_000, description="Raw text completion (no chat template)."
    )
    input: str | list[str] | None = Field(
        default=None, description="Embedding input; mutually exclusive with messages and prompt."
    )
    max_tokens: int | None = Field(default=None, ge=1, le=131072)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    callback_url: str | None = Field(default=None, max_length=2048)
    priority: Priority = Priority.STANDARD
    completion_window: str = "24h"
    max_attempts: int = Field(default=3, ge=1, le=20)

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"metadata holds at most {MAX_METADATA_KEYS} keys")
        for key, item in value.items():
            if len(key) > 64 or len(item) > MAX_METADATA_VALUE_CHARS:
                raise ValueError(
                    f"metadata keys are at most 64 characters and values at most "
                    f"{MAX_METADATA_VALUE_CHARS}; {key!r} is too long"
                )
        return value

    @field_validator("completion_window")
    @classmethod
    def _valid_window(cls, value: str) -> str:
        parse_completion_window(value)
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("callback_url must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_kind_of_body(self) -> "LLMCall":
        if sum((bool(self.messages), self.prompt is not None, self.input is not None)) > 1:
            raise ValueError("give one of 'messages' (chat), 'prompt' (completion) or 'input' (embeddings)")
        return self

    @property
    def is_empty(self) -> bool:
        """True until a message, a prompt or an embedding input is added; the API refuses empty calls."""
        return self.input is None and self.prompt is None and not self.messages

    @property
    def kind(self) -> Literal["chat", "completion", "embedding"]:
        if self.input is not None:
            return "embedding"
        return "completion" if self.prompt is not None else "chat"

    def add_message(self, role: str, content: str) -> "LLMCall":
        self.messages.append(ChatMessage(role=role, content=content))  # type: ignore[arg-type]
        return self

    def add_system_message(self, content: str) -> "LLMCall":
        return self.add_message("system", content)

    def add_user_message(self, content: str) -> "LLMCall":
        return self.add_message("user", content)

    def add_assistant_message(self, content: str) -> "LLMCall":
        return self.add_message("assistant", content)

    def engine_body(self) -> dict[str, Any]:
        """The part of the request that reaches the engine (what the receipt hashes)."""
        return self.model_dump(
            mode="json",
            exclude_none=True,
            exclude={"metadata", "callback_url", "priority", "completion_window", "max_attempts"},
        )


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class JobError(BaseModel):
    """Why an attempt or a job failed. ``retryable`` says whether another attempt may help."""

    code: str
    message: str
    retryable: bool = False


class Attempt(BaseModel):
    number: int
    worker: str
    started_at: datetime
    ended_at: datetime | None = None
    error: JobError | None = None


class JobTimings(BaseModel):
    """Seconds spent waiting in the queue and inside the engine (summed over attempts)."""

    queued_seconds: float | None = None
    engine_seconds: float | None = None


class Receipt(BaseModel):
    """Ed25519 signature over :meth:`Receipt.signed_fields` (see ``overnight.verify_receipt``)."""

    job_id: str
    model: str
    request_sha256: str
    response_sha256: str
    usage: Usage
    timings: JobTimings
    signed_at: datetime
    key_id: str
    signature: str

    def signed_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"signature"})


class Job(BaseModel):
    """A job as the API returns it."""

    id: str
    object: Literal["job"] = "job"
    state: JobState
    model: str
    priority: Priority
    request: LLMCall
    metadata: dict[str, str] = Field(default_factory=dict)
    batch_id: str | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    max_attempts: int
    attempts: list[Attempt] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime
    result: dict[str, Any] | None = Field(
        default=None, description="OpenAI-shaped response: choices (or data) and usage."
    )
    error: JobError | None = None
    usage: Usage | None = None
    timings: JobTimings = Field(default_factory=JobTimings)
    receipt: Receipt | None = None

    @property
    def text(self) -> str | None:
        """The first choice's text, for chat jobs that succeeded."""
        if not self.result or not self.result.get("choices"):
            return None
        message = self.result["choices"][0].get("message") or {}
        return message.get("content")


class JobPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    next_cursor: str | None = None
    has_more: bool = False


class BulkJobsRequest(BaseModel):
    """Many jobs in one request. ``callback_url`` here receives ``batch.completed``."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    callback_url: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, str] = Field(default_factory=dict)


class BulkItemResult(BaseModel):
    """One line of a bulk answer: the job, or why this item was refused."""

    index: int
    job: Job | None = None
    error: "ErrorDetail | None" = None


class BulkJobsResponse(BaseModel):
    batch_id: str
    data: list[BulkItemResult]


WebhookEventType = Literal[
    "job.succeeded", "job.failed", "job.cancelled", "job.expired", "batch.completed"
]


class WebhookEvent(BaseModel):
    """Body of every webhook, signed per Standard Webhooks."""

    type: WebhookEventType
    timestamp: datetime
    data: dict[str, Any]


class OpenAIFile(BaseModel):
    """OpenAI's ``file`` object."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"


class BatchRequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


OpenAIBatchStatus = Literal[
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]


class OpenAIBatch(BaseModel):
    """OpenAI's ``batch`` object; each input line runs as one job of this batch."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: OpenAIBatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: BatchErrors | None = None
    created_at: int
    expires_at: int | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    metadata: dict[str, str] | None = None


def batch_output_line(job: Job) -> dict[str, Any]:
    """One line of an OpenAI batch output (succeeded) or error file (anything else)."""
    custom_id = job.metadata.get("custom_id")
    if job.state is JobState.SUCCEEDED:
        response = {"status_code": 200, "request_id": job.id, "body": job.result}
    else:
        error = job.error
        body = {"error": {"message": error.message if error else job.state.value, "type": "server_error",
                          "code": error.code if error else job.state.value}}
        client_error = error is not None and not error.retryable and error.code not in ("cancelled", "batch_cancelled", "expired")
        response = {"status_code": 400 if client_error else 500, "request_id": job.id, "body": body}
    return {"id": f"batch_req_{job.id}", "custom_id": custom_id, "response": response, "error": None}


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: ``{"error": {"code", "message", "param"}}``."""

    error: ErrorDetail


BulkItemResult.model_rebuild()
