"""The completion bridge against a real Temporal dev server and a fake-engine Overnight server.

Some tests hand signed deliveries to ``bridge.handle`` themselves, to control duplicates and
ordering. The others let ``overnight serve`` deliver over HTTP to the served bridge.
"""

from __future__ import annotations

import asyncio
import base64
import time

import httpx
import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from overnight import Job, JobState
from overnight._webhooks import build_event, event_body, new_message_id, sign_webhook
from temporal_activities import BridgeOutcome, CompletionBridge
from temporal_activities.examples.summarize import SummarizeRequest, SummarizeWorkflow

from .helpers import in_process_worker, unique, wait_until
from .workflows import TokenActivities, TokenWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOWHERE = "http://127.0.0.1:9/discard"  # Overnight's own deliveries fail; the test delivers


def signed(job: Job, secret: str, message_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = event_body(build_event(f"job.{job.state.value}", job.model_dump(mode="json"))).encode()
    return body, sign_webhook([secret], message_id or new_message_id(), int(time.time()), body)


async def finished_job(harness, workflow_id: str) -> Job:
    async def probe() -> Job | None:
        jobs = await harness.jobs(temporal_workflow_id=workflow_id)
        return jobs[0] if jobs and jobs[0].state.is_terminal else None

    return await wait_until(probe, what=f"the job of {workflow_id} to finish")


async def test_duplicate_deliveries_complete_the_activity_once(temporal, fake_server):
    secret = fake_server.webhook_secret
    async with in_process_worker(temporal.client, fake_server, deliver_to=NOWHERE) as harness:
        workflow_id = unique("dup")
        handle = await temporal.client.start_workflow(
            SummarizeWorkflow.run, SummarizeRequest(text="deliver me twice", instruction=""), id=workflow_id,
            task_queue=harness.task_queue,
        )
        job = await finished_job(harness, workflow_id)
        body, headers = signed(job, secret)
        together = await asyncio.gather(harness.bridge.handle(body, headers), harness.bridge.handle(body, headers))
        again = await harness.bridge.handle(body, headers)
        # the same event under a new webhook-id reaches Temporal, which knows the activity is done
        late = await harness.bridge.handle(*signed(job, secret))
        result = await handle.result()
    assert sorted(together) == [(200, BridgeOutcome.COMPLETED), (200, BridgeOutcome.DUPLICATE)]
    assert again == (200, BridgeOutcome.DUPLICATE)
    assert late == (200, BridgeOutcome.NOT_FOUND)
    assert result.summary == "echo: deliver me twice" and result.job_id == job.id
    assert harness.bridge.counts[BridgeOutcome.COMPLETED] == 1


async def test_bad_signatures_and_unknown_targets_are_safe(temporal, fake_server):
    bridge = CompletionBridge(temporal.client, fake_server.webhook_secret)
    async with _overnight(fake_server) as client:
        job = await client.wait_for_job(await client.send_job(_call("unknown target")))
    body, headers = signed(job, fake_server.webhook_secret)
    assert await bridge.handle(body, {**headers, "webhook-signature": "v1,AAAA"}) == (400, BridgeOutcome.REJECTED)
    assert await bridge.handle(body.replace(b"echo", b"ECHO"), headers) == (400, BridgeOutcome.REJECTED)
    other_secret = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert await bridge.handle(*signed(job, other_secret)) == (400, BridgeOutcome.REJECTED)
    # a job without Temporal metadata, another namespace, another event or a body that is no
    # job: acknowledged and ignored
    assert await bridge.handle(body, headers) == (200, BridgeOutcome.IGNORED)
    for event in (build_event("batch.completed", {"id": "batch_1"}), build_event("job.succeeded", {"id": "x"})):
        raw = event_body(event).encode()
        assert await bridge.handle(raw, sign_webhook([fake_server.webhook_secret], new_message_id(),
                                                     int(time.time()), raw)) == (200, BridgeOutcome.IGNORED)
    elsewhere = job.model_copy(update={"metadata": {"temporal_completion": "activity", "temporal_namespace": "other",
                                                    "temporal_workflow_id": "w", "temporal_activity_id": "1"}})
    assert await bridge.handle(*signed(elsewhere, fake_server.webhook_secret)) == (200, BridgeOutcome.IGNORED)
    # targets Temporal does not know: acknowledged (200), so Overnight stops delivering
    for meta in (
        {"temporal_completion": "activity", "temporal_workflow_id": unique("nope"), "temporal_run_id": "",
         "temporal_activity_id": "llm-1"},
        {"temporal_completion": "signal", "temporal_workflow_id": unique("nope")},
        {"temporal_task_token": base64.b64encode(b"not a task token").decode()},
    ):
        ghost = job.model_copy(update={"metadata": meta})
        assert await bridge.handle(*signed(ghost, fake_server.webhook_secret)) == (200, BridgeOutcome.NOT_FOUND), meta
    assert bridge.counts[BridgeOutcome.REJECTED] == 3 and bridge.counts[BridgeOutcome.NOT_FOUND] == 3


async def test_bridge_answers_http(temporal, fake_server):
    async with in_process_worker(temporal.client, fake_server) as harness, httpx.AsyncClient() as http:
        refused = await http.post(harness.bridge_url, content=b"{}", headers={"webhook-id": "msg_x"})
        wrong_method = await http.get(harness.bridge_url)
    assert refused.status_code == 400 and refused.json() == {"outcome": "rejected"}
    assert wrong_method.status_code == 405


@pytest.mark.parametrize("mode", ["async", "signal"])
async def test_a_failed_job_fails_the_step_for_good(temporal, fake_server, mode):
    async with in_process_worker(temporal.client, fake_server) as harness:
        with pytest.raises(WorkflowFailureError) as raised:
            await temporal.client.execute_workflow(
                SummarizeWorkflow.run, SummarizeRequest(text="fail-fatal", instruction="", mode=mode),
                id=unique(f"fail-{mode}"), task_queue=harness.task_queue,
            )
        outcome = BridgeOutcome.FAILED if mode == "async" else BridgeOutcome.SIGNALLED
        assert harness.bridge.counts[outcome] == 1
    error = _application_error(raised.value)
    assert error.type == "overnight.job_failed" and error.non_retryable
    assert "context_length_exceeded" in error.message
    if mode == "async":
        activity_error = _first(raised.value, ActivityError)
        assert activity_error.retry_state is RetryState.NON_RETRYABLE_FAILURE


async def test_completes_by_task_token(temporal, fake_server):
    async with _overnight(fake_server) as client:
        tokens = TokenActivities(client, bridge_url="")
        async with in_process_worker(temporal.client, fake_server, workflows=[TokenWorkflow],
                                     activities=[tokens.submit]) as harness:
            tokens.bridge_url = harness.bridge_url
            job = await temporal.client.execute_workflow(
                TokenWorkflow.run, "by token", id=unique("token"), task_queue=harness.task_queue,
            )
            counts = dict(harness.bridge.counts)
    assert job.state is JobState.SUCCEEDED and job.text == "echo: by token"
    assert "temporal_task_token" in job.metadata and counts == {BridgeOutcome.COMPLETED: 1}


# -- helpers ---------------------------------------------------------------------------------
def _call(text: str):
    from overnight import LLMCall

    return LLMCall(model="smollm2-135m").add_user_message(text)


def _overnight(server):
    from overnight import AsyncClient

    return AsyncClient(api_key=server.api_key, base_url=server.url)


def _first(error: BaseException, kind: type) -> BaseException:
    while error is not None and not isinstance(error, kind):
        error = getattr(error, "cause", None) or error.__cause__
    assert error is not None, f"no {kind.__name__} in the cause chain"
    return error


def _application_error(error: BaseException) -> ApplicationError:
    found = _first(error, ApplicationError)
    assert isinstance(found, ApplicationError)
    return found
