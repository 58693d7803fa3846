"""The Python client: symmetric sync/async surfaces, retries that never duplicate a job."""

from __future__ import annotations

import inspect

import httpx
import pytest

import overnight
from overnight import AsyncClient, Client, InvalidRequestError, LLMCall, RateLimitError

JOB = {
    "id": "job_1", "state": "queued", "model": "smollm2-135m", "priority": "standard",
    "request": {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]},
    "max_attempts": 3, "created_at": "2026-12-04T00:00:00Z", "expires_at": "2026-12-05T00:00:00Z",
}


def test_public_api_is_pinned():
    assert sorted(overnight.__all__) == sorted(set(overnight.__all__))
    for name in ("Client", "AsyncClient", "LLMCall", "Job", "verify_receipt", "verify_webhook", "OvernightError"):
        assert name in overnight.__all__ and hasattr(overnight, name)


def test_sync_and_async_clients_have_the_same_methods():
    def public(cls):
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in ("close", "aclose")
        }

    sync, async_ = public(Client), public(AsyncClient)
    assert sync.keys() == async_.keys()
    for name in sync:
        assert list(sync[name].parameters) == list(async_[name].parameters), name
    for name in set(sync) - set(dir(overnight.BaseClient)):
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)) or inspect.isasyncgenfunction(getattr(AsyncClient, name)), name


def recording_transport(responses):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses.pop(0)

    return seen, httpx.MockTransport(handler)


def test_retries_reuse_one_idempotency_key_and_honour_retry_after():
    seen, transport = recording_transport([
        httpx.Response(503, json={"error": {"code": "overloaded", "message": "busy", "param": None}}),
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "rate_limited", "message": "slow", "param": None}}),
        httpx.Response(201, json=JOB),
    ])
    client = Client(api_key="k", base_url="http://svc", http_client=httpx.Client(transport=transport), backoff_seconds=0)
    assert client.send_job(LLMCall(model="smollm2-135m").add_user_message("hi")) == "job_1"
    keys = {request.headers["Idempotency-Key"] for request in seen}
    assert len(seen) == 3 and len(keys) == 1 and keys.pop().startswith("auto:")
    assert seen[0].headers["Authorization"] == "Bearer k"


def test_client_errors_are_not_retried_and_keep_their_code():
    seen, transport = recording_transport([
        httpx.Response(422, json={"error": {"code": "invalid_request", "message": "temperature: too hot", "param": "temperature"}}),
    ])
    client = Client(api_key="k", base_url="http://svc", http_client=httpx.Client(transport=transport))
    with pytest.raises(InvalidRequestError) as caught:
        client.send_job(LLMCall(model="smollm2-135m").add_user_message("hi"))
    assert len(seen) == 1 and caught.value.param == "temperature" and caught.value.retryable is False
    assert caught.value.__cause__ is None  # never its own cause (Temporal's converter would recurse)


async def test_async_client_gives_up_after_max_retries():
    seen, transport = recording_transport([
        httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "rate_limited", "message": "x", "param": None}})
        for _ in range(3)
    ])
    client = AsyncClient(api_key="k", base_url="http://svc", max_retries=2,
                         http_client=httpx.AsyncClient(transport=transport))
    with pytest.raises(RateLimitError) as caught:
        await client.get_job("job_1")
    assert len(seen) == 3 and caught.value.retryable and caught.value.retry_after == 0


def test_client_needs_a_key(monkeypatch):
    monkeypatch.delenv("OVERNIGHT_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OVERNIGHT_API_KEY"):
        Client()
    assert "k3y" not in repr(Client(api_key="k3y"))
