"""Nightly summaries: one deferred LLM job per document, then the answers collected.

    fetch_documents ──> summarise (LLMJobOperator, mapped: one job per document) ──> collect

Copy this file into your dags folder, point the ``overnight_default`` connection at the service,
and try it once without a scheduler::

    export AIRFLOW_CONN_OVERNIGHT_DEFAULT='{"conn_type": "overnight", "host": "http://127.0.0.1:8000", "password": "ovn_..."}'
    airflow dags test example_nightly_summaries

Each ``summarise`` task submits its job and defers: no worker slot is held while the job waits
in the queue. A retry re-attaches to the job it already submitted, and marking the task failed
cancels it. The documents are public-domain paragraphs bundled with ``overnight``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_provider.operators.llm_job import LLMJobOperator


@dag(
    dag_id="example_nightly_summaries",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={"documents": Param(3, type="integer", minimum=1, description="how many documents to summarise")},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["overnight", "llm", "example"],
)
def example_nightly_summaries() -> None:
    @task
    def fetch_documents(params: dict[str, Any] | None = None) -> list[str]:
        text = files("overnight").joinpath("data/public_domain_paragraphs.txt").read_text(encoding="utf-8")
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        return paragraphs[: int((params or {}).get("documents", 3))]

    documents = fetch_documents()

    summaries = LLMJobOperator.partial(
        task_id="summarise",
        model="smollm2-135m",
        system_prompt="Summarise the user's text in one short sentence.",
        max_tokens=48,
        temperature=0.0,
        priority="batch",
        metadata={"pipeline": "nightly-summaries"},
        deferrable=True,
        timeout=timedelta(hours=6),
    ).expand(prompt=documents)

    @task
    def collect(documents: list[str], summaries: list[str]) -> list[dict[str, str]]:
        return [{"document": doc[:60], "summary": summary} for doc, summary in zip(documents, summaries, strict=True)]

    collect(documents, summaries.output)  # type: ignore[arg-type]  # XComArgs resolve to lists at run time


example_nightly_summaries()
