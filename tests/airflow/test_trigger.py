"""``LLMJobTrigger`` on its own: serialization, error tolerance, terminal states, kill, batches.

Most tests drive it against a scripted service (``httpx.MockTransport`` whose ``/wait`` handler
really waits, as the long poll does); the kill and double-run tests use a live ``overnight serve``
on the deterministic engine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import datetime, timezone
from importlib import import_module
from typing import Any, Awaitable, Callable, Iterator

import httpx
import pytest
from airflow.sdk.serde import deserialize, serialize

from airflow_provider.hooks.overnight import OvernightHook
from airflow_provider.triggers.overnight import LLMJobTrigger
from overnight import Client, JobState, LLMCall
from tests.airflow.conftest import connection_json
from tests.live import OvernightProcess

API_KEY = "ovn_trigger_test_key_not_a_secret_elsewhere"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def job_body(job_id: str, state: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
    now = datetime.now(timezone.utc).isoformat()
    return {
        "id": job_id, "state": state, "model": "smollm2-135m", "priority": "standard",
        "request": {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]},
        "max_attempts": 3, "created_at": now, "expires_at": now, "error": error,
    }


class ScriptedService:
    """Answers ``/wait`` from a script of states or HTTP statuses; records every request."""

    def __init__(self, script: list[str | int], *, final: str | int | None = None) -> None:
        self.script = list(script)
        self.final = final if final is not None else self.script[-1]
        self.requests: list[httpx.Request] = []
        self.cancelled: list[str] = []

    def count(self, kind: str) -> int:
        return sum(1 for r in self.requests if r.url.path.endswith(f"/{kind}"))

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        job_id = request.url.path.split("/")[3]
        if request.url.path.endswith("/cancel"):
            self.cancelled.append(job_id)
            return httpx.Response(200, json=job_body(job_id, "cancelled"))
        step = self.script.pop(0) if self.script else self.final
        if isinstance(step, int):
            return httpx.Response(step, json={"error": {"code": f"http_{step}", "message": "scripted", "param": None}})
        if step in ("queued", "running"):
            await asyncio.sleep(float(request.url.params["timeout"]))  # the long poll waits its window
        error = {"code": "boom", "message": "scripted failure", "retryable": False} if step == "failed" else None
        return httpx.Response(200, json=job_body(job_id, step, error))


@pytest.fixture
def conn_env(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "overnight", "host": "http://overnight.test", "password": API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_OVERNIGHT_TEST", json.dumps(conn))


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, conn_env: None) -> Callable[[Handler], None]:
    """Route every async client of the provider to ``handler``; counts the pools built and closed."""
    built = Counter[str]()

    def install(handler: Handler) -> None:
        class Counted(httpx.AsyncClient):
            async def aclose(self) -> None:
                built["closed"] += 1
                await super().aclose()

        def factory() -> httpx.AsyncClient:
            built["pools"] += 1
            return Counted(transport=httpx.MockTransport(handler))

        monkeypatch.setattr(OvernightHook, "async_http_client_factory", staticmethod(factory))

    install.built = built  # type: ignore[attr-defined]
    return install


async def run_trigger(trigger: LLMJobTrigger) -> dict[str, Any]:
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    return events[0]


def trigger(**kwargs: Any) -> LLMJobTrigger:
    options: dict[str, Any] = {"job_ids": ["job_1"], "conn_id": "overnight_test", "poll_interval": 0.05, "backoff_seconds": 0.001}
    return LLMJobTrigger(**{**options, **kwargs})


def test_serialize_round_trip_holds_ids_not_secrets() -> None:
    original = LLMJobTrigger(job_ids=["job_1"], conn_id="overnight_test", deadline=1_900_000_000.0,
                             poll_interval=20, max_consecutive_errors=3, cancel_on_kill=False)
    classpath, kwargs = original.serialize()
    assert classpath == "airflow_provider.triggers.overnight.LLMJobTrigger"
    # the way Airflow stores and rebuilds it (serde, as the triggerer and `dags test` do)
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(import_module(module), name)(**deserialize(json.loads(json.dumps(serialize(kwargs)))))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert set(kwargs) == {"job_ids", "batch_ids", "conn_id", "deadline", "poll_interval",
                           "max_consecutive_errors", "cancel_on_kill", "backoff_seconds"}
    assert API_KEY not in json.dumps(kwargs) + repr(rebuilt)


async def test_success_takes_one_request_per_window(serve: Any) -> None:
    service = ScriptedService(["running", "running", "succeeded"])
    serve(service)
    event = await run_trigger(trigger(poll_interval=0.2))
    assert event["status"] == "success" and event["job_id"] == "job_1" and event["states"] == {"job_1": "succeeded"}
    assert service.count("wait") == 3
    assert all(0.19 < float(r.url.params["timeout"]) <= 0.2 for r in service.requests)  # the window


async def test_transient_errors_are_tolerated_up_to_the_limit(serve: Any) -> None:
    service = ScriptedService([503, 502, 429, "succeeded"])
    serve(service)
    event = await run_trigger(trigger(max_consecutive_errors=3))
    assert event["status"] == "success"
    assert service.count("wait") == 4


async def test_one_error_past_the_limit_ends_the_wait(serve: Any) -> None:
    service = ScriptedService([503], final=503)
    serve(service)
    event = await run_trigger(trigger(max_consecutive_errors=3))
    assert event["status"] == "error"
    assert "gave up after 4 consecutive errors" in event["message"]
    assert service.count("wait") == 4


async def test_the_limit_counts_consecutive_errors_only(serve: Any) -> None:
    service = ScriptedService([503, 503, "running", 503, 503, "succeeded"])
    serve(service)
    assert (await run_trigger(trigger(max_consecutive_errors=2)))["status"] == "success"


async def test_a_non_retryable_error_ends_the_wait_at_once(serve: Any) -> None:
    service = ScriptedService([404])
    serve(service)
    event = await run_trigger(trigger(max_consecutive_errors=5))
    assert event["status"] == "error" and "http_404" in event["message"]
    assert service.count("wait") == 1


@pytest.mark.parametrize(
    ("state", "status"),
    [("succeeded", "success"), ("failed", "failed"), ("cancelled", "cancelled"), ("expired", "failed")],
)
async def test_terminal_states_are_mapped(serve: Any, state: str, status: str) -> None:
    serve(ScriptedService([state]))
    event = await run_trigger(trigger())
    assert (event["status"], event["states"]) == (status, {"job_1": state})
    if state == "failed":
        assert event["error"] == {"code": "boom", "message": "scripted failure", "retryable": False}
        assert "[boom] scripted failure" in event["message"]


async def test_the_deadline_yields_timeout(serve: Any) -> None:
    service = ScriptedService(["running"])
    serve(service)
    started = time.monotonic()
    event = await run_trigger(trigger(deadline=time.time() + 0.3, poll_interval=10))
    assert event["status"] == "timeout" and "job_1" in event["message"]
    assert time.monotonic() - started < 5  # the last window is cut to the deadline
    assert service.cancelled == []  # the operator cancels, in execute_complete


async def test_a_killed_trigger_cancels_its_job(serve: Any) -> None:
    service = ScriptedService(["running"])
    serve(service)
    killed = trigger(poll_interval=30)
    task = asyncio.ensure_future(run_trigger(killed))
    while service.count("wait") == 0:
        await asyncio.sleep(0.01)  # until the long poll is in flight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await killed.on_kill()  # what the triggerer calls after a user action
    assert service.cancelled == ["job_1"]


async def test_sensor_triggers_never_cancel(serve: Any) -> None:
    service = ScriptedService(["running"])
    serve(service)
    await trigger(cancel_on_kill=False).on_kill()
    assert service.requests == []


async def test_each_trigger_gets_its_own_pool_and_closes_it(serve: Any) -> None:
    serve(ScriptedService(["running", "running", "succeeded"], final="succeeded"))
    events = await asyncio.gather(*(run_trigger(trigger(job_ids=[f"job_{i}"])) for i in range(20)))
    assert {e["status"] for e in events} == {"success"}
    assert serve.built["pools"] == 20 and serve.built["closed"] == 20


async def test_certificates_load_once_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import airflow_provider.hooks.overnight as hooks

    loaded: list[str] = []
    real = httpx.create_ssl_context

    def create_ssl_context(*args: Any, **kwargs: Any) -> Any:
        loaded.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(hooks, "_ssl_context", None)
    monkeypatch.setattr(httpx, "create_ssl_context", create_ssl_context)
    contexts = await asyncio.gather(*(hooks.shared_ssl_context() for _ in range(20)))
    assert len(loaded) == 1 and loaded[0] != threading.main_thread().name
    assert all(context is contexts[0] for context in contexts)
    first, second = hooks.OvernightHook.async_http_client_factory(), hooks.OvernightHook.async_http_client_factory()
    assert first is not second
    await first.aclose()
    await second.aclose()


async def test_batches_wait_until_no_job_is_left(serve: Any) -> None:
    listed: list[str] = []
    remaining = {"queued": ["job_q"], "running": ["job_r"]}

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs":
            state = request.url.params["state"]
            listed.append(state)
            assert request.url.params["batch_id"] == "batch_1"
            ids = remaining[state][:1]
            return httpx.Response(200, json={"object": "list", "data": [job_body(i, state) for i in ids]})
        job_id = request.url.path.split("/")[3]
        for ids in remaining.values():
            if job_id in ids:
                ids.remove(job_id)  # it ends during this long poll
        return httpx.Response(200, json=job_body(job_id, "succeeded"))

    serve(handler)
    event = await run_trigger(trigger(job_ids=[], batch_ids=["batch_1"]))
    assert event["status"] == "success" and event["batch_ids"] == ["batch_1"]
    assert remaining == {"queued": [], "running": []}
    assert listed == ["queued", "queued", "running", "queued", "running"]


# -- against a live service ------------------------------------------------------------------


@pytest.fixture
def live(fake_server: OvernightProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.setenv("AIRFLOW_CONN_OVERNIGHT_LIVE", connection_json(fake_server))
    with Client(api_key=fake_server.api_key, base_url=fake_server.url) as client:
        yield client


def submit(client: Client, prompt: str) -> str:
    return client.send_job(LLMCall(model="smollm2-135m").add_user_message(prompt))


async def test_kill_cancels_the_running_job_on_the_service(live: Client) -> None:
    job_id = submit(live, "hang")
    killed = LLMJobTrigger(job_ids=[job_id], conn_id="overnight_live", poll_interval=30)
    task = asyncio.ensure_future(run_trigger(killed))
    while live.get_job(job_id).state is not JobState.RUNNING:
        await asyncio.sleep(0.05)  # the engine picks it up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await killed.on_kill()
    await killed.on_kill()  # a second kill (another triggerer) is harmless
    assert live.get_job(job_id).state is JobState.CANCELLED


async def test_two_triggers_on_one_job_report_the_same_event(live: Client) -> None:
    job_id = submit(live, "slow:1")
    first, second = (LLMJobTrigger(job_ids=[job_id], conn_id="overnight_live", poll_interval=30) for _ in range(2))
    one, two = await asyncio.gather(run_trigger(first), run_trigger(second))
    assert one == two and one["status"] == "success"
    assert live.get_job(job_id).text == "echo: slow:1"
