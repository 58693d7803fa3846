"""Activity and workflow payloads, carried by ``pydantic_data_converter``.

    SubmitLLMJobInput(call=LLMCall(model="smollm2-135m").add_user_message("Hi"))
    BatchLLMInput(template=LLMCall(model="smollm2-135m", max_tokens=64), prompts=["a", "b"])

Every payload is a pydantic model over the wire models (``overnight.LLMCall``,
``overnight.Job``), so the worker, the bridge and the workflow agree on one schema.
The ``META_*`` names are the job metadata keys that tie a job to the Temporal step that
submitted it; the completion bridge reads them from each webhook.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field

from overnight import LLMCall

__all__ = [
    "JOB_COMPLETED_SIGNAL",
    "META_ACTIVITY_ID",
    "META_COMPLETION",
    "META_NAMESPACE",
    "META_RUN_ID",
    "META_SIGNAL",
    "META_TASK_TOKEN",
    "META_WORKFLOW_ID",
    "BatchItemFailure",
    "BatchLLMInput",
    "BatchLLMResult",
    "CancelLLMJobInput",
    "CompletionMode",
    "LLMCallInput",
    "LLMJobInput",
    "StepRef",
    "SubmitLLMJobInput",
    "WaitLLMJobInput",
]

CompletionMode = Literal["async", "signal", "poll"]
"""How a workflow learns that its job ended:

- ``"async"``: one activity submits and returns without a result
  (``activity.raise_complete_async()``); the bridge completes it from the webhook.
- ``"signal"``: an ``LLMJobWorkflow`` child submits and waits for the bridge's
  ``job_completed`` signal.
- ``"poll"``: a submit activity, then a heartbeating long-poll activity. No bridge needed.
"""

JOB_COMPLETED_SIGNAL = "job_completed"

# Job metadata written by the activities and read by the bridge.
META_COMPLETION = "temporal_completion"
"""``"activity"`` (complete the activity), ``"signal"`` (signal the workflow) or ``"poll"``."""
META_NAMESPACE = "temporal_namespace"
META_WORKFLOW_ID = "temporal_workflow_id"
META_RUN_ID = "temporal_run_id"
META_ACTIVITY_ID = "temporal_activity_id"
META_SIGNAL = "temporal_signal"
META_TASK_TOKEN = "temporal_task_token"
"""Base64 task token. The bridge completes by token when a job carries one (jobs you
submit yourself from a single-attempt activity); our activities use the IDs above,
which stay the same across attempts, so a retried submit replays the same body."""


class SubmitLLMJobInput(BaseModel):
    """Input of ``submit_llm_job``: queue ``call`` and return the job at once."""

    call: LLMCall
    idempotency_key: str | None = None
    """Default: derived from namespace, workflow id, run id and activity id."""
    signal: str | None = None
    """Ask the bridge to send this signal (with the finished ``Job``) to the calling workflow."""


class WaitLLMJobInput(BaseModel):
    """Input of ``wait_llm_job``: long-poll until the job ends, heartbeating in between."""

    job_id: str
    poll_seconds: float | None = Field(default=None, gt=0)
    """Longest single long poll; default half the heartbeat timeout, at most 30 s."""


class LLMCallInput(BaseModel):
    """Input of ``llm_call``: submit with the bridge as callback and complete asynchronously."""

    call: LLMCall
    idempotency_key: str | None = None


class StepRef(BaseModel):
    """The Temporal identity a job was submitted under (what the job metadata records)."""

    workflow_id: str
    run_id: str
    activity_id: str


class CancelLLMJobInput(BaseModel):
    """Input of ``cancel_llm_job``: a job id, or the step that submitted the job."""

    job_id: str | None = None
    step: StepRef | None = None


class LLMJobInput(BaseModel):
    """Input of ``LLMJobWorkflow``."""

    call: LLMCall
    timeout: timedelta = timedelta(hours=24)
    """Wait at most this long for the job; then cancel it and fail with ``overnight.step_timeout``."""
    submit_timeout: timedelta = timedelta(seconds=60)


class BatchItemFailure(BaseModel):
    index: int
    type: str
    """The ``ApplicationError.type``, e.g. ``overnight.job_failed``."""
    message: str


class BatchLLMInput(BaseModel):
    """Input of ``BatchLLMWorkflow``: one job per prompt, at most ``max_concurrency`` at a time.

    Each prompt becomes the last user message of a copy of ``template``. The fields
    under "carried" hold the progress that ``continue_as_new`` passes to the next run.
    """

    template: LLMCall
    prompts: list[str]
    max_concurrency: int = Field(default=16, ge=1)
    mode: CompletionMode = "async"
    history_threshold: int = Field(default=10_000, ge=50)
    """Continue as new once the history holds this many events (or the server suggests it)."""
    collect_texts: bool = False
    """Return every answer's text. Off for big runs: texts travel in workflow payloads
    (limit 2 MB); read them from Overnight instead (metadata ``temporal_item``)."""
    step_timeout: timedelta = timedelta(hours=24)
    # carried across continue-as-new
    offset: int = 0
    succeeded: int = 0
    failures: list[BatchItemFailure] = Field(default_factory=list)
    texts: list[str | None] = Field(default_factory=list)
    runs: int = 1
    peak_concurrency: int = 0


class BatchLLMResult(BaseModel):
    total: int
    succeeded: int
    failures: list[BatchItemFailure]
    texts: list[str | None] | None = None
    runs: int
    """Workflow runs the batch took (1 + continue-as-new count)."""
    peak_concurrency: int
