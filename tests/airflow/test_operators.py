"""The operators' decisions without a scheduler: keys, re-attaching, errors, cancel paths.

Each test calls ``execute`` / ``execute_complete`` / ``resume_execution`` / ``on_kill`` with a
task-instance double and a scripted service (``httpx.MockTransport``) that keeps jobs by
idempotency key, as the real API does. The same paths run inside Airflow in test_dag_checks.py.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Iterator

import httpx
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferralTimeout, TaskDeferred

from airflow_provider.exceptions import (
    OvernightConnectionError,
    OvernightJobException,
    OvernightJobFatalException,
    OvernightJobTimeout,
)
from airflow_provider.hooks.overnight import OvernightHook, client_options
from airflow_provider.operators._support import task_idempotency_key
from airflow_provider.operators.llm_batch import LLMBatchOperator
from airflow_provider.operators.llm_job import LLMJobOperator
from overnight import derive_idempotency_key

API_KEY = "ovn_operator_test_key"


class FakeTI:
    """The parts of a RuntimeTaskInstance the operators use."""

    def __init__(self, try_number: int = 1, map_index: int = -1, run_id: str = "manual__2025-01-01") -> None:
        self.dag_id, self.task_id, self.run_id = "nightly", "summarise", run_id
        self.map_index, self.try_number = map_index, try_number
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        assert task_ids == self.task_id
        return self.xcoms.get(key)


def context(**ti: Any) -> dict[str, Any]:
    return {"ti": FakeTI(**ti)}


class Service:
    """Jobs by idempotency key (same key: the same job), like ``POST /v1/jobs``; records requests."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.requests: list[httpx.Request] = []
        self.refuse: dict[str, Any] | None = None

    def posts(self, suffix: str = "/v1/jobs") -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path.endswith(suffix)]

    def set_state(self, job_id: str, state: str, error: dict[str, Any] | None = None) -> None:
        self.jobs[job_id].update(state=state, error=error)
        if state == "succeeded":
            self.jobs[job_id]["result"] = {"choices": [{"message": {"role": "assistant", "content": f"answer {job_id}"}}]}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/v1/jobs":
            if self.refuse:
                return httpx.Response(400, json={"error": self.refuse})
            key = request.headers["idempotency-key"]
            body = json.loads(request.content)
            if key in self.by_key and self.jobs[self.by_key[key]]["request"] != body:
                error = {"code": "idempotency_conflict", "message": "key reused with another body", "param": None}
                return httpx.Response(409, json={"error": error})
            if key not in self.by_key:
                job_id = f"job_{len(self.jobs) + 1}"
                now = datetime.now(timezone.utc).isoformat()
                self.jobs[job_id] = {
                    "id": job_id, "state": "queued", "model": body["model"], "priority": "standard", "request": body,
                    "metadata": body.get("metadata", {}), "idempotency_key": key, "max_attempts": 3,
                    "created_at": now, "expires_at": now,
                }
                self.by_key[key] = job_id
            return httpx.Response(201, json=self.jobs[self.by_key[key]])
        job_id = path.split("/")[3]
        if path.endswith("/cancel"):
            if self.jobs[job_id]["state"] in ("succeeded", "failed", "expired"):
                return httpx.Response(409, json={"error": {"code": "job_finished", "message": "ended", "param": None}})
            self.set_state(job_id, "cancelled", {"code": "cancelled", "message": "cancelled by request", "retryable": False})
        return httpx.Response(200, json=self.jobs[job_id])


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    service = Service()
    conn = {"conn_type": "overnight", "host": "http://overnight.test", "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_OVERNIGHT_DEFAULT", json.dumps(conn))
    monkeypatch.setattr(OvernightHook, "http_client_factory", lambda: httpx.Client(transport=httpx.MockTransport(service)))
    yield service


def operator(**kwargs: Any) -> LLMJobOperator:
    return LLMJobOperator(**{"task_id": "summarise", "prompt": "Summarise this.", "deferrable": True, **kwargs})


def test_the_key_is_the_task_instance_not_the_try() -> None:
    first = task_idempotency_key(context(try_number=1))
    assert task_idempotency_key(context(try_number=4)) == first
    assert task_idempotency_key(context(map_index=0)) != task_idempotency_key(context(map_index=1))
    assert task_idempotency_key(context(run_id="manual__2025-01-02")) != first
    assert first == derive_idempotency_key("airflow", "nightly", "summarise", "manual__2025-01-01", -1)


def test_execute_pushes_the_job_then_defers_with_ids_only(service: Service) -> None:
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(ctx)
    (post,) = service.posts()
    assert post.headers["idempotency-key"] == task_idempotency_key(ctx)
    sent = json.loads(post.content)
    assert sent["metadata"] == {"airflow_dag_id": "nightly", "airflow_task_id": "summarise", "airflow_run_id": "manual__2025-01-01"}
    classpath, kwargs = deferred.value.trigger.serialize()
    assert kwargs["job_ids"] == ["job_1"] and API_KEY not in json.dumps(kwargs)
    assert deferred.value.method_name == "execute_complete"
    assert ctx["ti"].xcoms == {
        "overnight_job_id": "job_1",
        "overnight_job_url": "http://overnight.test/v1/jobs/job_1",
        "_link_OvernightJobLink": "http://overnight.test/v1/jobs/job_1",
    }


def test_a_retry_reattaches_and_never_submits_twice(service: Service) -> None:
    for try_number in (1, 2, 3):
        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(context(try_number=try_number))
        assert deferred.value.trigger.job_ids == ["job_1"]
    assert len(service.jobs) == 1
    service.set_state("job_1", "succeeded")
    assert operator().execute(context(try_number=4)) == "answer job_1"  # done: no deferral
    assert len(service.jobs) == 1


def test_a_dead_job_is_replaced_once_under_a_derived_key(service: Service) -> None:
    with pytest.raises(TaskDeferred):
        operator().execute(context())
    service.set_state("job_1", "failed", {"code": "replica_died", "message": "gave up after 3 attempts", "retryable": True})
    for try_number in (2, 3):
        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(context(try_number=try_number))
        assert deferred.value.trigger.job_ids == ["job_2"]
    assert len(service.jobs) == 2
    assert service.by_key[derive_idempotency_key("airflow", task_idempotency_key(context()), "after", "job_1")] == "job_2"


def test_a_non_retryable_failure_is_not_resubmitted(service: Service) -> None:
    with pytest.raises(TaskDeferred):
        operator().execute(context())
    service.set_state("job_1", "failed", {"code": "context_length_exceeded", "message": "too long", "retryable": False})
    with pytest.raises(OvernightJobFatalException, match="context_length_exceeded"):
        operator().execute(context(try_number=2))
    assert len(service.jobs) == 1


def test_a_changed_request_under_the_same_key_fails_clearly(service: Service) -> None:
    with pytest.raises(TaskDeferred):
        operator(prompt="Summarise try 1.").execute(context())
    with pytest.raises(OvernightJobFatalException, match="already submitted a different request"):
        operator(prompt="Summarise try 2.").execute(context(try_number=2))
    assert len(service.jobs) == 1


def test_a_bad_model_fails_without_retry_after_one_request(service: Service) -> None:
    service.refuse = {"code": "model_not_found", "message": "Unknown model 'gpt-9'; this service runs smollm2-135m.", "param": "model"}
    with pytest.raises(OvernightJobFatalException) as failed:
        operator(model="gpt-9").execute(context())
    assert isinstance(failed.value, AirflowFailException)  # Airflow does not retry it
    assert "[model_not_found] Unknown model 'gpt-9'" in str(failed.value)
    assert len(service.posts()) == 1  # and the client did not retry either


def test_invalid_arguments_fail_before_any_request(service: Service) -> None:
    with pytest.raises(OvernightJobFatalException, match="temperature"):
        operator(temperature=7.0).execute(context())
    with pytest.raises(OvernightJobFatalException, match="user message"):
        operator(prompt=None).execute(context())
    assert service.requests == []


@pytest.mark.parametrize(("output_format", "expected"), [
    ("text", "answer job_1"),
    ("result", {"choices": [{"message": {"role": "assistant", "content": "answer job_1"}}]}),
])
def test_execute_complete_returns_the_output(service: Service, output_format: str, expected: Any) -> None:
    with pytest.raises(TaskDeferred):
        operator().execute(context())
    service.set_state("job_1", "succeeded")
    event = {"status": "success", "job_id": "job_1", "message": "ended"}
    assert operator(output_format=output_format).execute_complete(context(), event) == expected
    job = operator(output_format="job").execute_complete(context(), event)
    assert job["id"] == "job_1" and job["state"] == "succeeded"


@pytest.mark.parametrize(("state", "error", "raised"), [
    ("failed", {"code": "replica_died", "message": "gave up", "retryable": True}, OvernightJobException),
    ("expired", {"code": "expired", "message": "window passed", "retryable": False}, OvernightJobException),
    ("failed", {"code": "context_length_exceeded", "message": "too long", "retryable": False}, OvernightJobFatalException),
    ("cancelled", {"code": "cancelled", "message": "cancelled by request", "retryable": False}, OvernightJobFatalException),
])
def test_execute_complete_maps_retryable_to_airflow_retries(service: Service, state: str, error: dict[str, Any], raised: type) -> None:
    with pytest.raises(TaskDeferred):
        operator().execute(context())
    service.set_state("job_1", state, error)
    with pytest.raises(raised) as failed:
        operator().execute_complete(context(), {"status": "failed", "job_id": "job_1", "message": "x"})
    assert type(failed.value) is raised and error["code"] in str(failed.value)


def test_the_operators_timeout_cancels_in_execute_complete(service: Service) -> None:
    with pytest.raises(TaskDeferred):
        operator(timeout=60).execute(context())
    with pytest.raises(OvernightJobTimeout):
        operator().execute_complete(context(), {"status": "timeout", "job_id": "job_1", "message": "deadline"})
    assert [r.url.path for r in service.posts("/cancel")] == ["/v1/jobs/job_1/cancel"]
    assert service.jobs["job_1"]["state"] == "cancelled"


def test_airflows_deferral_timeout_cancels_in_resume_execution(service: Service) -> None:
    ctx = context()
    with pytest.raises(TaskDeferred):
        operator().execute(ctx)
    with pytest.raises(TaskDeferralTimeout):
        operator().resume_execution("__fail__", {"error": "Trigger timeout"}, ctx)
    assert service.jobs["job_1"]["state"] == "cancelled"


def test_a_trigger_failure_does_not_cancel(service: Service) -> None:
    ctx = context()
    with pytest.raises(TaskDeferred):
        operator().execute(ctx)
    with pytest.raises(Exception, match="Trigger failure"):
        operator().resume_execution("__fail__", {"error": "Trigger failure"}, ctx)
    assert service.jobs["job_1"]["state"] == "queued"  # a retry re-attaches to it


def test_on_kill_cancels_the_job(service: Service) -> None:
    op = operator()
    with pytest.raises(TaskDeferred):
        op.execute(context())
    op.on_kill()
    assert service.jobs["job_1"]["state"] == "cancelled"


def test_a_lost_trigger_is_retryable(service: Service) -> None:
    with pytest.raises(OvernightJobException, match="lost track"):
        operator().execute_complete(context(), {"status": "error", "job_id": "job_1", "message": "gave up after 11 errors"})


def test_blocking_mode_cancels_at_its_timeout(service: Service) -> None:
    with pytest.raises(OvernightJobTimeout):
        operator(deferrable=False, timeout=0.01, poll_interval=0.01).execute(context())
    assert service.jobs["job_1"]["state"] == "cancelled"


def test_batch_items_are_validated_with_their_index(service: Service) -> None:
    op = LLMBatchOperator(task_id="batch", prompts=["fine", {"prompt": "x", "temperature": 9}])
    with pytest.raises(OvernightJobFatalException, match="item 1: invalid LLM request: temperature"):
        op.execute(context())
    with pytest.raises(OvernightJobFatalException, match="unknown fields"):
        LLMBatchOperator(task_id="batch", prompts=[{"prompt": "x", "tempo": 1}]).execute(context())
    assert service.requests == []


def test_connection_forms() -> None:
    class Conn:
        conn_id, host, port, password, extra = "c", "10.0.0.5", 8123, "ovn_k", '{"scheme": "https", "extra__overnight__timeout": "5"}'

    assert client_options(Conn) == {"api_key": "ovn_k", "base_url": "https://10.0.0.5:8123", "timeout": 5.0}
    Conn.password = None
    with pytest.raises(OvernightConnectionError, match="no API key"):
        client_options(Conn)
