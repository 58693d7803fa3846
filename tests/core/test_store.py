"""Queue semantics of the SQLite store: idempotency, leases, fencing, retries, cancel, expiry."""

from __future__ import annotations

import asyncio
import json

import pytest

from overnight import ConflictError, JobError, JobState, LLMCall, NotFoundError, Usage
from overnight._hashing import sha256_hex
from overnight.server.store.base import JobFilter, JobOutcome, LeaseLost, NewJob
from overnight.server.store.sqlite import SQLiteJobStore

MODEL = "smollm2-135m"


def new_job(text: str = "hi", *, key: str | None = None, batch_id: str | None = None, **fields) -> NewJob:
    call = LLMCall(model=MODEL, **fields).add_user_message(text)
    return NewJob(call, sha256_hex(call.model_dump(mode="json")), key, batch_id)


def outcome(text: str = "ok") -> JobOutcome:
    return JobOutcome({"choices": [{"message": {"role": "assistant", "content": text}}]}, Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2), 0.5)


async def submit_one(store, tenant, *args, **kwargs):
    (result,) = await store.submit(tenant.id, [new_job(*args, **kwargs)])
    return result[0]


async def test_idempotency_same_body_returns_original_and_different_body_conflicts(store, tenant):
    first = await submit_one(store, tenant, "a", key="k1")
    (again,) = await store.submit(tenant.id, [new_job("a", key="k1")])
    assert again[0].id == first.id and again[1] is False
    (other,) = await store.submit(tenant.id, [new_job("b", key="k1")])
    assert isinstance(other, ConflictError) and other.code == "idempotency_conflict"
    # the same key in another tenant is a different job
    other_tenant = await store.create_tenant("globex")
    (theirs,) = await store.submit(other_tenant.id, [new_job("a", key="k1")])
    assert theirs[0].id != first.id


async def test_duplicate_keys_inside_one_bulk_submit(store, tenant):
    results = await store.submit(tenant.id, [new_job("a", key="k"), new_job("a", key="k"), new_job("b", key="k")])
    assert results[0][0].id == results[1][0].id and results[1][1] is False
    assert isinstance(results[2], ConflictError)


async def test_claim_orders_by_priority_then_age_and_respects_limit(store, tenant):
    batch = await submit_one(store, tenant, "b", priority="batch")
    standard = await submit_one(store, tenant, "s")
    interactive = await submit_one(store, tenant, "i", priority="interactive")
    claimed = await store.claim(MODEL, 2, "w", 30)
    assert [c.id for c in claimed] == [interactive.id, standard.id]
    assert all(c.attempt == 1 for c in claimed)
    assert [c.id for c in await store.claim(MODEL, 5, "w", 30)] == [batch.id]
    assert await store.claim(MODEL, 5, "w", 30) == []
    assert await store.claim("other-model", 5, "w", 30) == []


async def test_complete_records_result_usage_and_attempt(store, tenant):
    job = await submit_one(store, tenant)
    (claimed,) = await store.claim(MODEL, 1, "worker-1", 30)
    done = await store.complete(job.id, claimed.attempt, outcome("hello"))
    assert done.state is JobState.SUCCEEDED and done.text == "hello"
    assert done.usage.total_tokens == 2 and done.timings.engine_seconds == 0.5
    assert [(a.number, a.worker, a.error) for a in done.attempts] == [(1, "worker-1", None)]
    assert done.attempts[0].ended_at is not None and done.finished_at is not None


async def test_lease_expiry_requeues_with_backoff_and_fences_the_stale_worker(store, tenant, clock):
    job = await submit_one(store, tenant)
    (first,) = await store.claim(MODEL, 1, "w1", 30)
    clock.advance(31)
    assert await store.requeue_expired_leases() == [job.id]
    requeued = await store.get(tenant.id, job.id)
    assert requeued.state is JobState.QUEUED and requeued.attempts[0].error.code == "lease_expired"
    # backoff: not claimable until the retry delay (1 s for attempt 1) has passed
    assert await store.claim(MODEL, 1, "w2", 30) == []
    clock.advance(1.0)
    (second,) = await store.claim(MODEL, 1, "w2", 30)
    assert second.attempt == 2
    # the first worker wakes up: every write of attempt 1 is refused
    with pytest.raises(LeaseLost):
        await store.heartbeat(job.id, first.attempt, 30)
    with pytest.raises(LeaseLost):
        await store.complete(job.id, first.attempt, outcome("stale"))
    with pytest.raises(LeaseLost):
        await store.fail(job.id, first.attempt, JobError(code="x", message="x"))
    done = await store.complete(job.id, second.attempt, outcome("fresh"))
    assert done.text == "fresh" and len(done.attempts) == 2


async def test_heartbeat_extends_the_lease(store, tenant, clock):
    job = await submit_one(store, tenant)
    (claimed,) = await store.claim(MODEL, 1, "w", 30)
    clock.advance(20)
    await store.heartbeat(job.id, claimed.attempt, 30)
    clock.advance(20)
    assert await store.requeue_expired_leases() == []
    clock.advance(11)
    assert await store.requeue_expired_leases() == [job.id]


async def test_retryable_failures_stop_at_max_attempts(store, tenant, clock):
    job = await submit_one(store, tenant, max_attempts=2)
    error = JobError(code="replica_died", message="boom", retryable=True)
    (c1,) = await store.claim(MODEL, 1, "w", 30)
    assert (await store.fail(job.id, c1.attempt, error)).state is JobState.QUEUED
    clock.advance(10)
    (c2,) = await store.claim(MODEL, 1, "w", 30)
    failed = await store.fail(job.id, c2.attempt, error)
    assert failed.state is JobState.FAILED
    assert failed.error.code == "replica_died" and failed.error.retryable is False
    assert "after 2 attempt" in failed.error.message
    assert len(failed.attempts) == 2


async def test_non_retryable_failure_ends_at_once(store, tenant):
    job = await submit_one(store, tenant, max_attempts=5)
    (c1,) = await store.claim(MODEL, 1, "w", 30)
    failed = await store.fail(job.id, c1.attempt, JobError(code="bad_prompt", message="no", retryable=False))
    assert failed.state is JobState.FAILED and len(failed.attempts) == 1


async def test_lease_expiry_past_max_attempts_fails(store, tenant, clock):
    job = await submit_one(store, tenant, max_attempts=1)
    await store.claim(MODEL, 1, "w", 30)
    clock.advance(31)
    await store.requeue_expired_leases()
    failed = await store.get(tenant.id, job.id)
    assert failed.state is JobState.FAILED and failed.error.code == "lease_expired"


async def test_cancel_queued_and_running(store, tenant):
    queued = await submit_one(store, tenant, "q")
    assert (await store.cancel(tenant.id, queued.id)).state is JobState.CANCELLED
    assert await store.claim(MODEL, 5, "w", 30) == []

    running = await submit_one(store, tenant, "r")
    cancelled_events: list[str] = []
    store.events.on_cancel(cancelled_events.append)
    (claimed,) = await store.claim(MODEL, 1, "w", 30)
    assert (await store.cancel(tenant.id, running.id)).state is JobState.CANCELLED
    assert cancelled_events == [running.id]
    with pytest.raises(LeaseLost):
        await store.complete(running.id, claimed.attempt, outcome())
    # cancelling twice is harmless; cancelling a finished job is a conflict
    assert (await store.cancel(tenant.id, running.id)).state is JobState.CANCELLED
    done = await submit_one(store, tenant, "d")
    (c,) = await store.claim(MODEL, 1, "w", 30)
    await store.complete(done.id, c.attempt, outcome())
    with pytest.raises(ConflictError):
        await store.cancel(tenant.id, done.id)


async def test_expiry_past_completion_window(store, tenant, clock):
    queued = await submit_one(store, tenant, "q", completion_window="60s")
    running = await submit_one(store, tenant, "r", completion_window="60s")
    later = await submit_one(store, tenant, "l", completion_window="1h")
    (claimed,) = await store.claim(MODEL, 1, "w", 300)
    assert claimed.id == queued.id  # oldest first
    clock.advance(61)
    assert sorted(await store.expire_overdue()) == sorted([queued.id, running.id])
    assert (await store.get(tenant.id, running.id)).state is JobState.EXPIRED
    assert (await store.get(tenant.id, queued.id)).error.code == "expired"
    # an expired job is never claimed; the one with a longer window still is
    assert [c.id for c in await store.claim(MODEL, 5, "w", 30)] == [later.id]


async def test_tenant_isolation(store, tenant):
    job = await submit_one(store, tenant)
    other = await store.create_tenant("globex")
    with pytest.raises(NotFoundError):
        await store.get(other.id, job.id)
    with pytest.raises(NotFoundError):
        await store.cancel(other.id, job.id)
    assert (await store.list(other.id, JobFilter(), 10, None))[0] == []


async def test_list_paginates_newest_first_with_filters(store, tenant):
    jobs = [await submit_one(store, tenant, f"m{i}", metadata={"doc": str(i % 2)}) for i in range(5)]
    page1, cursor = await store.list(tenant.id, JobFilter(), 2, None)
    page2, cursor2 = await store.list(tenant.id, JobFilter(), 2, cursor)
    page3, cursor3 = await store.list(tenant.id, JobFilter(), 2, cursor2)
    assert [j.id for j in page1 + page2 + page3] == [j.id for j in reversed(jobs)]
    assert cursor3 is None
    odd, _ = await store.list(tenant.id, JobFilter(metadata={"doc": "1"}), 10, None)
    assert {j.id for j in odd} == {jobs[1].id, jobs[3].id}
    await store.cancel(tenant.id, jobs[0].id)
    cancelled, _ = await store.list(tenant.id, JobFilter(state=JobState.CANCELLED), 10, None)
    assert [j.id for j in cancelled] == [jobs[0].id]


async def test_webhook_outbox_row_commits_with_the_result(store, tenant):
    job = await submit_one(store, tenant, callback_url="https://hooks.example.com/done")
    assert await store.claim_due_webhooks(10, 30) == []
    (claimed,) = await store.claim(MODEL, 1, "w", 30)
    await store.complete(job.id, claimed.attempt, outcome("hello"))
    (message,) = await store.claim_due_webhooks(10, 30)
    body = json.loads(message.payload)
    assert message.url == "https://hooks.example.com/done" and message.event_type == "job.succeeded"
    assert body["type"] == "job.succeeded" and body["data"]["id"] == job.id
    assert body["data"]["result"]["choices"][0]["message"]["content"] == "hello"
    # leased: not handed out twice while being delivered
    assert await store.claim_due_webhooks(10, 30) == []
    await store.mark_webhook_delivered(message.id, 200)


async def test_failed_transition_rolls_back_the_outbox_row(store, tenant):
    """A stale completion writes neither a result nor a webhook."""
    job = await submit_one(store, tenant, callback_url="https://hooks.example.com/done")
    (claimed,) = await store.claim(MODEL, 1, "w", 30)
    await store.cancel(tenant.id, job.id)
    (cancel_message,) = await store.claim_due_webhooks(10, 30)
    assert cancel_message.event_type == "job.cancelled"
    with pytest.raises(LeaseLost):
        await store.complete(job.id, claimed.attempt, outcome())
    assert await store.claim_due_webhooks(10, 0) == []


async def test_batch_completed_event_when_last_job_ends(store, tenant):
    batch_id = await store.create_batch(tenant.id, "https://hooks.example.com/batch", {"run": "nightly"})
    results = await store.submit(tenant.id, [new_job("a", batch_id=batch_id), new_job("b", batch_id=batch_id)])
    a, b = (r[0] for r in results)
    claimed = await store.claim(MODEL, 2, "w", 30)
    await store.complete(a.id, claimed[0].attempt, outcome())
    assert await store.claim_due_webhooks(10, 30) == []
    await store.fail(b.id, claimed[1].attempt, JobError(code="x", message="y"))
    (message,) = await store.claim_due_webhooks(10, 30)
    body = json.loads(message.payload)
    assert body["type"] == "batch.completed"
    assert body["data"]["request_counts"] == {"succeeded": 1, "failed": 1}
    assert body["data"]["metadata"] == {"run": "nightly"}


async def test_migrations_are_versioned_and_reapplied_safely(tmp_path):
    path = str(tmp_path / "m.db")
    for _ in range(2):
        store = SQLiteJobStore(path)
        await store.open()
        async with store._read() as db:
            versions = [row[0] for row in await (await db.execute("SELECT version FROM schema_migrations")).fetchall()]
            mode = (await (await db.execute("PRAGMA journal_mode")).fetchone())[0]
        await store.close()
        assert versions == [1, 2, 3] and mode == "wal"


async def test_two_stores_on_one_database_never_claim_a_job_twice(tmp_path):
    """Two dispatchers, each with its own connection, race for 300 jobs."""
    path = str(tmp_path / "shared.db")
    a, b = SQLiteJobStore(path), SQLiteJobStore(path)
    await a.open()
    await b.open()
    try:
        tenant = await a.create_tenant("acme")
        await a.submit(tenant.id, [new_job(f"j{i}") for i in range(300)])
        claimed: dict[str, list[str]] = {"a": [], "b": []}

        async def drain(name: str, store: SQLiteJobStore, first: list) -> None:
            batch = first
            while batch:
                for job in batch:
                    claimed[name].append(job.id)
                    await store.complete(job.id, job.attempt, outcome())
                batch = await store.claim(MODEL, 7, name, 30)

        # each holds leases before the race starts, so both surely take part
        first_a, first_b = await a.claim(MODEL, 7, "a", 30), await b.claim(MODEL, 7, "b", 30)
        assert not {j.id for j in first_a} & {j.id for j in first_b}
        await asyncio.gather(drain("a", a, first_a), drain("b", b, first_b))
        everything = claimed["a"] + claimed["b"]
        assert len(everything) == 300 and len(set(everything)) == 300
        assert await a.count_by_state() == {(MODEL, "succeeded"): 300}
    finally:
        await a.close()
        await b.close()
