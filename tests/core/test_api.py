"""The HTTP API through ``httpx.ASGITransport``: auth, tenants, error bodies, idempotency, long poll."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from overnight import AsyncClient, LLMCall, WaitTimeout, verify_receipt
from overnight._receipts import ReceiptSigner
from overnight.server.app import create_app
from overnight.server.callbacks import CallbackPolicy
from overnight.server.config import ServerConfig
from overnight.server.dispatcher import Dispatcher
from tests.fakes import EchoEngine

MODEL = "smollm2-135m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner.generate()


@pytest.fixture
def app(store, signer, tmp_path):
    config = ServerConfig(
        data_dir=tmp_path, models=(MODEL,), max_body_bytes=64 * 1024,
        callback_policy=CallbackPolicy(allowlist=("127.0.0.0/8",)),
    )
    return create_app(store, config, signer=signer)


@pytest.fixture
async def http(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://overnight") as client:
        yield client


@pytest.fixture
async def key(store, tenant) -> str:
    return await store.create_api_key(tenant.id)


@pytest.fixture
def auth(key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "param"}, body
    assert body["error"]["message"]
    return body["error"]


async def test_every_v1_route_needs_a_valid_key(http):
    missing = await http.post("/v1/jobs", json=CHAT)
    assert missing.status_code == 401 and error_of(missing)["code"] == "missing_api_key"
    wrong = await http.get("/v1/jobs", headers={"Authorization": "Bearer ovn_nope"})
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "invalid_api_key"
    assert (await http.get("/healthz")).json()["status"] == "ok"


async def test_keys_are_stored_hashed(store, key):
    async with store._read() as db:
        rows = await (await db.execute("SELECT * FROM api_keys")).fetchall()
    assert rows and all(key not in [str(v) for v in tuple(row)] for row in rows)


async def test_tenants_only_see_their_own_jobs(http, auth, store):
    job = (await http.post("/v1/jobs", json=CHAT, headers=auth)).json()
    other = await store.create_tenant("globex")
    other_auth = {"Authorization": f"Bearer {await store.create_api_key(other.id)}"}
    for response in (
        await http.get(f"/v1/jobs/{job['id']}", headers=other_auth),
        await http.get(f"/v1/jobs/{job['id']}/wait?timeout=0", headers=other_auth),
        await http.post(f"/v1/jobs/{job['id']}/cancel", headers=other_auth),
    ):
        assert response.status_code == 404 and error_of(response)["code"] == "job_not_found"
    assert (await http.get("/v1/jobs", headers=other_auth)).json()["data"] == []
    assert [j["id"] for j in (await http.get("/v1/jobs", headers=auth)).json()["data"]] == [job["id"]]


async def test_error_bodies(http, auth):
    bad_json = await http.post("/v1/jobs", content=b"{nope", headers={**auth, "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and error_of(bad_json)["code"] == "invalid_json"

    hot = await http.post("/v1/jobs", json={**CHAT, "temperature": 5}, headers=auth)
    assert hot.status_code == 422 and error_of(hot)["param"] == "temperature"

    empty = await http.post("/v1/jobs", json={"model": MODEL}, headers=auth)
    assert empty.status_code == 422 and error_of(empty)["param"] == "messages"

    not_object = await http.post("/v1/jobs", json=[1, 2], headers=auth)
    assert not_object.status_code == 422 and error_of(not_object)["code"] == "invalid_request"

    unknown = await http.post("/v1/jobs", json={**CHAT, "model": "gpt-9"}, headers=auth)
    assert unknown.status_code == 400 and error_of(unknown) == {
        "code": "model_not_found", "param": "model", "message": error_of(unknown)["message"]
    }

    missing = await http.get("/v1/jobs/job_missing", headers=auth)
    assert missing.status_code == 404 and error_of(missing)["code"] == "job_not_found"

    no_route = await http.get("/v1/nothing", headers=auth)
    assert no_route.status_code == 404 and error_of(no_route)["code"] == "not_found"

    bad_query = await http.get("/v1/jobs?limit=0", headers=auth)
    assert bad_query.status_code == 422 and error_of(bad_query)["param"] == "query.limit"

    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 70_000}]}
    too_big = await http.post("/v1/jobs", json=huge, headers=auth)
    assert too_big.status_code == 413 and error_of(too_big)["code"] == "payload_too_large"

    async def chunks():
        for _ in range(20):
            yield b"x" * 8192

    chunked = await http.post("/v1/jobs", content=chunks(), headers={**auth, "Content-Type": "application/json"})
    assert chunked.status_code == 413


async def test_idempotency_key_header(http, auth):
    headers = {**auth, "Idempotency-Key": "nightly-42"}
    first = await http.post("/v1/jobs", json=CHAT, headers=headers)
    again = await http.post("/v1/jobs", json=CHAT, headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    changed = await http.post("/v1/jobs", json={**CHAT, "max_tokens": 5}, headers=headers)
    assert changed.status_code == 409 and error_of(changed)["code"] == "idempotency_conflict"


async def test_private_callback_urls_are_refused(http, auth):
    refused = await http.post("/v1/jobs", json={**CHAT, "callback_url": "http://10.1.2.3/hook"}, headers=auth)
    assert refused.status_code == 400 and error_of(refused) == {
        "code": "callback_url_forbidden", "param": "callback_url", "message": error_of(refused)["message"]
    }
    metadata_ip = await http.post("/v1/jobs", json={**CHAT, "callback_url": "http://169.254.169.254/"}, headers=auth)
    assert metadata_ip.status_code == 400
    allowed = await http.post("/v1/jobs", json={**CHAT, "callback_url": "http://127.0.0.1:9/hook"}, headers=auth)
    assert allowed.status_code == 201


async def test_bulk_reports_each_item_and_is_idempotent(http, auth):
    body = {"jobs": [CHAT, {**CHAT, "temperature": 9}, {**CHAT, "model": "nope"}, CHAT], "metadata": {"run": "1"}}
    headers = {**auth, "Idempotency-Key": "bulk-1"}
    first = (await http.post("/v1/jobs/bulk", json=body, headers=headers)).json()
    assert [item["index"] for item in first["data"]] == [0, 1, 2, 3]
    assert first["data"][1]["error"]["param"] == "jobs.1.temperature"
    assert first["data"][2]["error"]["code"] == "model_not_found"
    ids = [item["job"]["id"] for item in first["data"] if item["job"]]
    assert len(ids) == 2 and len(set(ids)) == 2
    again = (await http.post("/v1/jobs/bulk", json=body, headers=headers)).json()
    assert again["batch_id"] == first["batch_id"]
    assert [item["job"]["id"] for item in again["data"] if item["job"]] == ids
    listed = (await http.get(f"/v1/jobs?batch_id={first['batch_id']}", headers=auth)).json()
    assert sorted(j["id"] for j in listed["data"]) == sorted(ids)


async def test_list_filters_and_cursor(http, auth):
    for i in range(5):
        await http.post("/v1/jobs", json={**CHAT, "metadata": {"doc": str(i)}}, headers=auth)
    page = (await http.get("/v1/jobs?limit=3", headers=auth)).json()
    assert len(page["data"]) == 3 and page["has_more"]
    rest = (await http.get(f"/v1/jobs?limit=3&after={page['next_cursor']}", headers=auth)).json()
    assert len(rest["data"]) == 2 and not rest["has_more"]
    one = (await http.get("/v1/jobs?metadata.doc=3", headers=auth)).json()["data"]
    assert [j["metadata"] for j in one] == [{"doc": "3"}]
    bad_cursor = await http.get("/v1/jobs?after=job_x", headers=auth)
    assert bad_cursor.status_code == 400 and error_of(bad_cursor)["code"] == "invalid_cursor"


async def test_long_poll_returns_when_the_job_ends_and_receipt_verifies(http, auth, key, app, store, signer):
    engine = EchoEngine()
    dispatcher = Dispatcher(store, engine, signer=signer)
    client = AsyncClient(api_key=key, base_url="http://overnight", http_client=http)
    job_id = await client.send_job(LLMCall(model=MODEL).add_user_message("slow:0.3"))
    with pytest.raises(WaitTimeout):
        await client.wait_for_job(job_id, timeout=0)

    waiting = asyncio.create_task(client.wait_for_job(job_id, timeout=30))
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    started = time.monotonic()
    job = await waiting
    elapsed = time.monotonic() - started
    stop.set()
    await running
    assert job.state.value == "succeeded" and job.text == "echo: slow:0.3"
    assert elapsed < 5, "the long poll must wake on completion, not run to its timeout"

    public_key = await client.receipt_public_key()
    receipt = verify_receipt(job, public_key)
    assert receipt.job_id == job_id and receipt.key_id == signer.key_id


async def test_metrics_expose_queue_depth(http, auth):
    await http.post("/v1/jobs", json=CHAT, headers=auth)
    text = (await http.get("/metrics")).text
    assert f'overnight_jobs{{model="{MODEL}",state="queued"}} 1.0' in text
    assert "overnight_job_total_seconds" in text and "overnight_webhook_deliveries" in text


async def test_webhook_secret_rotation(http, auth):
    before = (await http.get("/v1/webhook-secrets", headers=auth)).json()["secrets"]
    after = (await http.post("/v1/webhook-secrets/rotate", headers=auth)).json()["secrets"]
    assert len(after) == 2 and after[1] == before[0] and after[0].startswith("whsec_")
