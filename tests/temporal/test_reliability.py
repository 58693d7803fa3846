"""Failure modes, run in each completion mode: worker restart while the job is queued, a
transient 503 at submit, workflow cancellation, the step timeout, and worker slots.

The Overnight side is ``overnight serve`` on the deterministic ``EchoEngine``. A "hang" prompt
keeps a job running until it is cancelled, and 16 such blockers fill the engine, so a job
stays queued for as long as the test needs. Each test uses its own tenant, so "the service
holds exactly one job" means that tenant's whole job list.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta

import httpx
import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError

from overnight import AsyncClient, Job, JobState
from temporal_activities.examples.summarize import SummarizeRequest, SummarizeWorkflow
from tests.live import create_key, free_port

from .helpers import Blockers, WorkerProcess, counting_tuner, in_process_worker, unique, wait_until
from .workflows import RecheckWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODES = ["async", "signal", "poll"]


@pytest.fixture
def tenant(fake_server) -> dict[str, str]:
    """A fresh tenant on the fake server: ``api_key`` and ``webhook_secret``."""
    created = create_key(fake_server.data_dir, unique("tenant"))
    return {"api_key": created["api_key"], "webhook_secret": created["webhook_secret"]}


@pytest.fixture
async def tenant_client(fake_server, tenant):
    async with AsyncClient(api_key=tenant["api_key"], base_url=fake_server.url) as client:
        yield client


async def all_jobs(client: AsyncClient) -> list[Job]:
    return [job async for job in client.iter_jobs()]


async def jobs_in(client: AsyncClient, state: JobState, count: int) -> list[Job] | None:
    jobs = await all_jobs(client)
    return jobs if len(jobs) == count and all(job.state is state for job in jobs) else None


async def pending_activity_started(handle: WorkflowHandle, activity_type: str) -> bool:
    description = await handle.describe()
    return any(
        a.activity_type.name == activity_type and a.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for a in description.raw_description.pending_activities
    )


@pytest.mark.parametrize("mode", MODES)
async def test_worker_restart_while_the_job_is_queued(temporal, fake_server, tenant, tenant_client, mode):
    address = temporal.client.service_client.config.target_host
    task_queue, bridge_port = unique("restart"), free_port()
    async with Blockers(fake_server, fake_server.api_key) as blockers:
        with WorkerProcess(address, fake_server, task_queue, bridge_port, **tenant) as first:
            handle = await temporal.client.start_workflow(
                SummarizeWorkflow.run, SummarizeRequest(text="after restart", instruction="", mode=mode),
                id=unique(f"restart-{mode}"), task_queue=task_queue,
            )
            (queued,) = await wait_until(lambda: jobs_in(tenant_client, JobState.QUEUED, 1), what="the step's job queued")
            if mode == "poll":  # stop the worker while it holds the long poll
                await wait_until(lambda: pending_activity_started(handle, "overnight.wait_llm_job"), what="wait_llm_job")
            assert first.stop(signal.SIGTERM) == 0
        with WorkerProcess(address, fake_server, task_queue, bridge_port, **tenant):
            await blockers.release()  # the engine frees up, and the queued job runs now
            result = await asyncio.wait_for(handle.result(), timeout=60)
    (job,) = await all_jobs(tenant_client)
    assert job.id == queued.id == result.job_id
    assert job.state is JobState.SUCCEEDED and len(job.attempts) == 1
    assert result.summary == job.text == "echo: after restart"


class LoseFirstSubmit(httpx.AsyncBaseTransport):
    """Lets the first ``POST /v1/jobs`` reach the server (so it creates the job), then answers
    the client with a gateway's 503 and ``Retry-After: 2``. Later requests pass unchanged."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.submits: list[tuple[str, int, int, float]] = []  # key, server status, client status, time

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/v1/jobs":
            key = request.headers["idempotency-key"]
            if not self.submits:
                await response.aread()
                await response.aclose()
                self.submits.append((key, response.status_code, 503, time.monotonic()))
                return httpx.Response(503, headers={"retry-after": "2"}, text="upstream unavailable")
            self.submits.append((key, response.status_code, response.status_code, time.monotonic()))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("mode", MODES)
async def test_a_retry_after_a_transient_503_attaches_to_the_same_job(temporal, fake_server, tenant, tenant_client,
                                                                      mode):
    transport = LoseFirstSubmit()
    async with Blockers(fake_server, fake_server.api_key) as blockers, httpx.AsyncClient(transport=transport) as http:
        async with in_process_worker(temporal.client, fake_server, http_client=http, **tenant) as harness:
            workflow_id = unique(f"retry-{mode}")
            handle = await temporal.client.start_workflow(
                SummarizeWorkflow.run, SummarizeRequest(text="once", instruction="", mode=mode), id=workflow_id,
                task_queue=harness.task_queue,
            )
            # the job stays queued behind the blockers until the activity has retried its submit
            await wait_until(_equals(lambda: len(transport.submits), 2), what="the retried submit")
            await blockers.release()
            result = await handle.result()
    (first, second) = transport.submits
    assert first[:3] == (first[0], 201, 503)  # created on the server, lost on the way back
    assert second[:3] == (first[0], 200, 200)  # same key: the server replays the same job
    assert second[3] - first[3] >= 2.0  # Retry-After became the activity's next_retry_delay
    (job,) = await all_jobs(tenant_client)
    assert job.id == result.job_id and result.summary == "echo: once"
    submitter = workflow_id if mode != "signal" else job.metadata["temporal_workflow_id"]
    started = [e for e in await _history(temporal, submitter) if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    attempt = started[0].activity_task_started_event_attributes
    assert attempt.attempt == 2
    assert attempt.last_failure.application_failure_info.type == "overnight.service_error"


async def test_a_lost_webhook_is_recovered_by_the_recheck_retry(temporal, fake_server, tenant, tenant_client):
    """Async mode, with every webhook lost: the activity times out after ``recheck_every``, and the
    retry attaches to the finished job and returns it."""
    async with in_process_worker(temporal.client, fake_server, deliver_to="http://127.0.0.1:9/lost",
                                 workflows=[RecheckWorkflow], **tenant) as harness:
        workflow_id = unique("recheck")
        job = await temporal.client.execute_workflow(RecheckWorkflow.run, "no webhook", id=workflow_id,
                                                     task_queue=harness.task_queue)
        assert dict(harness.bridge.counts) == {}
    assert job.text == "echo: no webhook" and [j.id for j in await all_jobs(tenant_client)] == [job.id]
    started = [e for e in await _history(temporal, workflow_id) if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    attempt = started[0].activity_task_started_event_attributes
    assert attempt.attempt == 2 and attempt.last_failure.HasField("timeout_failure_info")


@pytest.mark.parametrize("mode", MODES)
async def test_cancelling_the_workflow_cancels_the_remote_job(temporal, fake_server, tenant, tenant_client, mode):
    async with in_process_worker(temporal.client, fake_server, **tenant) as harness:
        handle = await temporal.client.start_workflow(
            SummarizeWorkflow.run, SummarizeRequest(text="hang", instruction="", mode=mode), id=unique(f"cancel-{mode}"),
            task_queue=harness.task_queue,
        )
        (running,) = await wait_until(lambda: jobs_in(tenant_client, JobState.RUNNING, 1), what="the job running")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as raised:
            await handle.result()
    assert isinstance(raised.value.cause, CancelledError)
    job = await tenant_client.get_job(running.id)
    assert job.state is JobState.CANCELLED and job.error is not None and job.error.code == "cancelled"


@pytest.mark.parametrize("mode", MODES)
async def test_the_step_timeout_cancels_the_remote_job(temporal, fake_server, tenant, tenant_client, mode):
    async with in_process_worker(temporal.client, fake_server, **tenant) as harness:
        with pytest.raises(WorkflowFailureError) as raised:
            await temporal.client.execute_workflow(
                SummarizeWorkflow.run,
                SummarizeRequest(text="hang", instruction="", mode=mode, timeout=timedelta(seconds=2)),
                id=unique(f"timeout-{mode}"), task_queue=harness.task_queue,
            )
    error = raised.value.cause
    while error is not None and not isinstance(error, ApplicationError):
        error = error.cause
    assert isinstance(error, ApplicationError)
    assert error.type == "overnight.step_timeout" and error.non_retryable
    (job,) = await all_jobs(tenant_client)
    assert job.state is JobState.CANCELLED


async def test_async_completion_holds_no_worker_slot_while_jobs_wait(temporal, fake_server, tenant, tenant_client):
    tuner, slots = counting_tuner(activity_slots=50)
    async with in_process_worker(temporal.client, fake_server, tuner=tuner, **tenant) as harness:
        handles = [
            await temporal.client.start_workflow(
                SummarizeWorkflow.run, SummarizeRequest(text="hang", instruction="", mode=mode),
                id=unique(f"slots-{mode}"), task_queue=harness.task_queue,
            )
            for mode in ["async"] * 8 + ["poll"] * 3
        ]
        try:
            await wait_until(lambda: jobs_in(tenant_client, JobState.RUNNING, 11), what="11 jobs running")
            for handle in handles[:8]:
                assert await pending_activity_started(handle, "overnight.llm_call")
            # 11 steps wait on running jobs: only the 3 polling activities occupy a slot
            await wait_until(_equals(lambda: slots.in_use, 3), timeout=10, what="3 slots in use")
        finally:
            for handle in handles:
                await handle.cancel()
            await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    assert {job.state for job in await all_jobs(tenant_client)} == {JobState.CANCELLED}


def _equals(read, expected):
    async def probe() -> bool:
        return read() == expected

    return probe


async def _history(temporal, workflow_id: str):
    return [event async for event in temporal.client.get_workflow_handle(workflow_id).fetch_history_events()]
