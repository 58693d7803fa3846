"""The outbox deliverer against a real receiver on 127.0.0.1 (and MockTransport where no server is needed)."""

from __future__ import annotations

import asyncio
import dataclasses
from email.utils import formatdate

import httpx
import pytest

from overnight._webhooks import new_webhook_secret, verify_webhook
from overnight.server.callbacks import CallbackPolicy
from overnight.server.outbox import DEFAULT_SCHEDULE, WebhookDeliverer, parse_retry_after

LOOPBACK = CallbackPolicy(allowlist=("127.0.0.0/8",))


def make(store, clock, secrets: list[str], http: httpx.AsyncClient,
         policy: CallbackPolicy = LOOPBACK, outcomes: list[str] | None = None, **kwargs) -> WebhookDeliverer:
    async def secrets_for_tenant(tenant_id: str) -> list[str]:
        assert tenant_id == "tenant_1"
        return secrets

    return WebhookDeliverer(
        store, secrets_for_tenant, http, policy, clock=clock,
        metrics=outcomes.append if outcomes is not None else None, **kwargs,
    )


def refusing_transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        pytest.fail(f"the guard let a request through to {request.url.host}")

    return httpx.MockTransport(handler)


async def test_delivers_the_stored_bytes_signed(store, clock, secret, payload, receiver) -> None:
    outcomes: list[str] = []
    message_id = store.add("tenant_1", receiver.url, payload)
    async with httpx.AsyncClient() as http:
        assert await make(store, clock, [secret], http, outcomes=outcomes).deliver_due() == 1
    [request] = receiver.requests
    assert request.body == payload.encode()
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == message_id
    assert request.headers["webhook-timestamp"] == str(int(clock()))
    event = verify_webhook(request.body, request.headers, secret, now=clock())
    assert event.data["job"]["id"] == "job_1"
    row = store.rows[message_id]
    assert row.delivered and row.message.attempts == 1 and row.last_status == 204
    assert outcomes == ["delivered"]


async def test_failure_then_recovery_keeps_the_webhook_id(store, clock, secret, payload, receiver) -> None:
    outcomes: list[str] = []
    receiver.script(500)
    message_id = store.add("tenant_1", receiver.url, payload)
    async with httpx.AsyncClient() as http:
        deliverer = make(store, clock, [secret], http, outcomes=outcomes)
        assert await deliverer.deliver_due() == 1
        row = store.rows[message_id]
        assert not row.delivered and row.message.attempts == 1 and row.last_status == 500
        assert row.next_attempt_at == clock() + DEFAULT_SCHEDULE[1]
        assert await deliverer.deliver_due() == 0  # not due yet
        clock.advance(DEFAULT_SCHEDULE[1])
        assert await deliverer.deliver_due() == 1
    assert row.delivered and row.message.attempts == 2
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == message_id
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) == 5
    assert first.body == second.body
    for request in (first, second):
        verify_webhook(request.body, request.headers, secret, now=clock())
    assert outcomes == ["retry", "delivered"]
    assert row.errors == ["HTTP 500"]


async def test_410_gone_stops_delivery(store, clock, secret, payload, receiver) -> None:
    outcomes: list[str] = []
    receiver.script(410)
    message_id = store.add("tenant_1", receiver.url, payload)
    async with httpx.AsyncClient() as http:
        deliverer = make(store, clock, [secret], http, outcomes=outcomes)
        await deliverer.deliver_due()
        clock.advance(7 * 86400)
        assert await deliverer.deliver_due() == 0
    row = store.rows[message_id]
    assert row.next_attempt_at is None and not row.delivered and row.last_status == 410
    assert len(receiver.requests) == 1 and outcomes == ["gone"]


@pytest.mark.parametrize(
    "retry_after, attempts_before, expected_delay",
    [
        ("120", 0, 120.0),  # longer than the schedule's 5 s: Retry-After wins
        ("10", 1, 300.0),  # shorter than the schedule's 300 s: the schedule wins
        ("9999999", 0, 86400.0),  # capped at 24 h
        ("soon", 0, 5.0),  # unparseable: ignored
    ],
)
async def test_retry_after_seconds(store, clock, secret, payload, receiver, retry_after, attempts_before, expected_delay) -> None:
    receiver.script((503, {"retry-after": retry_after}))
    message_id = store.add("tenant_1", receiver.url, payload)
    row = store.rows[message_id]
    row.message = dataclasses.replace(row.message, attempts=attempts_before)
    async with httpx.AsyncClient() as http:
        await make(store, clock, [secret], http).deliver_due()
    assert row.next_attempt_at == clock() + expected_delay
    assert row.message.attempts == attempts_before + 1 and row.last_status == 503


async def test_retry_after_http_date(store, clock, secret, payload, receiver) -> None:
    receiver.script((429, {"retry-after": formatdate(clock() + 3600, usegmt=True)}))
    message_id = store.add("tenant_1", receiver.url, payload)
    async with httpx.AsyncClient() as http:
        await make(store, clock, [secret], http).deliver_due()
    assert store.rows[message_id].next_attempt_at == clock() + 3600


def test_parse_retry_after() -> None:
    now = 1_750_000_000.0
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == 90.0
    assert parse_retry_after(formatdate(now - 90, usegmt=True), now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("-5", now) is None


async def test_gives_up_after_the_last_scheduled_attempt(store, clock, secret, payload) -> None:
    outcomes: list[str] = []
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["webhook-id"])
        return httpx.Response(502)

    message_id = store.add("tenant_1", "http://127.0.0.1:9/hook", payload)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        deliverer = make(store, clock, [secret], http, outcomes=outcomes, schedule=(0, 1, 2))
        for _ in range(3):
            assert await deliverer.deliver_due() == 1
            clock.advance(3600)
        assert await deliverer.deliver_due() == 0
    row = store.rows[message_id]
    assert row.next_attempt_at is None and row.message.attempts == 3
    assert calls == [message_id] * 3 and outcomes == ["retry", "retry", "gave_up"]


@pytest.mark.parametrize("policy", [CallbackPolicy(), LOOPBACK])
async def test_private_targets_are_refused_before_connecting(store, clock, secret, payload, policy) -> None:
    outcomes: list[str] = []
    urls = ["http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/"]
    if not policy.allowlist:
        urls.append("http://127.0.0.1:9/hook")
    ids = [store.add("tenant_1", url, payload) for url in urls]
    async with httpx.AsyncClient(transport=refusing_transport()) as http:
        assert await make(store, clock, [secret], http, policy=policy, outcomes=outcomes).deliver_due() == len(urls)
    for message_id in ids:
        row = store.rows[message_id]
        assert row.next_attempt_at is None and not row.delivered
        assert row.errors[0].startswith("callback_url_forbidden")
    assert outcomes == ["forbidden"] * len(urls)


async def test_loopback_allowed_by_allowlist(store, clock, secret, payload, receiver) -> None:
    message_id = store.add("tenant_1", receiver.url, payload)
    async with httpx.AsyncClient() as http:
        await make(store, clock, [secret], http, policy=CallbackPolicy()).deliver_due()
        assert receiver.requests == [] and store.rows[message_id].next_attempt_at is None
        other = store.add("tenant_1", receiver.url, payload)
        await make(store, clock, [secret], http, policy=LOOPBACK).deliver_due()
    assert store.rows[other].delivered and len(receiver.requests) == 1


async def test_dns_rebinding_is_caught_at_send_time(store, clock, secret, payload) -> None:
    async def rebound(host: str, port: int) -> list[str]:
        return ["10.0.0.5"]  # was public at submit time

    message_id = store.add("tenant_1", "https://hooks.example.com/x", payload)
    async with httpx.AsyncClient(transport=refusing_transport()) as http:
        await make(store, clock, [secret], http, policy=CallbackPolicy(), resolver=rebound).deliver_due()
    assert store.rows[message_id].next_attempt_at is None


async def test_unresolvable_at_send_time_is_retried(store, clock, secret, payload) -> None:
    async def nxdomain(host: str, port: int) -> list[str]:
        raise OSError("temporary failure in name resolution")

    message_id = store.add("tenant_1", "https://hooks.example.com/x", payload)
    async with httpx.AsyncClient(transport=refusing_transport()) as http:
        await make(store, clock, [secret], http, policy=CallbackPolicy(), resolver=nxdomain).deliver_due()
    assert store.rows[message_id].next_attempt_at == clock() + 5


async def test_redirects_are_not_followed(store, clock, secret, payload) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://127.0.0.1:9/elsewhere"})

    message_id = store.add("tenant_1", "http://127.0.0.1:9/hook", payload)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True) as http:
        await make(store, clock, [secret], http).deliver_due()
    assert calls == ["http://127.0.0.1:9/hook"]
    row = store.rows[message_id]
    assert row.last_status == 302 and "redirects are not followed" in row.errors[0]


async def test_transport_error_is_retried_without_leaking_the_url(store, clock, secret, payload) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}", request=request)

    url = "http://127.0.0.1:9/hook?token=s3cret"
    message_id = store.add("tenant_1", url, payload)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await make(store, clock, [secret], http).deliver_due()
    row = store.rows[message_id]
    assert row.next_attempt_at == clock() + 5 and row.last_status is None
    assert row.errors[0].startswith("ConnectError") and "s3cret" not in row.errors[0]


async def test_one_signature_per_tenant_secret(store, clock, payload, receiver) -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    store.add("tenant_1", receiver.url, payload)
    async with httpx.AsyncClient() as http:
        await make(store, clock, [new, old], http).deliver_due()
    [request] = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        verify_webhook(request.body, request.headers, secret, now=clock())


async def test_deliver_due_is_bounded_by_concurrency(store, clock, secret, payload) -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)  # yield so that concurrent sends overlap (not synchronisation)
        in_flight -= 1
        return httpx.Response(200)

    for _ in range(5):
        store.add("tenant_1", "http://127.0.0.1:9/hook", payload)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        deliverer = make(store, clock, [secret], http, concurrency=2)
        assert [await deliverer.deliver_due() for _ in range(4)] == [2, 2, 1, 0]
    assert peak <= 2 and len(store.delivered_ids) == 5


async def test_run_delivers_on_wake_and_stops(store, clock, secret, payload, receiver) -> None:
    receiver.script(500)
    stop = asyncio.Event()
    async with httpx.AsyncClient() as http:
        deliverer = make(store, clock, [secret], http, poll_interval=3600)  # only wake() can trigger
        task = asyncio.create_task(deliverer.run(stop))
        message_id = store.add("tenant_1", receiver.url, payload)
        deliverer.wake()
        await asyncio.wait_for(store.recorded.wait(), 10)  # first attempt: 500, retry in 5 s
        assert store.rows[message_id].message.attempts == 1
        store.recorded.clear()
        clock.advance(5)
        deliverer.wake()
        await asyncio.wait_for(store.recorded.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert store.delivered_ids == [message_id] and len(receiver.requests) == 2


async def test_slow_receiver_hits_the_overall_deadline(store, clock, secret, payload) -> None:
    never = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await never.wait()  # a receiver that never answers
        return httpx.Response(200)

    message_id = store.add("tenant_1", "http://127.0.0.1:9/hook", payload)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await make(store, clock, [secret], http, timeout=0.05).deliver_due()
    row = store.rows[message_id]
    assert row.next_attempt_at == clock() + 5 and row.errors == ["timed out after 0.05s"]


async def test_tenant_without_secret_is_retried_not_sent(store, clock, payload) -> None:
    message_id = store.add("tenant_1", "http://127.0.0.1:9/hook", payload)
    async with httpx.AsyncClient(transport=refusing_transport()) as http:
        await make(store, clock, [], http).deliver_due()
    row = store.rows[message_id]
    assert row.next_attempt_at == clock() + 5 and row.errors[0].startswith("cannot sign")
