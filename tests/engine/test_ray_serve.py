"""RayServeEngine: one CPU replica of smollm2-135m behind Ray Serve (one for the module).

The replica-fault test is last: it kills the replica and waits for Serve to replace it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from overnight._models import Priority
from overnight.engine import Engine, EngineError

from .conftest import LONG_PROMPT, engine_job

MODEL = "smollm2-135m"
FRANCE = "What is the capital of France?"


async def _until_running_in_replica(engine, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while not any(job_id in s["in_flight"] for s in await engine.replica_stats(MODEL)):
        assert time.monotonic() < deadline, f"{job_id} never reached the replica"
        await asyncio.sleep(0.05)


async def test_is_an_engine_with_capacity_of_one_replica(serve_engine):
    assert isinstance(serve_engine, Engine)
    assert list(serve_engine.models) == [MODEL]
    assert serve_engine.capacity(MODEL) == 1 * 64  # one replica x max_ongoing_requests
    assert serve_engine.capacity("other") == 0
    assert len(serve_engine.replica_actors(MODEL)) == 1


async def test_answers_through_serve(serve_engine):
    result = await serve_engine.run(engine_job("s-fr", FRANCE, temperature=0))
    assert "Paris" in result.response["choices"][0]["message"]["content"]
    assert result.usage.prompt_tokens == 37 and result.usage.completion_tokens > 0


async def test_streams_text_through_serve(serve_engine):
    from dataclasses import replace

    pieces: list[str] = []
    job = replace(engine_job("s-stream", "Name three colours.", temperature=0, max_tokens=24), on_text=pieces.append)
    result = await serve_engine.run(job)
    assert len(pieces) > 3
    assert "".join(pieces) == result.response["choices"][0]["message"]["content"]


async def test_runs_32_jobs_concurrently(serve_engine):
    topics = ["rivers", "the moon", "bread", "trains", "music", "volcanoes", "bees", "chess"]
    jobs = [
        engine_job(f"s-many-{i}", f"Write two sentences about {topics[i % 8]} ({i}).",
                   priority=Priority.BATCH, temperature=0, max_tokens=64)
        for i in range(32)
    ]
    started = time.monotonic()
    results = await asyncio.gather(*(serve_engine.run(job) for job in jobs))
    wall = time.monotonic() - started

    for result in results:
        choice = result.response["choices"][0]
        assert choice["message"]["content"].strip()
        assert choice["finish_reason"] in ("stop", "length")
        usage = result.usage
        assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 64
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Batched, not one after another: the jobs' engine time adds up to far more than the wall.
    assert sum(r.engine_seconds for r in results) > 4 * wall


async def test_errors_keep_their_code_and_retryability(serve_engine):
    with pytest.raises(EngineError) as info:
        await serve_engine.run(engine_job("s-long", "word " * 3000, max_tokens=5))
    assert info.value.code == "invalid_request" and not info.value.retryable

    job = engine_job("s-unknown", FRANCE)
    job = type(job)(id=job.id, model="gpt-9", request=job.request, priority=job.priority, attempt=1)
    with pytest.raises(EngineError) as info:
        await serve_engine.run(job)
    assert info.value.code == "unknown_model" and not info.value.retryable


async def test_cancel_aborts_in_the_replica(serve_engine):
    started = time.monotonic()
    run = asyncio.create_task(
        serve_engine.run(engine_job("s-cancel", LONG_PROMPT, temperature=0, max_tokens=1500)))
    await _until_running_in_replica(serve_engine, "s-cancel")
    # a short job finishing alongside shows the long one is being decoded
    await serve_engine.run(engine_job("s-cancel-side", FRANCE, temperature=0))

    await serve_engine.cancel("s-cancel")
    with pytest.raises(EngineError) as info:
        await run
    assert info.value.code == "cancelled" and not info.value.retryable
    assert time.monotonic() - started < 30  # the full 1,500 tokens take over a minute
    stats = await serve_engine.replica_stats(MODEL)
    assert all(s["in_flight"] == [] for s in stats)


async def test_cancel_of_a_job_started_elsewhere_is_broadcast(serve_engine):
    """Another dispatcher started the job: cancel finds it on whichever replica runs it."""
    handle = serve_engine._handles[MODEL]
    body = engine_job("s-foreign", LONG_PROMPT, temperature=0, max_tokens=1500).request
    response = handle.generate.remote(body.engine_body(), "s-foreign", "batch")
    await _until_running_in_replica(serve_engine, "s-foreign")
    await serve_engine.cancel("s-foreign")
    reply = await response
    assert reply["error"]["code"] == "cancelled"


async def test_a_killed_replica_fails_the_job_retryably_and_is_replaced(serve_engine):
    import ray

    (victim,) = serve_engine.replica_actors(MODEL)
    (before,) = await serve_engine.replica_stats(MODEL)
    run = asyncio.create_task(
        serve_engine.run(engine_job("s-kill", LONG_PROMPT, temperature=0, max_tokens=1500)))
    await _until_running_in_replica(serve_engine, "s-kill")

    ray.kill(victim, no_restart=True)
    with pytest.raises(EngineError) as info:
        await run
    assert info.value.retryable
    assert info.value.code == "replica_unavailable"

    # What the store does: try again. Serve starts a new replica; the retry succeeds there.
    deadline = time.monotonic() + 240
    attempt = 1
    while True:
        attempt += 1
        try:
            result = await serve_engine.run(engine_job(f"s-kill-retry-{attempt}", FRANCE,
                                                       temperature=0))
            break
        except EngineError as exc:
            assert exc.retryable, exc.message
            assert time.monotonic() < deadline, "the replica was never replaced"
            await asyncio.sleep(1)  # the store's retry backoff
    assert "Paris" in result.response["choices"][0]["message"]["content"]
    (after,) = await serve_engine.replica_stats(MODEL)
    assert after["pid"] != before["pid"]
    assert len(serve_engine.replica_actors(MODEL)) == 1
