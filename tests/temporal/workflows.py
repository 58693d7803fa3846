"""Test-only workflows: ``TokenWorkflow`` runs a hand-written async activity that sends its task
token in the job's metadata, as a user's own activity would, and the bridge completes it by
token. ``RecheckWorkflow`` runs an async-mode step with a short ``recheck_every``."""

from __future__ import annotations

import base64
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from overnight import AsyncClient, Job, LLMCall
    from temporal_activities import llm_step
    from temporal_activities._types import META_TASK_TOKEN


class TokenActivities:
    def __init__(self, client: AsyncClient, bridge_url: str) -> None:
        self.client = client
        self.bridge_url = bridge_url

    @activity.defn(name="test.submit_with_task_token")
    async def submit(self, prompt: str) -> Job:
        token = base64.b64encode(activity.info().task_token).decode()
        call = LLMCall(model="smollm2-135m", callback_url=self.bridge_url, metadata={META_TASK_TOKEN: token})
        await self.client.submit_job(call.add_user_message(prompt))
        activity.raise_complete_async()


@workflow.defn(name="test.TokenWorkflow")
class TokenWorkflow:
    @workflow.run
    async def run(self, prompt: str) -> Job:
        return await workflow.execute_activity_method(
            TokenActivities.submit, prompt, start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@workflow.defn(name="test.RecheckWorkflow")
class RecheckWorkflow:
    """An async-mode step whose activity re-checks after 2 s when no webhook arrives."""

    @workflow.run
    async def run(self, prompt: str) -> Job:
        call = LLMCall(model="smollm2-135m").add_user_message(prompt)
        return await llm_step(call, mode="async", recheck_every=timedelta(seconds=2), step_id="recheck")
