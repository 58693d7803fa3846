"""The OpenAI Files and Batch APIs with the official `openai` client, over ASGI."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import openai
import pytest

from overnight.server.app import create_app
from overnight.server.config import ServerConfig
from overnight.server.dispatcher import Dispatcher
from tests.fakes import EchoEngine

MODEL = "smollm2-135m"


def line(custom_id: str, text: str, *, url: str = "/v1/chat/completions", model: str = MODEL) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


@pytest.fixture
async def service(store, tenant, tmp_path):
    """API + dispatcher + batch runner in-process; an OpenAI client and the engine."""
    app = create_app(store, ServerConfig(data_dir=tmp_path, models=(MODEL,), max_file_bytes=16384))
    engine = EchoEngine(capacity=4)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(Dispatcher(store, engine).run(stop)),
             asyncio.create_task(app.state.batch_runner.run(stop))]
    key = await store.create_api_key(tenant.id)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://overnight")
    client = openai.AsyncOpenAI(api_key=key, base_url="http://overnight/v1", http_client=http, max_retries=0)
    yield client, engine, store
    stop.set()
    await asyncio.gather(*tasks)
    await http.aclose()


async def finished(client, batch_id: str):
    """Poll like an OpenAI user does, until the batch leaves its working states."""
    for _ in range(400):
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.05)  # the user's polling interval
    raise AssertionError(f"batch still {batch.status}")


async def test_full_batch_flow(service):
    client, _engine, _store = service
    content = "\n".join([
        line("a", "one"), line("b", "two"), "{not json", line("a", "duplicate"),
        line("c", "three", url="/v1/embeddings"), line("d", "four", model="gpt-9"), line("e", "five"),
    ])
    file = await client.files.create(file=("requests.jsonl", io.BytesIO(content.encode())), purpose="batch")
    batch = await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", metadata={"run": "nightly"})
    assert batch.status == "validating"
    done = await finished(client, batch.id)
    assert done.status == "completed" and done.metadata == {"run": "nightly"}
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (7, 3, 4)
    assert sorted(e.line for e in done.errors.data) == [3, 4, 5, 6]
    assert {e.code for e in done.errors.data} == {"invalid_json", "duplicate_custom_id", "invalid_url", "model_not_found"}

    output = [json.loads(x) for x in (await client.files.content(done.output_file_id)).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["a", "b", "e"]
    by_id = {o["custom_id"]: o for o in output}
    assert by_id["b"]["response"]["status_code"] == 200
    assert by_id["b"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: two"
    errors = [json.loads(x) for x in (await client.files.content(done.error_file_id)).text.splitlines()]
    assert sorted(e["error"]["line"] for e in errors) == [3, 4, 5, 6]

    listed = await client.batches.list()
    assert [b.id for b in listed.data] == [batch.id]
    assert (await client.files.retrieve(file.id)).purpose == "batch"
    deleted = await client.files.delete(file.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(file.id)


async def test_cancel_keeps_finished_lines_and_runs_no_more(service):
    client, engine, store = service
    lines = [line(f"fast-{i}", "quick") for i in range(2)] + [line(f"slow-{i}", "hang") for i in range(40)]
    file = await client.files.create(file=("big.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch")
    batch = await client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    started = set()
    while len(started) < 6:  # the 2 fast lines ran, 4 slow ones fill the engine
        started.add(await engine.started.get())
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    done = await finished(client, batch.id)
    assert done.status == "cancelled"
    assert done.request_counts.completed == 2 and done.request_counts.failed == 40
    assert len(engine.runs) == 6  # the other 36 lines never reached the engine
    output = [json.loads(x) for x in (await client.files.content(done.output_file_id)).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["fast-0", "fast-1"]


async def test_bad_batch_requests_get_openai_errors_and_the_server_stays_up(service):
    client, _engine, _store = service
    with pytest.raises(openai.APIStatusError) as too_big:
        await client.files.create(file=("huge.jsonl", io.BytesIO(b"x" * 20_000)), purpose="batch")
    assert too_big.value.status_code == 413 and too_big.value.body["type"] == "invalid_request_error"

    file = await client.files.create(file=("ok.jsonl", io.BytesIO(line("a", "x").encode())), purpose="batch")
    with pytest.raises(openai.BadRequestError) as wrong_endpoint:
        await client.batches.create(input_file_id=file.id, endpoint="/v1/images", completion_window="24h")
    assert wrong_endpoint.value.param == "endpoint"
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")

    junk = await client.files.create(file=("junk.jsonl", io.BytesIO(b"{nope\n[1,2]\n")), purpose="batch")
    batch = await client.batches.create(input_file_id=junk.id, endpoint="/v1/chat/completions", completion_window="24h")
    failed = await finished(client, batch.id)
    assert failed.status == "failed" and [e.line for e in failed.errors.data] == [1, 2]

    unknown = await client.files.create(file=("m.jsonl", io.BytesIO(line("a", "x", model="gpt-9").encode())), purpose="batch")
    batch = await client.batches.create(input_file_id=unknown.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert (await finished(client, batch.id)).errors.data[0].code == "model_not_found"
    assert (await client.models.list()).data[0].id == MODEL  # still serving
