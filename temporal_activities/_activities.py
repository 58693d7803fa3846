"""``OvernightActivities``: LLM jobs as Temporal activities, bound to one ``AsyncClient``.

    activities = OvernightActivities(AsyncClient(max_retries=0), bridge_url="http://bridge:8090/")
    Worker(client, task_queue="llm", activities=activities.all(), workflows=[...])

- ``submit_llm_job`` queues a job and returns it at once. Its idempotency key is derived from
  the step's identity (namespace, workflow id, run id, activity id), so a retried attempt
  attaches to the job it already submitted.
- ``wait_llm_job`` long-polls until the job ends and heartbeats in between. Each poll is at most
  half the heartbeat timeout. When the activity is cancelled, it cancels the remote job. On a
  worker shutdown or a timeout it leaves the job alone, because the next attempt re-attaches.
- ``llm_call`` submits with the completion bridge as callback and returns without a result
  (``activity.raise_complete_async()``). No worker slot is held while the job waits.
- ``cancel_llm_job`` cancels by job id, or by the step that submitted the job.

Temporal owns retries. Build the client with ``max_retries=0`` (the default here), the way
``temporalio.contrib.openai_agents`` turns off the OpenAI client's retries. Errors are mapped
by :func:`to_application_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from overnight import AsyncClient, ConflictError, Job, LLMCall, OvernightError, WaitTimeout, derive_idempotency_key

from ._errors import error_type, raise_unless_succeeded, to_application_error
from ._types import (
    META_ACTIVITY_ID,
    META_COMPLETION,
    META_NAMESPACE,
    META_RUN_ID,
    META_SIGNAL,
    META_WORKFLOW_ID,
    CancelLLMJobInput,
    LLMCallInput,
    SubmitLLMJobInput,
    WaitLLMJobInput,
)

__all__ = ["OvernightActivities", "step_idempotency_key"]

logger = logging.getLogger(__name__)

MAX_POLL_SECONDS = 30.0


def step_idempotency_key(info: activity.Info) -> str:
    """The key for the job of one workflow step. It is the same on every attempt and after a
    worker restart. A new run of the workflow (a retry, a reset or a reused workflow id)
    gets a new one."""
    return derive_idempotency_key(
        "temporal", info.workflow_namespace or info.namespace, info.workflow_id or "",
        info.workflow_run_id or info.activity_run_id or "", info.activity_id,
    )


@contextlib.contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except (OvernightError, ValidationError) as exc:
        raise to_application_error(exc) from exc


class OvernightActivities:
    """The activities, sharing one ``AsyncClient``. Register them with ``activities.all()``.

    ``bridge_url`` is the address where Overnight delivers webhooks for the bridge
    (``CompletionBridge``). ``llm_call`` and signal-mode submissions need it.
    """

    def __init__(self, client: AsyncClient | None = None, *, bridge_url: str | None = None,
                 poll_seconds: float = MAX_POLL_SECONDS) -> None:
        self.client = client if client is not None else AsyncClient(max_retries=0)
        self.bridge_url = bridge_url
        self.poll_seconds = poll_seconds

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, for ``Worker(activities=...)``."""
        return [self.submit_llm_job, self.wait_llm_job, self.llm_call, self.cancel_llm_job]

    # -- activities --------------------------------------------------------------------
    @activity.defn(name="overnight.submit_llm_job")
    async def submit_llm_job(self, input: SubmitLLMJobInput) -> Job:
        """Queue the call and return the job (the earlier job, when this step already submitted one)."""
        info = activity.info()
        with _mapped_errors():
            if input.signal is not None:
                call = self._tagged(input.call, info, "signal", callback=True, signal=input.signal)
            else:
                call = self._tagged(input.call, info, "poll", callback=False)
            return await self.client.submit_job(call, idempotency_key=input.idempotency_key or step_idempotency_key(info))

    @activity.defn(name="overnight.wait_llm_job")
    async def wait_llm_job(self, input: WaitLLMJobInput) -> Job:
        """Long-poll until the job ends and heartbeat between polls. Raises unless it succeeded."""
        step = self._poll_step(activity.info().heartbeat_timeout, input.poll_seconds)
        try:
            with _mapped_errors():
                while True:
                    activity.heartbeat(input.job_id)
                    try:
                        job = await self.client.wait_for_job(input.job_id, timeout=step, poll_seconds=step)
                    except WaitTimeout:
                        continue
                    return raise_unless_succeeded(job)
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            # Only an explicit cancel stops the job. A worker shutdown, a timeout, a pause or a
            # reset ends this attempt, and the next attempt re-attaches to the same job.
            if details is not None and details.cancel_requested:
                await asyncio.shield(self._cancel_quietly(input.job_id))
            raise

    @activity.defn(name="overnight.llm_call")
    async def llm_call(self, input: LLMCallInput) -> Job:
        """Submit with the bridge as callback, then complete asynchronously (no slot held)."""
        info = activity.info()
        with _mapped_errors():
            call = self._tagged(input.call, info, "activity", callback=True)
            job = await self.client.submit_job(call, idempotency_key=input.idempotency_key or step_idempotency_key(info))
        if job.state.is_terminal:  # a later attempt, after the job already ended
            return raise_unless_succeeded(job)
        activity.raise_complete_async()

    @activity.defn(name="overnight.cancel_llm_job")
    async def cancel_llm_job(self, input: CancelLLMJobInput) -> Job | None:
        """Cancel the job (found by id or by its step). Returns it, or None when there is none."""
        with _mapped_errors():
            if input.job_id is not None:
                return await self._cancel(input.job_id)
            if input.step is None:
                raise ApplicationError("give job_id or step", type=error_type("invalid_request"), non_retryable=True)
            found = None
            metadata = {META_WORKFLOW_ID: input.step.workflow_id, META_RUN_ID: input.step.run_id,
                        META_ACTIVITY_ID: input.step.activity_id}
            async for job in self.client.iter_jobs(metadata=metadata):
                found = await self._cancel(job.id)
            return found

    # -- helpers -----------------------------------------------------------------------
    def _tagged(self, call: LLMCall, info: activity.Info, completion: str, *, callback: bool,
                signal: str | None = None) -> LLMCall:
        """``call`` with the step's identity in its metadata and, for push modes, the bridge as callback."""
        if callback and not self.bridge_url:
            raise ApplicationError(
                "this completion mode needs the completion bridge: pass OvernightActivities(bridge_url=...) "
                "(worker: --bridge-url), or use mode='poll'",
                type=error_type("bridge_not_configured"), non_retryable=True,
            )
        if callback and not info.workflow_id:
            raise ApplicationError("push completion needs an activity started by a workflow",
                                   type=error_type("invalid_request"), non_retryable=True)
        metadata = {
            **call.metadata,
            META_COMPLETION: completion,
            META_NAMESPACE: info.workflow_namespace or info.namespace,
            META_WORKFLOW_ID: info.workflow_id or "",
            META_RUN_ID: info.workflow_run_id or info.activity_run_id or "",
            META_ACTIVITY_ID: info.activity_id,
        }
        if signal is not None:
            metadata[META_SIGNAL] = signal
        body = call.model_dump()
        body["metadata"] = metadata
        if callback:
            body["callback_url"] = self.bridge_url
        return LLMCall.model_validate(body)

    def _poll_step(self, heartbeat_timeout: timedelta | None, requested: float | None) -> float:
        step = min(requested or self.poll_seconds, MAX_POLL_SECONDS)
        if heartbeat_timeout:
            step = min(step, heartbeat_timeout.total_seconds() / 2)
        return max(step, 0.05)

    async def _cancel(self, job_id: str) -> Job:
        try:
            return await self.client.cancel_job(job_id)
        except ConflictError:  # it ended before the cancel arrived
            return await self.client.get_job(job_id)

    async def _cancel_quietly(self, job_id: str) -> None:
        try:
            await self._cancel(job_id)
        except OvernightError as exc:  # the workflow's own cancel_llm_job retries this
            logger.warning("could not cancel Overnight job %s: %s", job_id, exc)
