"""``LLMBatchOperator``: many LLM calls in one bulk request; the task defers once for them all.

    answers = LLMBatchOperator(
        task_id="tag_rows",
        prompts=make_prompts(),            # a list, an XComArg, or jsonl_path="/data/prompts.jsonl"
        system_prompt="Answer with one word.",
        max_tokens=8,
        fail_on_item_error=False,          # failed items become None; details in XCom "overnight_failures"
    )                                      # returns the outputs in input order

Each item is a string (the user prompt) or an object with any of ``prompt``, ``messages``,
``system_prompt``, ``model``, ``metadata``, ``priority``, ``completion_window`` and the sampling
fields; a JSONL file holds one item per line. The whole list goes in ``POST /v1/jobs/bulk``
(1,000 per request) under the task instance's idempotency key, so a retry re-attaches to every
job; jobs that died (cancelled, expired, retryably failed) are replaced by one more bulk request.
The trigger waits on the batch, not on each job: a few requests per long-poll window in all.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from airflow.sdk import BaseOperator, conf

from overnight import Job, JobState, LLMCall, OvernightError, WaitTimeout

from ..exceptions import (
    OvernightBatchException,
    OvernightBatchFatalException,
    OvernightJobException,
    OvernightJobFatalException,
    OvernightJobTimeout,
    exception_for_error,
    retry_may_help,
)
from ..hooks.overnight import OvernightHook
from ..triggers.overnight import LLMJobTrigger
from ._support import (
    BATCH_XCOM_KEY,
    JOB_URL_XCOM_KEY,
    SAMPLING_PARAMS,
    OutputFormat,
    attach_batch,
    build_call,
    cancel_unfinished,
    deadline_for,
    job_output,
    task_idempotency_key,
    task_metadata,
)
from .llm_job import OvernightJobLink

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["LLMBatchOperator"]

FAILURES_XCOM_KEY = "overnight_failures"
_ITEM_FIELDS = {"prompt", "messages", "system_prompt", "model", "metadata", "priority", "completion_window", *SAMPLING_PARAMS}


class LLMBatchOperator(BaseOperator):
    """Run a list of LLM calls on Overnight as one batch; return their outputs in input order.

    :param prompts: the items (templated; a list, or an XComArg that resolves to one).
    :param jsonl_path: a JSONL file of items instead (templated).
    :param fail_on_item_error: raise when any item did not succeed (after all have ended). When
        False, such items return None and ``overnight_failures`` (XCom) lists
        ``{index, state, error, job_id}``.
    The other parameters are those of :class:`LLMJobOperator`, applied to every item unless
    the item sets its own.
    """

    template_fields: Sequence[str] = ("prompts", "jsonl_path", "system_prompt", "model", "metadata")
    template_fields_renderers = {"prompts": "json", "metadata": "json"}
    operator_extra_links = (OvernightJobLink(),)
    ui_color = "#1f2a44"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        prompts: list[str | dict[str, Any]] | None = None,
        jsonl_path: str | None = None,
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
        fail_on_item_error: bool = True,
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
        self.prompts = prompts
        self.jsonl_path = jsonl_path
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
        self.fail_on_item_error = fail_on_item_error
        self.overnight_conn_id = overnight_conn_id
        self.deferrable = deferrable
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_consecutive_errors = max_consecutive_errors
        self.job_url: str | None = None

    @cached_property
    def hook(self) -> OvernightHook:
        return OvernightHook(self.overnight_conn_id)

    def load_items(self) -> list[dict[str, Any]]:
        """The rendered items, each as a dict; refuses malformed input with a fatal error."""
        if (self.prompts is None) == (self.jsonl_path is None):
            raise OvernightJobFatalException("give exactly one of prompts and jsonl_path")
        raw: Any
        if self.jsonl_path is not None:
            lines = Path(self.jsonl_path).read_text(encoding="utf-8").splitlines()
            try:
                raw = [json.loads(line) for line in lines if line.strip()]
            except ValueError as exc:
                raise OvernightJobFatalException(f"{self.jsonl_path} is not JSONL: {exc}") from exc
        else:
            raw = self.prompts
            if isinstance(raw, str):  # a template rendered to text: accept a JSON list
                try:
                    raw = json.loads(raw)
                except ValueError as exc:
                    raise OvernightJobFatalException("prompts must be a list (or a JSON list)") from exc
        if not isinstance(raw, (list, tuple)):
            raise OvernightJobFatalException(f"prompts must be a list, got {type(raw).__name__}")
        items = [item if isinstance(item, dict) else {"prompt": str(item)} for item in raw]
        for index, item in enumerate(items):
            if unknown := set(item) - _ITEM_FIELDS:
                raise OvernightJobFatalException(f"item {index} has unknown fields {sorted(unknown)}")
        return items

    def build_calls(self, context: Context, items: list[dict[str, Any]]) -> list[LLMCall]:
        defaults = {
            "model": self.model, "system_prompt": self.system_prompt, "priority": self.priority,
            "completion_window": self.completion_window, **self.sampling,
        }
        shared_metadata = {**task_metadata(context), **(self.metadata or {})}
        calls = []
        for index, item in enumerate(items):
            fields = {**defaults, **{k: v for k, v in item.items() if k != "metadata"}}
            metadata = {**shared_metadata, **(item.get("metadata") or {}), "airflow_item": str(index)}
            try:
                calls.append(build_call(fields.pop("model"), metadata=metadata, **fields))
            except OvernightJobFatalException as exc:
                raise OvernightJobFatalException(f"item {index}: {exc}") from exc
        return calls

    def execute(self, context: Context) -> Any:
        items = self.load_items()
        if not items:
            return []
        client = self.hook.get_conn()
        results = attach_batch(client, self.build_calls(context, items), task_idempotency_key(context))
        record: dict[str, Any] = {
            "job_ids": [r.job.id if r.job else None for r in results],
            "refused": {str(r.index): r.error.model_dump() for r in results if r.error is not None},
            "batch_ids": sorted({r.job.batch_id for r in results if r.job is not None and r.job.batch_id}),
        }
        ti = context["ti"]
        ti.xcom_push(key=BATCH_XCOM_KEY, value=record)
        if record["batch_ids"]:
            self.job_url = url = self._batch_url(record)
            ti.xcom_push(key=JOB_URL_XCOM_KEY, value=url)
            ti.xcom_push(key=OvernightJobLink().xcom_key, value=url)
        jobs = [r.job for r in results if r.job is not None]
        self.log.info("Overnight batch %s: %d jobs, %d refused", record["batch_ids"], len(jobs), len(record["refused"]))
        if all(job.state.is_terminal for job in jobs):
            return self._collect(context, record)
        deadline = deadline_for(self.timeout, self.execution_timeout)
        if self.deferrable:
            self.defer(
                trigger=LLMJobTrigger(
                    batch_ids=record["batch_ids"], conn_id=self.overnight_conn_id, deadline=deadline,
                    poll_interval=self.poll_interval, max_consecutive_errors=self.max_consecutive_errors,
                ),
                method_name="execute_complete",
                timeout=self.execution_timeout,
            )
        for job in jobs:
            remaining = None if deadline is None else max(0.0, deadline - time.time())
            try:
                client.wait_for_job(job.id, timeout=remaining, poll_seconds=self.poll_interval)
            except WaitTimeout:
                self._timed_out(record)
            except OvernightError as exc:
                raise exception_for_error(exc, f"waiting for job {job.id}") from exc
        return self._collect(context, record)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: read every item's outcome (a timeout cancels what is left)."""
        ti = context["ti"]
        record = ti.xcom_pull(task_ids=ti.task_id, key=BATCH_XCOM_KEY, map_indexes=ti.map_index)
        self.job_url = self._batch_url(record)
        if event["status"] == "timeout":
            self._timed_out(record)
        if event["status"] == "error":
            raise OvernightJobException(f"lost track of Overnight batch {record['batch_ids']}: {event['message']}")
        return self._collect(context, record)

    def _batch_url(self, record: dict[str, Any]) -> str:
        return f"{self.hook.base_url}/v1/jobs?batch_id={record['batch_ids'][-1]}" if record["batch_ids"] else ""

    def _timed_out(self, record: dict[str, Any]) -> None:
        cancelled = cancel_unfinished(self.hook.get_conn(), record["batch_ids"])
        raise OvernightJobTimeout(
            f"Overnight batch {record['batch_ids']} did not end within the timeout; cancelled {cancelled} unfinished job(s)"
        )

    def _collect(self, context: Context, record: dict[str, Any]) -> list[Any]:
        client = self.hook.get_conn()
        try:
            jobs: dict[str, Job] = {
                job.id: job for batch_id in record["batch_ids"] for job in client.iter_jobs(batch_id=batch_id, page_size=1000)
            }
            values: list[Any] = []
            failures: list[dict[str, Any]] = []
            may_retry = False
            for index, job_id in enumerate(record["job_ids"]):
                if job_id is None:
                    failures.append({"index": index, "state": "refused", "error": record["refused"][str(index)], "job_id": None})
                    values.append(None)
                    continue
                job = jobs.get(job_id) or client.get_job(job_id)
                if job.state is JobState.SUCCEEDED:
                    values.append(job_output(job, self.output_format))
                    continue
                may_retry = may_retry or retry_may_help(job)
                error = job.error.model_dump() if job.error else None
                failures.append({"index": index, "state": job.state.value, "error": error, "job_id": job.id})
                values.append(None)
        except OvernightError as exc:
            raise exception_for_error(exc, f"reading batch {record['batch_ids']}") from exc
        if failures:
            context["ti"].xcom_push(key=FAILURES_XCOM_KEY, value=failures)
            summary = "; ".join(
                f"item {f['index']} {f['state']}" + (f" [{f['error']['code']}] {f['error']['message']}" if f["error"] else "")
                for f in failures[:5]
            ) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
            message = f"{len(failures)} of {len(values)} items did not succeed: {summary}"
            self.log.warning(message)
            if self.fail_on_item_error:
                raise (OvernightBatchException if may_retry else OvernightBatchFatalException)(message, failures)
        return values
