"""The OpenAI-compatible routes, driven by the official `openai` client over ASGI."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from overnight.server.app import create_app
from overnight.server.config import ServerConfig
from overnight.server.dispatcher import Dispatcher
from overnight.server.store.base import JobFilter
from tests.fakes import EchoEngine

MODEL = "smollm2-135m"


@pytest.fixture
async def running(store, tenant, tmp_path):
    """The API plus a dispatcher on the echo engine, and an OpenAI client pointed at them."""
    app = create_app(store, ServerConfig(data_dir=tmp_path, models=(MODEL,)))
    engine = EchoEngine()
    stop = asyncio.Event()
    task = asyncio.create_task(Dispatcher(store, engine).run(stop))
    key = await store.create_api_key(tenant.id)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://overnight")
    client = openai.AsyncOpenAI(api_key=key, base_url="http://overnight/v1", http_client=http, max_retries=0)
    yield client, engine
    stop.set()
    await task
    await http.aclose()


async def test_chat_completion_runs_through_the_queue(running, store, tenant):
    client, engine = running
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]}], max_tokens=8
    )
    completion = raw.parse()
    job_id = raw.headers["x-request-id"]
    assert completion.choices[0].message.content == "echo: hello"
    assert completion.usage.completion_tokens == 2 and completion.id == f"chatcmpl-{job_id}"
    job = await store.get(tenant.id, job_id)
    assert job.priority.value == "interactive" and job.state.value == "succeeded"
    assert engine.runs[job_id] == 1


async def test_completions_and_embeddings_and_models(running):
    client, _ = running
    completion = await client.completions.create(model=MODEL, prompt="Once upon", max_tokens=4)
    assert completion.choices[0].text == "echo: Once upon"
    embeddings = await client.embeddings.create(model=MODEL, input=["ab", "abcd"])
    assert [e.embedding for e in embeddings.data] == [[2.0, 1.0], [4.0, 1.0]]
    models = await client.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_errors_come_in_openai_shape(running):
    client, _ = running
    with pytest.raises(openai.BadRequestError) as unknown:
        await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.code == "model_not_found" and unknown.value.body["type"] == "invalid_request_error"
    assert unknown.value.param == "model"
    with pytest.raises(openai.BadRequestError) as hot:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=7)
    assert hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as many:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], n=2)
    assert many.value.param == "n"
    with pytest.raises(openai.BadRequestError) as engine_refused:
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "fail-fatal"}])
    assert engine_refused.value.code == "context_length_exceeded"
    bad_key = openai.AsyncOpenAI(api_key="nope", base_url="http://overnight/v1", http_client=client._client, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        await bad_key.models.list()
    assert denied.value.body["type"] == "authentication_error"


async def test_client_disconnect_cancels_the_job(store, tenant, tmp_path):
    app = create_app(store, ServerConfig(data_dir=tmp_path, models=(MODEL,)))
    engine = EchoEngine()
    stop = asyncio.Event()
    dispatcher = asyncio.create_task(Dispatcher(store, engine).run(stop))
    key = await store.create_api_key(tenant.id)
    body = b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "hang"}]}'
    started = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if not started.is_set():
            started.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await engine.started.get()  # the job is running in the engine: now hang up
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
        "root_path": "", "server": ("test", 80), "client": ("127.0.0.1", 1),
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-type", b"application/json")],
    }
    await app(scope, receive, send)
    (job,), _ = await store.list(tenant.id, JobFilter(), 10, None)
    assert job.state.value == "cancelled"
    assert sent[0]["status"] == 499
    while engine.cancelled != [job.id]:  # the abort reaches the engine through the event loop
        await asyncio.sleep(0)
    stop.set()
    await dispatcher


async def test_stream_yields_chunks_that_join_to_the_full_answer(running):
    client, _ = running
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 4  # the engine's pieces were forwarded one by one
    assert "".join(pieces) == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 4


async def test_embeddings_on_a_chat_model_are_a_clear_400(store, tenant, tmp_path):
    config = ServerConfig(data_dir=tmp_path, models=(MODEL,), model_tasks={MODEL: "chat"})
    app = create_app(store, config)
    key = await store.create_api_key(tenant.id)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as http:
        client = openai.AsyncOpenAI(api_key=key, base_url="http://o/v1", http_client=http, max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model=MODEL, input="hello")
    assert refused.value.code == "unsupported_model_task" and "chat model" in refused.value.message
    assert (await store.list(tenant.id, JobFilter(), 10, None))[0] == []  # nothing was queued


async def test_a_full_queue_answers_429_with_retry_after(store, tenant, tmp_path):
    app = create_app(store, ServerConfig(data_dir=tmp_path, models=(MODEL,), max_active_jobs_per_tenant=2))
    key = await store.create_api_key(tenant.id)
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as http:
        assert [(await http.post("/v1/jobs", json=body, headers=auth)).status_code for _ in range(2)] == [201, 201]
        native = await http.post("/v1/jobs", json=body, headers=auth)
        assert native.status_code == 429 and native.headers["retry-after"] == "30"
        assert native.json()["error"]["code"] == "queue_full"
        bulk = await http.post("/v1/jobs/bulk", json={"jobs": [body]}, headers=auth)
        assert bulk.status_code == 429
        client = openai.AsyncOpenAI(api_key=key, base_url="http://o/v1", http_client=http, max_retries=0)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert limited.value.body["type"] == "rate_limit_error" and limited.value.response.headers["retry-after"] == "30"
    assert len((await store.list(tenant.id, JobFilter(), 10, None))[0]) == 2
