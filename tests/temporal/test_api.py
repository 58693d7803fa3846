"""The public API, the mapping of Overnight errors to Temporal ``ApplicationError``s, and the
worker's command line."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError

import temporal_activities
from overnight import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceError,
    TransportError,
)
from temporal_activities import to_application_error
from temporal_activities.worker import parse_args


def test_public_api_is_pinned():
    assert sorted(temporal_activities.__all__) == sorted([
        "BatchItemFailure", "BatchLLMInput", "BatchLLMResult", "BatchLLMWorkflow", "BridgeOutcome",
        "CancelLLMJobInput", "CompletionBridge", "CompletionMode", "DEFAULT_RETRY_POLICY", "JOB_COMPLETED_SIGNAL",
        "LLMCallInput", "LLMJobInput", "LLMJobWorkflow", "OvernightActivities", "STEP_TIMEOUT", "StepRef",
        "SubmitLLMJobInput", "WORKFLOWS", "WaitLLMJobInput", "create_worker", "error_type", "job_outcome_error",
        "llm_step", "serve_bridge", "step_idempotency_key", "to_application_error", "workflow_runner",
    ])
    for name in temporal_activities.__all__:
        assert getattr(temporal_activities, name) is not None


@pytest.mark.parametrize(
    ("error", "type_", "non_retryable"),
    [
        (InvalidRequestError("bad", code="model_not_found", status_code=400), "overnight.model_not_found", True),
        (InvalidRequestError("bad", status_code=422), "overnight.invalid_request", True),
        (AuthenticationError("no"), "overnight.unauthorized", True),
        (NotFoundError("gone"), "overnight.not_found", True),
        (ConflictError("other body", code="idempotency_conflict"), "overnight.idempotency_conflict", True),
        (PayloadTooLargeError("big"), "overnight.payload_too_large", True),
        (RateLimitError("slow down"), "overnight.rate_limited", False),
        (ServiceError("oops", status_code=503), "overnight.service_error", False),
        (TransportError("refused"), "overnight.transport_error", False),
    ],
)
def test_errors_map_to_application_errors(error, type_, non_retryable):
    mapped = to_application_error(error)
    assert isinstance(mapped, ApplicationError)
    assert (mapped.type, mapped.non_retryable, mapped.next_retry_delay) == (type_, non_retryable, None)


def test_retry_after_becomes_next_retry_delay():
    error = RateLimitError("slow down")
    error.retry_after = 7.5
    assert to_application_error(error).next_retry_delay == timedelta(seconds=7.5)
    final = InvalidRequestError("bad")
    final.retry_after = 7.5  # a final error is not retried, so no delay is set
    assert to_application_error(final).next_retry_delay is None


def test_worker_command_line():
    args = parse_args(["--task-queue", "llm", "--bridge-listen", "127.0.0.1:8090", "--workflow", "a.b:C"])
    assert (args.task_queue, args.bridge_url, args.workflow) == ("llm", "http://127.0.0.1:8090/", ["a.b:C"])
    explicit = parse_args(["--task-queue", "llm", "--bridge-listen", "0.0.0.0:8090", "--bridge-url", "http://me:8090/"])
    assert explicit.bridge_url == "http://me:8090/"
    with pytest.raises(SystemExit):  # Overnight cannot post to 0.0.0.0
        parse_args(["--task-queue", "llm", "--bridge-listen", "0.0.0.0:8090"])
