"""The activities without a Temporal server (``ActivityEnvironment``).

The Overnight side is real: ``fake_server`` runs ``overnight serve`` on the deterministic
``EchoEngine`` ("hang" runs until cancelled, "slow:<s>" takes that long).
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from overnight import AsyncClient, JobState, LLMCall
from temporal_activities import OvernightActivities, SubmitLLMJobInput, WaitLLMJobInput, step_idempotency_key

from .helpers import unique, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")


def chat(text: str) -> LLMCall:
    return LLMCall(model="smollm2-135m").add_user_message(text)


def environment(**info: object) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, **{"workflow_id": unique("wf"), "workflow_run_id": unique("run"), **info})
    return env


@pytest.fixture
async def activities(fake_server):
    client = AsyncClient(api_key=fake_server.api_key, base_url=fake_server.url, max_retries=0)
    yield OvernightActivities(client, bridge_url="http://127.0.0.1:9/unused")
    await client.aclose()


async def test_submit_is_idempotent_per_step(activities):
    env = environment(activity_id="llm-1")
    first = await env.run(activities.submit_llm_job, SubmitLLMJobInput(call=chat("same step")))
    retried = await env.run(activities.submit_llm_job, SubmitLLMJobInput(call=chat("same step")))
    other_run = environment(activity_id="llm-1", workflow_id=env.info.workflow_id)
    again = await other_run.run(activities.submit_llm_job, SubmitLLMJobInput(call=chat("same step")))
    assert retried.id == first.id
    assert again.id != first.id  # a new run of the same workflow id is a new step
    assert first.idempotency_key == step_idempotency_key(env.info)
    assert first.metadata["temporal_workflow_id"] == env.info.workflow_id
    assert first.metadata["temporal_completion"] == "poll" and first.callback_url is None


async def test_wait_heartbeats_within_the_heartbeat_timeout(activities):
    job = await activities.client.submit_job(chat("slow:1.5"))
    beats: list[tuple[object, ...]] = []
    env = environment(heartbeat_timeout=timedelta(seconds=0.4))
    env.on_heartbeat = lambda *details: beats.append(details)
    finished = await env.run(activities.wait_llm_job, WaitLLMJobInput(job_id=job.id))
    assert finished.state is JobState.SUCCEEDED and finished.text == "echo: slow:1.5"
    # each long poll lasts at most half the heartbeat timeout (0.2 s) in a 1.5 s job
    assert len(beats) >= 5 and all(b == (job.id,) for b in beats)


async def test_wait_raises_a_final_error_when_the_job_fails(activities):
    job = await activities.client.submit_job(chat("fail-fatal"))
    with pytest.raises(ApplicationError) as raised:
        await environment().run(activities.wait_llm_job, WaitLLMJobInput(job_id=job.id))
    assert raised.value.type == "overnight.job_failed" and raised.value.non_retryable
    assert "context_length_exceeded" in raised.value.message


async def test_cancelling_wait_cancels_the_remote_job(activities):
    job = await activities.client.submit_job(chat("hang"))
    env = environment(heartbeat_timeout=timedelta(seconds=2))
    waiting = asyncio.create_task(env.run(activities.wait_llm_job, WaitLLMJobInput(job_id=job.id)))
    await wait_until(lambda: _state_is(activities, job.id, JobState.RUNNING), what="job running")
    env.cancel(ActivityCancellationDetails(cancel_requested=True))
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await activities.client.get_job(job.id)).state is JobState.CANCELLED


@pytest.mark.parametrize("reason", ["worker_shutdown", "timed_out", "paused"])
async def test_wait_leaves_the_job_alone_when_only_the_attempt_ends(activities, reason):
    job = await activities.client.submit_job(chat("hang"))
    try:
        env = environment(heartbeat_timeout=timedelta(seconds=2))
        waiting = asyncio.create_task(env.run(activities.wait_llm_job, WaitLLMJobInput(job_id=job.id)))
        await wait_until(lambda: _state_is(activities, job.id, JobState.RUNNING), what="job running")
        env.cancel(ActivityCancellationDetails(**{reason: True}))
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (await activities.client.get_job(job.id)).state is JobState.RUNNING
    finally:
        await activities.client.cancel_job(job.id)


async def test_push_modes_need_a_bridge(fake_server):
    async with AsyncClient(api_key=fake_server.api_key, base_url=fake_server.url) as client:
        without_bridge = OvernightActivities(client)
        with pytest.raises(ApplicationError) as raised:
            await environment().run(without_bridge.submit_llm_job, SubmitLLMJobInput(call=chat("x"), signal="job_completed"))
    assert raised.value.type == "overnight.bridge_not_configured" and raised.value.non_retryable


async def test_invalid_metadata_is_a_final_invalid_request(activities):
    crowded = chat("x")
    crowded.metadata = {f"k{i}": "v" for i in range(14)}  # with the step's 5 keys: over 16
    with pytest.raises(ApplicationError) as raised:
        await environment().run(activities.submit_llm_job, SubmitLLMJobInput(call=crowded))
    assert raised.value.type == "overnight.invalid_request" and raised.value.non_retryable


async def _state_is(activities: OvernightActivities, job_id: str, state: JobState) -> bool:
    return (await activities.client.get_job(job_id)).state is state
