"""The dispatcher over the real SQLite store and a deterministic engine."""

from __future__ import annotations

import asyncio

from overnight import JobState, LLMCall
from overnight._hashing import sha256_hex
from overnight.server.dispatcher import Dispatcher, DispatcherConfig
from overnight.server.store.base import NewJob, RetryPolicy
from overnight.server.store.sqlite import SQLiteJobStore
from tests.fakes import EchoEngine

MODEL = "smollm2-135m"


def new_job(text: str, **fields) -> NewJob:
    call = LLMCall(model=MODEL, **fields).add_user_message(text)
    return NewJob(call, sha256_hex(call.model_dump(mode="json")))


async def submit(store, tenant, *texts, **fields):
    return [r[0] for r in await store.submit(tenant.id, [new_job(t, **fields) for t in texts])]


class Running:
    """Run a dispatcher in the background for the length of a ``async with``."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher, self.stop = dispatcher, asyncio.Event()

    async def __aenter__(self) -> Dispatcher:
        self.task = asyncio.create_task(self.dispatcher.run(self.stop))
        return self.dispatcher

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.task


async def wait_all(store, tenant, jobs, deadline: float = 30.0):
    """Wait until every job is final; re-read the store so work finished elsewhere counts too."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    finished = []
    for job in jobs:
        while not (current := await store.get(tenant.id, job.id)).state.is_terminal:
            assert loop.time() < give_up, f"{job.id} still {current.state.value}"
            await store.events.wait_finished(job.id, 0.1)
        finished.append(current)
    return finished


async def test_runs_every_job_without_exceeding_engine_capacity(store, tenant):
    engine = EchoEngine(capacity=4)
    jobs = await submit(store, tenant, *["slow:0.01" for _ in range(20)])
    async with Running(Dispatcher(store, engine)):
        done = await wait_all(store, tenant, jobs)
    assert all(job.state is JobState.SUCCEEDED for job in done)
    assert engine.max_concurrent == 4
    assert all(count == 1 for count in engine.runs.values()) and len(engine.runs) == 20


async def test_interactive_jobs_jump_ahead_of_batch(store, tenant):
    engine = EchoEngine(capacity=1)
    batch = await submit(store, tenant, "b1", "b2", "b3", priority="batch")
    (urgent,) = await submit(store, tenant, "now", priority="interactive")
    async with Running(Dispatcher(store, engine)):
        await wait_all(store, tenant, batch + [urgent])
    order = [engine.started.get_nowait() for _ in range(4)]
    assert order[0] == urgent.id


async def test_cancel_while_running_aborts_in_the_engine(store, tenant):
    engine = EchoEngine()
    (job,) = await submit(store, tenant, "hang")
    async with Running(Dispatcher(store, engine)) as dispatcher:
        assert await engine.started.get() == job.id
        cancelled = await store.cancel(tenant.id, job.id)
        while dispatcher.in_flight:  # the abort is delivered through the event loop
            await asyncio.sleep(0)
    assert cancelled.state is JobState.CANCELLED
    assert engine.cancelled == [job.id]
    assert (await store.get(tenant.id, job.id)).state is JobState.CANCELLED


async def test_retryable_engine_failure_is_retried_with_attempts_recorded(tmp_path):
    store = SQLiteJobStore(str(tmp_path / "r.db"), retry=RetryPolicy(base_seconds=0.0))
    await store.open()
    tenant = await store.create_tenant("acme")
    (flaky,) = await submit(store, tenant, "fail-once")
    (doomed,) = await submit(store, tenant, "fail-fatal")
    async with Running(Dispatcher(store, EchoEngine())):
        flaky_done, doomed_done = await wait_all(store, tenant, [flaky, doomed])
    assert flaky_done.state is JobState.SUCCEEDED
    assert [a.error.code if a.error else None for a in flaky_done.attempts] == ["replica_died", None]
    assert doomed_done.state is JobState.FAILED and doomed_done.error.code == "context_length_exceeded"
    assert len(doomed_done.attempts) == 1
    await store.close()


async def test_shutdown_hands_running_jobs_back_to_the_queue(store, tenant):
    engine = EchoEngine()
    (job,) = await submit(store, tenant, "hang")
    async with Running(Dispatcher(store, engine, DispatcherConfig(worker_id="w1"))):
        await engine.started.get()
    after = await store.get(tenant.id, job.id)
    assert after.state is JobState.QUEUED
    assert after.attempts[0].error.code == "worker_shutdown" and engine.cancelled == [job.id]


async def test_lease_lost_elsewhere_aborts_local_work(store, tenant, clock):
    """Another dispatcher re-claimed the job after our lease ran out: our heartbeat stops us."""
    engine = EchoEngine()
    (job,) = await submit(store, tenant, "hang")
    dispatcher = Dispatcher(store, engine, DispatcherConfig(lease_seconds=30))
    await dispatcher.fill()
    assert await engine.started.get() == job.id
    clock.advance(31)
    await store.requeue_expired_leases()
    clock.advance(5)
    (reclaimed,) = await store.claim(MODEL, 1, "other", 30)
    assert reclaimed.attempt == 2
    await dispatcher._heartbeat_once()
    while dispatcher.in_flight:
        await asyncio.sleep(0)
    assert engine.cancelled == [job.id]


async def test_two_dispatchers_on_one_database_run_each_job_once(tmp_path):
    """Two dispatchers, each with its own store connection, share one SQLite file."""
    path = str(tmp_path / "shared.db")
    stores = [SQLiteJobStore(path), SQLiteJobStore(path)]
    for store in stores:
        await store.open()
    try:
        tenant = await stores[0].create_tenant("acme")
        jobs = await submit(stores[0], tenant, *["slow:0.005" for _ in range(200)])
        engines = [EchoEngine(capacity=8), EchoEngine(capacity=8)]
        dispatchers = [Dispatcher(s, e, DispatcherConfig(worker_id=f"d{i}")) for i, (s, e) in enumerate(zip(stores, engines))]
        # both hold work before the race: each claims its first capacity-full
        assert [await d.fill() for d in dispatchers] == [8, 8]
        async with Running(dispatchers[0]), Running(dispatchers[1]):
            done = await wait_all(stores[0], tenant, jobs)
        assert all(job.state is JobState.SUCCEEDED and len(job.attempts) == 1 for job in done)
        runs = engines[0].runs + engines[1].runs
        assert len(runs) == 200 and set(runs.values()) == {1}
        assert {job.attempts[0].worker for job in done} == {"d0", "d1"}
    finally:
        for store in stores:
            await store.close()
