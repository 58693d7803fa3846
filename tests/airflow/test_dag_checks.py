"""The operators and the sensor inside real Airflow: ``airflow dags test overnight_provider_checks``
(SQLite metadata DB, triggers run inline) against ``overnight serve`` on the deterministic engine.

One DAG run holds every check; each test reads its task instance, XComs and the service's jobs.
"""

from __future__ import annotations

import json
from typing import Iterator

import pytest

from overnight import Client, Job, JobState, LLMCall
from tests.airflow.conftest import Airflow, DagRun, connection_json
from tests.airflow.dags.overnight_provider_checks import FAIL_ONCE_MESSAGE
from tests.live import OvernightProcess

DAG_ID = "overnight_provider_checks"


@pytest.fixture(scope="module")
def client(fake_server: OvernightProcess) -> Iterator[Client]:
    with Client(api_key=fake_server.api_key, base_url=fake_server.url) as client:
        yield client


@pytest.fixture(scope="module")
def outside_job(client: Client) -> str:
    """A job submitted by a plain script, for the sensors to watch."""
    return client.send_job(LLMCall(model="smollm2-135m").add_user_message("slow:1"))


@pytest.fixture(scope="module")
def run(airflow: Airflow, fake_server: OvernightProcess, outside_job: str, tmp_path_factory: pytest.TempPathFactory) -> DagRun:
    jsonl = tmp_path_factory.mktemp("jsonl") / "prompts.jsonl"
    jsonl.write_text('"alpha"\n{"prompt": "beta", "max_tokens": 5}\n\n"gamma"\n')
    return airflow.dags_test(DAG_ID, conn=connection_json(fake_server), conf={"job_id": outside_job, "jsonl_path": str(jsonl)})


def jobs_of(client: Client, run: DagRun, task_id: str) -> list[Job]:
    return list(client.iter_jobs(metadata={"airflow_dag_id": DAG_ID, "airflow_run_id": run.run_id, "airflow_task_id": task_id}))


def test_retry_reattaches_to_the_one_job(run: DagRun, client: Client) -> None:
    ti = run.task("reattach")
    assert (ti["state"], ti["try_number"]) == ("success", 2)
    assert [t["state"] for t in run.tries("reattach")] == ["failed"]  # try 1: failed in execute_complete
    assert FAIL_ONCE_MESSAGE in run.output  # so try 1 had deferred and resumed
    (job,) = jobs_of(client, run, "reattach")  # the service holds exactly one job for it
    assert job.state is JobState.SUCCEEDED
    assert run.xcom("reattach") == job.text == "echo: slow:1"
    assert run.xcom("reattach", "overnight_job_id") == job.id
    assert run.xcom("reattach", "overnight_job_url").endswith(f"/v1/jobs/{job.id}")
    assert run.xcom("reattach", "_link_OvernightJobLink") == run.xcom("reattach", "overnight_job_url")


def test_bad_model_fails_at_once_with_a_clear_message(run: DagRun, client: Client) -> None:
    ti = run.task("bad_model")
    assert (ti["state"], ti["try_number"]) == ("failed", 1)  # retries=3, none used
    assert run.tries("bad_model") == []
    assert "OvernightJobFatalException" in run.output
    assert "[model_not_found] Unknown model 'no-such-model'" in run.output
    assert jobs_of(client, run, "bad_model") == []


def test_operator_timeout_cancels_the_job(run: DagRun, client: Client) -> None:
    ti = run.task("times_out")
    assert ti["state"] == "failed"
    assert "OvernightJobTimeout" in run.output
    (job,) = jobs_of(client, run, "times_out")
    assert job.state is JobState.CANCELLED


def test_blocking_mode_returns_the_whole_job(run: DagRun, client: Client) -> None:
    assert run.task("blocking")["state"] == "success"
    value = run.xcom("blocking")
    (job,) = jobs_of(client, run, "blocking")
    assert value["id"] == job.id and value["state"] == "succeeded"
    assert value["result"]["choices"][0]["message"]["content"] == "echo: slow:0.5"
    assert value["receipt"]["signature"]


def test_batch_keeps_input_order_and_reports_item_failures(run: DagRun, client: Client) -> None:
    assert run.task("batch_list")["state"] == "success"
    assert run.xcom("batch_list") == ["echo: one", None, None, "echo: four"]
    failures = run.xcom("batch_list", "overnight_failures")
    assert [(f["index"], f["state"]) for f in failures] == [(1, "failed"), (2, "refused")]
    assert failures[0]["error"]["code"] == "context_length_exceeded"
    assert failures[1]["error"]["code"] == "model_not_found"
    jobs = jobs_of(client, run, "batch_list")
    assert len(jobs) == 3 and len({job.batch_id for job in jobs}) == 1  # one bulk request, one batch


def test_batch_from_a_jsonl_file(run: DagRun) -> None:
    assert run.task("batch_jsonl")["state"] == "success"
    assert run.xcom("batch_jsonl") == ["echo: alpha", "echo: beta", "echo: gamma"]


def test_batch_item_failure_fails_the_task_without_retries(run: DagRun) -> None:
    ti = run.task("batch_strict")
    assert (ti["state"], ti["try_number"]) == ("failed", 1)
    assert "OvernightBatchFatalException" in run.output
    assert "1 of 2 items did not succeed: item 1 failed [context_length_exceeded]" in run.output


@pytest.mark.parametrize("task_id", ["sensor_deferred", "sensor_poke"])
def test_sensor_waits_for_a_job_submitted_elsewhere(run: DagRun, client: Client, outside_job: str, task_id: str) -> None:
    assert run.task(task_id)["state"] == "success"
    assert run.xcom(task_id) == "echo: slow:1"
    assert client.get_job(outside_job).state is JobState.SUCCEEDED  # watched, never cancelled


def test_every_task_ran_in_one_dag_run(run: DagRun) -> None:
    failing = {"bad_model", "times_out", "batch_strict"}
    assert run.state == "failed"  # three tasks fail on purpose
    states = run.states()
    assert len(states) == 9
    assert {task: state for task, state in states.items() if task in failing} == dict.fromkeys(failing, "failed")
    assert {state for task, state in states.items() if task not in failing} == {"success"}, json.dumps(states)
