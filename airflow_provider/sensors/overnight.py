"""``LLMJobSensor``: wait for an Overnight job submitted elsewhere (a script, n8n, another DAG).

    done = LLMJobSensor(
        task_id="wait_for_review",
        job_id="{{ dag_run.conf['job_id'] }}",
        deferrable=True,          # long-polls in the triggerer; otherwise pokes every poke_interval
        timeout=6 * 3600,
    )                             # returns the job's completion text (output_format="result" | "job")

The sensor never cancels the job: it does not own it. A job that ends failed, cancelled or
expired fails the task (retryable errors allow Airflow's retries); the sensor's ``timeout``
raises ``AirflowSensorTimeout``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout

from overnight import Job, JobState, OvernightError

from ..exceptions import OvernightJobException, exception_for_error, exception_for_job
from ..hooks.overnight import OvernightHook
from ..operators._support import OutputFormat, job_output
from ..triggers.overnight import LLMJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["LLMJobSensor"]


class LLMJobSensor(BaseSensorOperator):
    """Succeed when the Overnight job ``job_id`` succeeds.

    :param job_id: the job to watch (templated).
    :param output_format: ``"text"``, ``"result"`` or ``"job"`` (what goes to XCom).
    :param overnight_conn_id: the ``overnight`` connection.
    :param deferrable: wait in the triggerer with long polls instead of poking from a worker.
    :param poll_interval: the long-poll window when deferred, in seconds.
    :param max_consecutive_errors: transient errors in a row the trigger tolerates.
    Other arguments (``poke_interval``, ``timeout``, ``mode``, ``soft_fail``) are the sensor's usual ones.
    """

    template_fields: Sequence[str] = ("job_id",)

    def __init__(
        self,
        *,
        job_id: str,
        output_format: OutputFormat = "text",
        overnight_conn_id: str = OvernightHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        max_consecutive_errors: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.output_format: OutputFormat = output_format
        self.overnight_conn_id = overnight_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_consecutive_errors = max_consecutive_errors

    @cached_property
    def hook(self) -> OvernightHook:
        return OvernightHook(self.overnight_conn_id)

    def _get(self) -> Job:
        try:
            return self.hook.get_conn().get_job(self.job_id)
        except OvernightError as exc:
            raise exception_for_error(exc, f"reading job {self.job_id}") from exc

    def _done(self, job: Job) -> Any:
        if job.state is JobState.SUCCEEDED:
            return job_output(job, self.output_format)
        raise exception_for_job(job)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        job = self._get()
        self.log.info("Overnight job %s is %s", job.id, job.state.value)
        if not job.state.is_terminal:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._done(job))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        job = self._get()
        if job.state.is_terminal:
            return self._done(job)
        timeout = timedelta(seconds=float(self.timeout))
        self.defer(
            trigger=LLMJobTrigger(
                job_ids=[self.job_id], conn_id=self.overnight_conn_id, deadline=time.time() + timeout.total_seconds(),
                poll_interval=self.poll_interval, max_consecutive_errors=self.max_consecutive_errors,
                cancel_on_kill=False,
            ),
            method_name="execute_complete",
            timeout=timeout,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(f"Overnight job {self.job_id} did not end within {self.timeout} s")
        if event["status"] == "error":
            raise OvernightJobException(f"lost track of Overnight job {self.job_id}: {event['message']}")
        return self._done(self._get())
