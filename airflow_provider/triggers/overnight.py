"""``LLMJobTrigger``: waits in the triggerer for Overnight jobs to end, with long polls.

    LLMJobTrigger(job_ids=["job_..."], conn_id="overnight_default", deadline=time.time() + 3600)
    LLMJobTrigger(batch_ids=["batch_..."])          # every job of a bulk submission

Each request is ``GET /v1/jobs/{id}/wait?timeout=<poll_interval>``: it returns the moment the job
ends, so a waiting job costs one request per window and resumes within a round trip. Everything
is async (httpx's ``AsyncClient``; the connection is read with ``aget_connection``; certificates
are loaded once per process, in a thread). Up to ``max_consecutive_errors`` transient
errors in a row (connection errors, 429, 5xx) are retried with backoff; a non-retryable error
(401, 404) ends the wait at once. ``serialize()`` holds ids and settings, never the API key, and
the trigger only reads, so two triggerers running it at once do no harm.

It yields one ``TriggerEvent``:

    {"status": "success" | "failed" | "cancelled" | "timeout" | "error", "message": str,
     "job_ids": [...], "batch_ids": [...], "job_id": first id or None,
     "states": {job_id: state}, "error": {"code", "message", "retryable"} | None}

For jobs, ``success`` means every job succeeded; ``failed`` covers failed and expired jobs. For
batches, ``success`` means every job of the batch has ended: the operator reads each item.
``on_kill`` (the user marked the task failed, cleared or succeeded it while deferred) cancels
the jobs still running, when ``cancel_on_kill`` is set.
"""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import aclosing
from typing import Any, AsyncGenerator, AsyncIterator, Sequence, cast

from airflow.triggers.base import BaseTrigger, TriggerEvent

from overnight import AsyncClient, ConflictError, Job, JobState, NotFoundError, OvernightError, WaitTimeout

from ..hooks.overnight import OvernightHook

__all__ = ["LLMJobTrigger"]

_MAX_BACKOFF_SECONDS = 60.0
_CANCEL_CONCURRENCY = 16


class LLMJobTrigger(BaseTrigger):
    """Wait for Overnight jobs, or for every job of bulk batches, to end.

    :param job_ids: jobs to wait for.
    :param batch_ids: batches (``POST /v1/jobs/bulk``) whose every job to wait for.
    :param conn_id: the ``overnight`` connection.
    :param deadline: wall-clock time (epoch seconds) after which the trigger reports ``timeout``.
    :param poll_interval: the long-poll window: each request waits up to this long for a job to end.
    :param max_consecutive_errors: transient errors in a row tolerated before reporting ``error``.
    :param cancel_on_kill: cancel unfinished jobs in ``on_kill`` (operators that own the jobs set it;
        sensors watching someone else's job do not).
    :param backoff_seconds: the first retry delay after a transient error (doubles, up to 60 s).
    """

    def __init__(
        self,
        job_ids: Sequence[str] = (),
        batch_ids: Sequence[str] = (),
        conn_id: str = OvernightHook.default_conn_name,
        deadline: float | None = None,
        poll_interval: float = 30.0,
        max_consecutive_errors: int = 10,
        cancel_on_kill: bool = True,
        backoff_seconds: float = 1.0,
    ) -> None:
        super().__init__()
        if not job_ids and not batch_ids:
            raise ValueError("LLMJobTrigger needs job_ids or batch_ids")
        self.job_ids = list(job_ids)
        self.batch_ids = list(batch_ids)
        self.conn_id = conn_id
        self.deadline = deadline
        self.poll_interval = float(poll_interval)
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.cancel_on_kill = cancel_on_kill
        self.backoff_seconds = float(backoff_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_ids": list(self.job_ids),
                "batch_ids": list(self.batch_ids),
                "conn_id": self.conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_consecutive_errors": self.max_consecutive_errors,
                "cancel_on_kill": self.cancel_on_kill,
                "backoff_seconds": self.backoff_seconds,
            },
        )

    def _hook(self, **overrides: Any) -> OvernightHook:
        return OvernightHook(self.conn_id, **overrides)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            # The trigger counts and retries errors itself: the client does not retry.
            async with self._hook(max_retries=0).async_client() as client:
                payload = await self._wait(client)
        except Exception as exc:  # the connection is missing or invalid: report, don't crash the triggerer
            payload = self._payload("error", f"could not wait for Overnight jobs: {type(exc).__name__}: {exc}")
        yield TriggerEvent(payload)

    async def _wait(self, client: AsyncClient) -> dict[str, Any]:
        pending_jobs = list(self.job_ids)
        pending_batches = list(self.batch_ids)
        ended: dict[str, Job] = {}
        errors = 0
        while pending_jobs or pending_batches:
            remaining = None if self.deadline is None else self.deadline - time.time()
            if remaining is not None and remaining <= 0:
                waiting = pending_jobs or pending_batches
                return self._payload("timeout", f"the deadline passed while {', '.join(waiting)} had not ended", ended)
            window = self.poll_interval if remaining is None else max(0.0, min(self.poll_interval, remaining))
            try:
                if pending_jobs:
                    job = await self._long_poll(client, pending_jobs[0], window)
                    if job is not None:
                        ended[job.id] = job
                        pending_jobs.pop(0)
                else:
                    unfinished = await self._unfinished_job(client, pending_batches[0])
                    if unfinished is None:
                        pending_batches.pop(0)
                    else:
                        await self._long_poll(client, unfinished, window)
                errors = 0
            except (OvernightError, ValueError) as exc:
                if isinstance(exc, OvernightError) and not exc.retryable:
                    return self._payload("error", f"Overnight refused the wait: [{exc.code}] {exc}", ended)
                errors += 1
                if errors > self.max_consecutive_errors:
                    return self._payload(
                        "error", f"gave up after {errors} consecutive errors; the last: {type(exc).__name__}: {exc}", ended
                    )
                delay = min(_MAX_BACKOFF_SECONDS, self.backoff_seconds * 2 ** (errors - 1)) * (0.5 + random.random() / 2)
                retry_after = getattr(exc, "retry_after", None)
                self.log.warning("Overnight wait failed (%d/%d), retrying in %.1f s: %s",
                                 errors, self.max_consecutive_errors, delay, exc)
                await asyncio.sleep(max(delay, retry_after or 0.0))  # backoff before the next attempt
        return self._outcome(ended)

    @staticmethod
    async def _long_poll(client: AsyncClient, job_id: str, window: float) -> Job | None:
        """The job once it has ended, or None when the window passed first (one request)."""
        try:
            return await client.wait_for_job(job_id, timeout=window, poll_seconds=window)
        except WaitTimeout:
            return None

    @staticmethod
    async def _unfinished_job(client: AsyncClient, batch_id: str) -> str | None:
        """A queued or running job of the batch, newest first (the last to finish), or None."""
        for state in (JobState.QUEUED, JobState.RUNNING):
            pages = cast(AsyncGenerator[Job, None], client.iter_jobs(batch_id=batch_id, state=state, page_size=1))
            async with aclosing(pages) as jobs:
                async for job in jobs:
                    return job.id
        return None

    def _outcome(self, ended: dict[str, Job]) -> dict[str, Any]:
        jobs = [ended[job_id] for job_id in self.job_ids]
        not_ok = [job for job in jobs if job.state is not JobState.SUCCEEDED]
        if not not_ok:
            what = ", ".join([*self.job_ids, *(f"every job of {b}" for b in self.batch_ids)])
            return self._payload("success", f"{what} ended", ended)
        first = not_ok[0]
        status = "cancelled" if all(job.state is JobState.CANCELLED for job in not_ok) else "failed"
        reason = f": [{first.error.code}] {first.error.message}" if first.error else ""
        return self._payload(status, f"job {first.id} ended {first.state.value}{reason}", ended, first)

    def _payload(self, status: str, message: str, ended: dict[str, Job] | None = None,
                 failed: Job | None = None) -> dict[str, Any]:
        error = failed.error.model_dump() if failed is not None and failed.error is not None else None
        return {
            "status": status,
            "message": message,
            "job_ids": list(self.job_ids),
            "batch_ids": list(self.batch_ids),
            "job_id": self.job_ids[0] if self.job_ids else None,
            "states": {job_id: job.state.value for job_id, job in (ended or {}).items()},
            "error": error,
        }

    async def on_kill(self) -> None:
        """The user stopped the deferred task: cancel what is still queued or running."""
        if not self.cancel_on_kill:
            return
        async with self._hook().async_client() as client:
            cancelled = await cancel_jobs(client, self.job_ids, self.batch_ids)
        self.log.info("On kill: %d Overnight job(s) now cancelled", cancelled)


async def cancel_jobs(client: AsyncClient, job_ids: Sequence[str], batch_ids: Sequence[str] = ()) -> int:
    """Cancel the jobs and every unfinished job of the batches; returns how many are now cancelled.

    Jobs that already ended are left alone, so calling it twice is harmless.
    """
    targets = list(job_ids)
    for batch_id in batch_ids:
        for state in (JobState.QUEUED, JobState.RUNNING):
            async for job in client.iter_jobs(batch_id=batch_id, state=state, page_size=1000):
                targets.append(job.id)
    limit = asyncio.Semaphore(_CANCEL_CONCURRENCY)

    async def cancel(job_id: str) -> bool:
        async with limit:
            try:
                job = await client.cancel_job(job_id)
            except (ConflictError, NotFoundError):  # already ended, or gone
                return False
            return job.state is JobState.CANCELLED

    return sum(await asyncio.gather(*(cancel(job_id) for job_id in dict.fromkeys(targets))))
