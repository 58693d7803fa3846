"""``LLMJobOperator``: one LLM call as an Overnight job; the task defers while the job waits.

    summary = LLMJobOperator(
        task_id="summarise",
        model="smollm2-135m",
        system_prompt="Summarise in one sentence.",
        prompt="{{ ti.xcom_pull('fetch') }}",
        max_tokens=64,
        deferrable=True,                 # default: [operators] default_deferrable
    )                                    # returns the completion text (output_format="result" | "job")

- Never pays twice: the job's idempotency key comes from dag_id/task_id/run_id/map_index, not the
  try number, so a retry re-attaches to the job (a fresh job only replaces a cancelled, expired or
  retryably failed one).
- Never orphans a job: ``on_kill`` (worker) and the trigger's ``on_kill`` (triggerer) cancel it,
  and so does a timeout, whether the operator's own ``timeout`` (in ``execute_complete``) or
  Airflow's deferral timeout (in ``resume_execution``).
- Pushes ``overnight_job_id`` and ``overnight_job_url`` to XCom before deferring; the
  "Overnight job" extra link points at the job.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

from airflow.sdk import BaseOperator, BaseOperatorLink, conf

from overnight import ConflictError, Job, JobState, LLMCall, NotFoundError, OvernightError, WaitTimeout

from ..exceptions import OvernightJobException, OvernightJobTimeout, exception_for_error, exception_for_job
from ..hooks.overnight import OvernightHook
from ..triggers.overnight import LLMJobTrigger
from ._support import (
    JOB_ID_XCOM_KEY,
    JOB_URL_XCOM_KEY,
    OutputFormat,
    attach_job,
    build_call,
    deadline_for,
    job_output,
    task_idempotency_key,
    task_metadata,
)

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

__all__ = ["LLMJobOperator", "OvernightJobLink"]

_TRIGGER_FAIL = "__fail__"
_TRIGGER_TIMEOUT = "Trigger timeout"


class OvernightJobLink(BaseOperatorLink):
    """The task's Overnight job (``GET /v1/jobs/{id}``), or its batch's job list.

    The operator pushes the link to XCom before deferring, so it shows while the job waits;
    Airflow stores it again when the task ends.
    """

    name = "Overnight job"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return getattr(operator, "job_url", None) or ""


class LLMJobOperator(BaseOperator):
    """Run one LLM call on Overnight and return its completion.

    :param prompt: the user message (templated).
    :param messages: OpenAI chat messages (templated); ``prompt`` is appended after them.
    :param system_prompt: a system message put first (templated).
    :param model: a model the service runs (templated).
    :param max_tokens, temperature, top_p, stop, seed, response_format: sampling, as in OpenAI.
    :param metadata: job metadata (templated); the task's identity is added as ``airflow_*`` keys.
    :param priority: ``interactive``, ``standard`` or ``batch``.
    :param completion_window: the job's own deadline on the service, e.g. ``"24h"``.
    :param max_attempts: engine attempts the service may make.
    :param output_format: what to return: ``"text"`` (the completion), ``"result"`` (the OpenAI-shaped
        response) or ``"job"`` (the whole job, with usage and the signed receipt).
    :param overnight_conn_id: the ``overnight`` connection.
    :param deferrable: free the worker slot while the job waits (the trigger long-polls).
    :param timeout: stop waiting after this long (seconds or timedelta); the job is then cancelled.
        ``execution_timeout`` bounds it too.
    :param poll_interval: the long-poll window of each wait request, in seconds.
    :param max_consecutive_errors: transient errors in a row the trigger tolerates.
    """

    template_fields: Sequence[str] = ("prompt", "messages", "system_prompt", "model", "metadata")
    template_fields_renderers = {"messages": "json", "metadata": "json"}
    operator_extra_links = (OvernightJobLink(),)
    ui_color = "#1f2a44"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        prompt: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        system_prompt: str | None = None,
        model: str = "smollm2-135m",
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        priority: str | None = None,
        completion_window: str | None = None,
        max_attempts: int | None = None,
        output_format: OutputFormat = "text",
        overnight_conn_id: str = OvernightHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: timedelta | float | None = None,
        poll_interval: float = 30.0,
        max_consecutive_errors: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output_format not in ("text", "result", "job"):
            raise ValueError(f"output_format must be 'text', 'result' or 'job', got {output_format!r}")
        self.prompt = prompt
        self.messages = messages
        self.system_prompt = system_prompt
        self.model = model
        self.sampling = {
            "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "stop": stop,
            "seed": seed, "response_format": response_format, "max_attempts": max_attempts,
        }
        self.metadata = metadata
        self.priority = priority
        self.completion_window = completion_window
        self.output_format: OutputFormat = output_format
        self.overnight_conn_id = overnight_conn_id
        self.deferrable = deferrable
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_consecutive_errors = max_consecutive_errors
        self.job_id: str | None = None
        self.job_url: str | None = None

    @cached_property
    def hook(self) -> OvernightHook:
        return OvernightHook(self.overnight_conn_id)

    def build_call(self, context: Context) -> LLMCall:
        """The request, from the rendered fields; the task's identity goes into its metadata."""
        return build_call(
            self.model, prompt=self.prompt, messages=self.messages, system_prompt=self.system_prompt,
            metadata={**task_metadata(context), **(self.metadata or {})}, priority=self.priority,
            completion_window=self.completion_window, **self.sampling,
        )

    def execute(self, context: Context) -> Any:
        client = self.hook.get_conn()
        job = attach_job(client, self.build_call(context), task_idempotency_key(context))
        self.job_id = job.id
        self.job_url = url = f"{client.base_url}/v1/jobs/{job.id}"
        context["ti"].xcom_push(key=JOB_ID_XCOM_KEY, value=job.id)
        context["ti"].xcom_push(key=JOB_URL_XCOM_KEY, value=url)
        context["ti"].xcom_push(key=OvernightJobLink().xcom_key, value=url)  # the link, while deferred
        self.log.info("Overnight job %s is %s (%s)", job.id, job.state.value, url)
        if job.state.is_terminal:
            return self._finish(job)
        deadline = deadline_for(self.timeout, self.execution_timeout)
        if self.deferrable:
            self.defer(
                trigger=LLMJobTrigger(
                    job_ids=[job.id], conn_id=self.overnight_conn_id, deadline=deadline,
                    poll_interval=self.poll_interval, max_consecutive_errors=self.max_consecutive_errors,
                ),
                method_name="execute_complete",
                timeout=self.execution_timeout,
            )
        return self._wait_here(client, job.id, deadline)

    def _wait_here(self, client: Any, job_id: str, deadline: float | None) -> Any:
        remaining = None if deadline is None else max(0.0, deadline - time.time())
        try:
            job = client.wait_for_job(job_id, timeout=remaining, poll_seconds=self.poll_interval)
        except WaitTimeout:
            self._cancel(job_id, "the operator's timeout passed")
            raise OvernightJobTimeout(f"Overnight job {job_id} did not end within the timeout; it was cancelled") from None
        except OvernightError as exc:
            raise exception_for_error(exc, f"waiting for job {job_id}") from exc
        return self._finish(job)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: return the output, or raise (a timeout cancels the job first)."""
        self.job_id = job_id = event["job_id"]
        self.job_url = f"{self.hook.base_url}/v1/jobs/{job_id}"
        status = event["status"]
        if status == "timeout":
            self._cancel(job_id, "the operator's timeout passed")
            raise OvernightJobTimeout(f"Overnight job {job_id} did not end within the timeout; it was cancelled")
        if status == "error":
            raise OvernightJobException(f"lost track of Overnight job {job_id}: {event['message']}")
        try:
            job = self.hook.get_conn().get_job(job_id)
        except OvernightError as exc:
            raise exception_for_error(exc, f"reading job {job_id}") from exc
        return self._finish(job)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's own deferral timeout resumes the task to fail it: cancel the job first."""
        if next_method == _TRIGGER_FAIL and (next_kwargs or {}).get("error") == _TRIGGER_TIMEOUT:
            ti = context["ti"]
            job_id = ti.xcom_pull(task_ids=ti.task_id, key=JOB_ID_XCOM_KEY, map_indexes=ti.map_index)
            if job_id:
                self._cancel(job_id, "the deferral timed out")
        return super().resume_execution(next_method, next_kwargs, context)

    def _finish(self, job: Job) -> Any:
        if job.state is not JobState.SUCCEEDED:
            raise exception_for_job(job)
        usage = job.usage
        self.log.info("Overnight job %s succeeded (%s tokens)", job.id, usage.total_tokens if usage else "?")
        return job_output(job, self.output_format)

    def _cancel(self, job_id: str, why: str) -> None:
        try:
            job = self.hook.get_conn().cancel_job(job_id)
            self.log.info("Cancelled Overnight job %s (%s): now %s", job_id, why, job.state.value)
        except (ConflictError, NotFoundError) as exc:
            self.log.info("Overnight job %s was not cancelled (%s): %s", job_id, why, exc)

    def on_kill(self) -> None:
        """The task was killed on the worker: cancel its job."""
        if self.job_id:
            self._cancel(self.job_id, "the task was killed")
