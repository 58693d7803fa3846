"""Shared by the operators: the task's identity, building requests, attaching to jobs.

    key = task_idempotency_key(context)          # dag/task/run/map index; never the try number
    call = build_call("smollm2-135m", prompt="Summarise ...", max_tokens=64)
    job = attach_job(client, call, key)          # the same job on every try of this task instance

A new try re-attaches to the job its task instance submitted. Only when that job is "dead"
(cancelled, expired, or failed with a retryable error) does it submit a fresh one, under a key
derived from the dead job's id, so the fresh job is itself re-attached by later tries.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Literal, Mapping, Sequence

from pydantic import ValidationError

from overnight import (
    BulkItemResult,
    Client,
    ConflictError,
    Job,
    JobState,
    LLMCall,
    NotFoundError,
    OvernightError,
    derive_idempotency_key,
)

from ..exceptions import OvernightJobFatalException, exception_for_error

__all__ = [
    "BATCH_XCOM_KEY",
    "JOB_ID_XCOM_KEY",
    "JOB_URL_XCOM_KEY",
    "OutputFormat",
    "attach_batch",
    "attach_job",
    "build_call",
    "cancel_unfinished",
    "deadline_for",
    "is_dead",
    "job_output",
    "task_idempotency_key",
    "task_metadata",
]

JOB_ID_XCOM_KEY = "overnight_job_id"
JOB_URL_XCOM_KEY = "overnight_job_url"
BATCH_XCOM_KEY = "overnight_batch"
MAX_FRESH_SUBMISSIONS = 100
"""A task instance submits at most this many replacement jobs, one per dead job it finds."""

OutputFormat = Literal["text", "result", "job"]
SAMPLING_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "seed", "response_format", "max_attempts")


def _identity(context: Mapping[str, Any]) -> tuple[str, str, str, int]:
    ti = context["ti"]
    map_index = getattr(ti, "map_index", None)
    return ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else int(map_index)


def task_idempotency_key(context: Mapping[str, Any]) -> str:
    """The key of this task instance's job: the same on every try, different for every map index."""
    return derive_idempotency_key("airflow", *_identity(context))


def task_metadata(context: Mapping[str, Any]) -> dict[str, str]:
    """Job metadata naming the task instance (filter with ``GET /v1/jobs?metadata.airflow_dag_id=``)."""
    dag_id, task_id, run_id, map_index = _identity(context)
    metadata = {"airflow_dag_id": dag_id, "airflow_task_id": task_id, "airflow_run_id": run_id}
    if map_index >= 0:
        metadata["airflow_map_index"] = str(map_index)
    return metadata


def build_call(
    model: str,
    *,
    prompt: str | None = None,
    messages: Sequence[Mapping[str, Any]] | None = None,
    system_prompt: str | None = None,
    metadata: Mapping[str, str] | None = None,
    priority: str | None = None,
    completion_window: str | None = None,
    **params: Any,
) -> LLMCall:
    """An ``LLMCall`` from operator arguments; refuses bad arguments with a fatal error."""
    unknown = set(params) - set(SAMPLING_PARAMS)
    if unknown:
        raise OvernightJobFatalException(f"unknown request fields {sorted(unknown)}; use {', '.join(SAMPLING_PARAMS)}")
    chat: list[Mapping[str, Any]] = []
    if system_prompt:
        chat.append({"role": "system", "content": system_prompt})
    chat.extend(messages or ())
    if prompt is not None:
        chat.append({"role": "user", "content": prompt})
    if not any(message.get("role") == "user" for message in chat):
        raise OvernightJobFatalException("give a prompt or messages with at least one user message")
    body: dict[str, Any] = {"model": model, "messages": chat, **{k: v for k, v in params.items() if v is not None}}
    if metadata:
        body["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    if priority is not None:
        body["priority"] = priority
    if completion_window is not None:
        body["completion_window"] = completion_window
    try:
        return LLMCall.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise OvernightJobFatalException(f"invalid LLM request: {problems}") from exc


def is_dead(job: Job) -> bool:
    """True for a job a new try must not re-attach to: it ended without a result, and may succeed
    if run again (cancelled, expired, or failed with a retryable error)."""
    if job.state in (JobState.CANCELLED, JobState.EXPIRED):
        return True
    return job.state is JobState.FAILED and job.error is not None and job.error.retryable


_CHANGED_REQUEST = (
    "this task instance already submitted a different request under its idempotency key {key} "
    "(derived from dag_id/task_id/run_id/map_index). Overnight will not start a second, different "
    "job for it: keep the rendered request the same across tries (no try number or clock in it), "
    "or start a new DAG run. The service said: {error}"
)


def _submit_error(exc: OvernightError, key: str, what: str) -> Exception:
    if isinstance(exc, ConflictError) and exc.code == "idempotency_conflict":
        return OvernightJobFatalException(_CHANGED_REQUEST.format(key=key, error=exc))
    return exception_for_error(exc, f"submitting {what} (idempotency key {key})")


def attach_job(client: Client, call: LLMCall, key: str) -> Job:
    """Submit the task instance's job, or re-attach to it; replaces a dead job with a fresh one."""
    for _ in range(MAX_FRESH_SUBMISSIONS):
        try:
            job = client.submit_job(call, idempotency_key=key)
        except OvernightError as exc:
            raise _submit_error(exc, key, "the job") from exc
        if not is_dead(job):
            return job
        key = derive_idempotency_key("airflow", key, "after", job.id)
    return job


def attach_batch(client: Client, calls: Sequence[LLMCall], key: str) -> list[BulkItemResult]:
    """Bulk-submit (or re-attach to) the calls; one result per call, in order. Dead jobs are
    replaced by one more bulk request, keyed on the dead jobs' ids."""
    try:
        results = client.send_jobs(calls, idempotency_key=key)
        for _ in range(MAX_FRESH_SUBMISSIONS):
            dead = [r.index for r in results if r.job is not None and is_dead(r.job)]
            if not dead:
                break
            retry_key = derive_idempotency_key("airflow", key, "after", *(results[i].job.id for i in dead))  # type: ignore[union-attr]
            fresh = client.send_jobs([calls[i] for i in dead], idempotency_key=retry_key)
            for index, item in zip(dead, fresh, strict=True):
                results[index] = item.model_copy(update={"index": index})
    except OvernightError as exc:
        raise _submit_error(exc, key, "the batch") from exc
    return results


def job_output(job: Job, output_format: OutputFormat) -> Any:
    """What the task returns: the completion text, the OpenAI-shaped result, or the whole job."""
    if output_format == "text":
        return job.text
    if output_format == "result":
        return job.result
    return job.model_dump(mode="json")


def deadline_for(timeout: timedelta | float | None, execution_timeout: timedelta | None) -> float | None:
    """Epoch seconds when waiting must stop: the sooner of ``timeout`` and ``execution_timeout``."""
    limits = [t.total_seconds() if isinstance(t, timedelta) else float(t) for t in (timeout, execution_timeout) if t is not None]
    return time.time() + min(limits) if limits else None


def cancel_unfinished(client: Client, batch_ids: Sequence[str]) -> int:
    """Cancel every queued or running job of the batches (blocking); returns how many."""
    targets = [
        job.id
        for batch_id in batch_ids
        for state in (JobState.QUEUED, JobState.RUNNING)
        for job in client.iter_jobs(batch_id=batch_id, state=state, page_size=1000)
    ]
    cancelled = 0
    for job_id in targets:
        try:
            cancelled += client.cancel_job(job_id).state is JobState.CANCELLED
        except (ConflictError, NotFoundError):  # it ended meanwhile
            pass
    return cancelled
