"""Workflow helpers: ``llm_step``, ``LLMJobWorkflow`` and ``BatchLLMWorkflow``.

    with workflow.unsafe.imports_passed_through():
        from overnight import LLMCall
        from temporal_activities import llm_step

    @workflow.defn
    class Summarize:
        @workflow.run
        async def run(self, text: str) -> str:
            job = await llm_step(LLMCall(model="smollm2-135m").add_user_message(f"Summarize: {text}"))
            return job.text

``llm_step`` returns the succeeded ``overnight.Job``. A job that failed, was cancelled or expired
raises a non-retryable ``ApplicationError`` (``overnight.job_<state>``), wrapped as Temporal
wraps every activity or child failure. When the workflow is cancelled, or the step's ``timeout``
passes, the remote job is cancelled before the error propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError, is_cancelled_exception
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from overnight import Job, LLMCall

    from ._activities import OvernightActivities
    from ._errors import STEP_TIMEOUT, raise_unless_succeeded
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

__all__ = ["DEFAULT_RETRY_POLICY", "BatchLLMWorkflow", "LLMJobWorkflow", "llm_step"]

DEFAULT_RETRY_POLICY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=60))
"""Unlimited attempts within the step's ``timeout``; errors marked non-retryable stop it at once."""
_SUBMIT_TIMEOUT = timedelta(seconds=60)
_CANCEL_RETRY_POLICY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)


async def llm_step(
    call: LLMCall,
    *,
    mode: CompletionMode = "async",
    timeout: timedelta = timedelta(hours=24),
    step_id: str | None = None,
    recheck_every: timedelta = timedelta(minutes=30),
    heartbeat_timeout: timedelta = timedelta(seconds=30),
    retry_policy: RetryPolicy | None = None,
    task_queue: str | None = None,
) -> Job:
    """Run ``call`` as an Overnight job from inside a workflow and return the finished job.

    ``mode`` picks how completion comes back (see ``CompletionMode``). ``timeout`` bounds the
    whole step; when it passes, the remote job is cancelled and ``overnight.step_timeout`` is
    raised. ``step_id`` names the step's activities (``llm-<step_id>``) and child workflow
    (``<workflow id>/llm-<step_id>``). The default is a deterministic uuid.
    ``recheck_every`` (async mode) is the activity's start-to-close timeout: if a webhook is
    lost, the activity is retried after this long and collects the finished job.
    ``heartbeat_timeout`` (poll mode) bounds the time a dead worker's poll goes unnoticed.
    """
    name = f"llm-{step_id or workflow.uuid4().hex[:16]}"
    policy = retry_policy or DEFAULT_RETRY_POLICY
    if mode == "signal":
        return await workflow.execute_child_workflow(
            LLMJobWorkflow.run,
            LLMJobInput(call=call, timeout=timeout),
            id=f"{workflow.info().workflow_id}/{name}",
            task_queue=task_queue,
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
        )
    if mode == "async":
        return await _guarded(
            workflow.execute_activity_method(
                OvernightActivities.llm_call, LLMCallInput(call=call), activity_id=name,
                start_to_close_timeout=min(recheck_every, timeout), schedule_to_close_timeout=timeout,
                retry_policy=policy, task_queue=task_queue,
            ),
            name, timeout, task_queue,
        )
    if mode != "poll":
        raise ApplicationError(f"unknown completion mode {mode!r}", type="overnight.invalid_request", non_retryable=True)
    deadline = workflow.now() + timeout
    submitted = await _guarded(
        workflow.execute_activity_method(
            OvernightActivities.submit_llm_job, SubmitLLMJobInput(call=call), activity_id=f"{name}-submit",
            start_to_close_timeout=_SUBMIT_TIMEOUT, schedule_to_close_timeout=timeout, retry_policy=policy,
            task_queue=task_queue,
        ),
        f"{name}-submit", timeout, task_queue,
    )
    if submitted.state.is_terminal:
        return raise_unless_succeeded(submitted)
    return await _guarded(
        workflow.execute_activity_method(
            OvernightActivities.wait_llm_job, WaitLLMJobInput(job_id=submitted.id), activity_id=f"{name}-wait",
            schedule_to_close_timeout=_remaining(deadline), heartbeat_timeout=heartbeat_timeout, retry_policy=policy,
            task_queue=task_queue,
        ),
        f"{name}-submit", timeout, task_queue,
    )


async def _guarded(step: Awaitable[Job], submitted_by: str, timeout: timedelta, task_queue: str | None) -> Job:
    """Await an activity; cancel the remote job when the workflow is cancelled or the step times out."""
    try:
        return await step
    except (asyncio.CancelledError, FailureError) as exc:
        # A cancelled activity surfaces as asyncio's CancelledError or as an ActivityError
        # caused by Temporal's CancelledError, depending on when the cancellation lands.
        if isinstance(exc, asyncio.CancelledError) or is_cancelled_exception(exc):
            await _cancel_remote(submitted_by, task_queue)
            raise
        if isinstance(exc.cause, ActivityTimeoutError):
            await _cancel_remote(submitted_by, task_queue)
            raise ApplicationError(
                f"the LLM step did not finish within {timeout}; its job was cancelled",
                type=STEP_TIMEOUT, non_retryable=True,
            ) from exc
        raise


def _remaining(deadline: datetime) -> timedelta:
    return max(deadline - workflow.now(), timedelta(seconds=1))


async def _cancel_remote(submitted_by: str, task_queue: str | None = None) -> None:
    """Cancel the job that this run's activity ``submitted_by`` submitted, if there is one."""
    info = workflow.info()
    ref = StepRef(workflow_id=info.workflow_id, run_id=info.run_id, activity_id=submitted_by)
    try:
        await workflow.execute_activity_method(
            OvernightActivities.cancel_llm_job, CancelLLMJobInput(step=ref),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=_CANCEL_RETRY_POLICY, task_queue=task_queue,
        )
    except FailureError as exc:
        workflow.logger.warning("could not cancel the Overnight job of step %s: %s", submitted_by, exc)


@workflow.defn(name="overnight.LLMJobWorkflow")
class LLMJobWorkflow:
    """Submit one job, then wait for the bridge's ``job_completed`` signal.

    ``llm_step(..., mode="signal")`` runs it as a child workflow. Start it yourself with
    ``client.execute_workflow(LLMJobWorkflow.run, LLMJobInput(call=...), id=..., task_queue=...)``.
    When ``input.timeout`` passes, or the workflow is cancelled, the remote job is cancelled.
    """

    def __init__(self) -> None:
        self._finished: dict[str, Job] = {}

    @workflow.signal(name=JOB_COMPLETED_SIGNAL)
    def job_completed(self, job: Job) -> None:
        """Sent by the bridge with the finished job; duplicates are ignored."""
        self._finished.setdefault(job.id, job)

    @workflow.run
    async def run(self, input: LLMJobInput) -> Job:
        deadline = workflow.now() + input.timeout
        submitted = await _guarded(
            workflow.execute_activity_method(
                OvernightActivities.submit_llm_job, SubmitLLMJobInput(call=input.call, signal=JOB_COMPLETED_SIGNAL),
                activity_id="submit", start_to_close_timeout=input.submit_timeout,
                schedule_to_close_timeout=input.timeout, retry_policy=DEFAULT_RETRY_POLICY,
            ),
            "submit", input.timeout, None,
        )
        if submitted.state.is_terminal:
            self._finished.setdefault(submitted.id, submitted)
        try:
            await workflow.wait_condition(lambda: submitted.id in self._finished, timeout=_remaining(deadline))
        except asyncio.CancelledError:
            await _cancel_remote("submit")
            raise
        except TimeoutError:
            await _cancel_remote("submit")
            raise ApplicationError(
                f"job {submitted.id} did not finish within {input.timeout}; it was cancelled",
                {"job_id": submitted.id}, type=STEP_TIMEOUT, non_retryable=True,
            ) from None
        return raise_unless_succeeded(self._finished[submitted.id])


@workflow.defn(name="overnight.BatchLLMWorkflow")
class BatchLLMWorkflow:
    """One ``llm_step`` per prompt, at most ``max_concurrency`` at a time; continues as new
    when the history grows past ``history_threshold``, so 10,000-item runs stay small.

    Item failures do not fail the batch: they are listed in ``BatchLLMResult.failures``.
    Each job carries metadata ``temporal_item=<index>``.
    """

    def __init__(self) -> None:
        self._running = 0

    @workflow.run
    async def run(self, input: BatchLLMInput) -> BatchLLMResult:
        texts: dict[int, str | None] = {}
        failures: list[BatchItemFailure] = []
        succeeded = 0
        peak = input.peak_concurrency
        tasks: set[asyncio.Task[None]] = set()

        async def one(position: int) -> None:
            nonlocal succeeded
            index = input.offset + position
            try:
                job = await llm_step(_item_call(input.template, input.prompts[position], index), mode=input.mode,
                                     timeout=input.step_timeout, step_id=f"item-{index}")
                succeeded += 1
                texts[position] = job.text
            except FailureError as exc:
                if is_cancelled_exception(exc):
                    raise
                failures.append(BatchItemFailure(index=index, type=_failure_type(exc), message=str(exc)))
                texts[position] = None
            finally:
                self._running -= 1

        started = 0
        try:
            while started < len(input.prompts) and not self._history_full(input.history_threshold):
                await workflow.wait_condition(lambda: self._running < input.max_concurrency)
                self._running += 1
                peak = max(peak, self._running)
                tasks.add(asyncio.create_task(one(started)))
                started += 1
            await asyncio.gather(*tasks)  # the rest; an unexpected error (a bug) fails the task here
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

        carried_texts = input.texts + [texts[i] for i in range(started)] if input.collect_texts else []
        progress = {
            "succeeded": input.succeeded + succeeded,
            "failures": input.failures + sorted(failures, key=lambda f: f.index),
            "texts": carried_texts,
            "peak_concurrency": peak,
        }
        if started < len(input.prompts):
            workflow.continue_as_new(input.model_copy(update={
                **progress, "prompts": input.prompts[started:], "offset": input.offset + started, "runs": input.runs + 1,
            }))
        return BatchLLMResult(
            total=input.offset + len(input.prompts), succeeded=progress["succeeded"], failures=progress["failures"],
            texts=carried_texts if input.collect_texts else None, runs=input.runs, peak_concurrency=peak,
        )

    @staticmethod
    def _history_full(threshold: int) -> bool:
        info = workflow.info()
        return info.get_current_history_length() >= threshold or info.is_continue_as_new_suggested()


def _item_call(template: LLMCall, prompt: str, index: int) -> LLMCall:
    body = template.model_dump()
    body["messages"] = [*body["messages"], {"role": "user", "content": prompt}]
    body["metadata"] = {**template.metadata, "temporal_item": str(index)}
    return LLMCall.model_validate(body)


def _failure_type(exc: FailureError) -> str:
    while exc is not None:
        if isinstance(exc, ApplicationError) and exc.type:
            return exc.type
        exc = exc.cause  # type: ignore[assignment]
    return "unknown"
