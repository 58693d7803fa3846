"""A DAG of independent checks, run by ``tests/airflow/test_dag_checks.py`` with ``airflow dags test``
against an ``overnight serve`` on the deterministic engine (prompts pick its behaviour).

conf: ``job_id`` (a job submitted by the test, outside Airflow) and ``jsonl_path``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider.operators.llm_batch import LLMBatchOperator
from airflow_provider.operators.llm_job import LLMJobOperator
from airflow_provider.sensors.overnight import LLMJobSensor

FAIL_ONCE_MESSAGE = "failing once on purpose, after the trigger fired"


class FailOnceLLMJobOperator(LLMJobOperator):
    """Defers like its parent, then fails its first try in ``execute_complete``."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        value = super().execute_complete(context, event)
        if context["ti"].try_number == 1:
            raise RuntimeError(FAIL_ONCE_MESSAGE)
        return value


NO_RETRY_DELAY = {"retry_delay": timedelta(0)}

with DAG(
    dag_id="overnight_provider_checks",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    default_args={"retries": 0},
):
    FailOnceLLMJobOperator(task_id="reattach", prompt="slow:1", deferrable=True, retries=1, **NO_RETRY_DELAY)
    LLMJobOperator(task_id="bad_model", model="no-such-model", prompt="hello", deferrable=True, retries=3, **NO_RETRY_DELAY)
    LLMJobOperator(task_id="times_out", prompt="hang", deferrable=True, timeout=2, poll_interval=1)
    LLMJobOperator(task_id="blocking", prompt="slow:0.5", deferrable=False, output_format="job")
    LLMBatchOperator(
        task_id="batch_list",
        prompts=["one", "fail-fatal", {"prompt": "refused", "model": "no-such-model"}, {"messages": [{"role": "user", "content": "four"}]}],
        fail_on_item_error=False,
        deferrable=True,
    )
    LLMBatchOperator(task_id="batch_jsonl", jsonl_path="{{ dag_run.conf['jsonl_path'] }}", deferrable=True)
    LLMBatchOperator(task_id="batch_strict", prompts=["fine", "fail-fatal"], deferrable=True, retries=2, **NO_RETRY_DELAY)
    LLMJobSensor(task_id="sensor_deferred", job_id="{{ dag_run.conf['job_id'] }}", deferrable=True, timeout=120)
    LLMJobSensor(task_id="sensor_poke", job_id="{{ dag_run.conf['job_id'] }}", poke_interval=1, timeout=120)
