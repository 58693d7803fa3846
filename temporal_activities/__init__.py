"""Overnight for Temporal: LLM steps as durable activities, resumed by webhook.

    with workflow.unsafe.imports_passed_through():
        from overnight import LLMCall
        from temporal_activities import llm_step

    job = await llm_step(LLMCall(model="smollm2-135m").add_user_message("Summarize ..."))  # in a workflow

Run ``python -m temporal_activities.worker --task-queue ... --address ...`` (or use
``create_worker`` and ``serve_bridge`` in your own worker). Use ``pydantic_data_converter`` on
every Temporal client. See ``docs/temporal.md`` for the three completion modes.
"""

from temporalio import workflow as _workflow

# Workflows import this package inside Temporal's sandbox. Its code is deterministic and its
# dependencies (httpx, uvicorn) do not belong in a sandbox, so it is passed through: imported
# once, and shared by every workflow run, with or without ``workflow_runner()``.
with _workflow.unsafe.imports_passed_through():
    from ._activities import OvernightActivities, step_idempotency_key
    from ._bridge import BridgeOutcome, CompletionBridge
    from ._errors import STEP_TIMEOUT, error_type, job_outcome_error, to_application_error
    from ._runtime import WORKFLOWS, create_worker, serve_bridge, workflow_runner
    from ._types import (
        JOB_COMPLETED_SIGNAL,
        BatchItemFailure,
        BatchLLMInput,
        BatchLLMResult,
        CancelLLMJobInput,
        CompletionMode,
        LLMCallInput,
        LLMJobInput,
        StepRef,
        SubmitLLMJobInput,
        WaitLLMJobInput,
    )
    from ._workflows import DEFAULT_RETRY_POLICY, BatchLLMWorkflow, LLMJobWorkflow, llm_step

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "JOB_COMPLETED_SIGNAL",
    "STEP_TIMEOUT",
    "WORKFLOWS",
    "BatchItemFailure",
    "BatchLLMInput",
    "BatchLLMResult",
    "BatchLLMWorkflow",
    "BridgeOutcome",
    "CancelLLMJobInput",
    "CompletionBridge",
    "CompletionMode",
    "LLMCallInput",
    "LLMJobInput",
    "LLMJobWorkflow",
    "OvernightActivities",
    "StepRef",
    "SubmitLLMJobInput",
    "WaitLLMJobInput",
    "create_worker",
    "error_type",
    "job_outcome_error",
    "llm_step",
    "serve_bridge",
    "step_idempotency_key",
    "to_application_error",
    "workflow_runner",
]
