"""Queue throughput with a no-op engine on SQLite, side by side in one run.

    python -m bench.queue_throughput [--quick] [--out results/]
    (the same as ``python -m bench run --only queue``)

Measures, on this machine, each repeat on a fresh database and service:
- submit jobs/s over HTTP: one job per request (sequential, and 16 concurrent), and bulk;
- claim-to-complete jobs/s: the dispatcher draining a backlog into a no-op engine;
- long-poll wake-up: delay between a job's finish and the waiting client's answer;
- CPU seconds of the ``overnight serve`` process per 1,000 jobs (bulk submit, run, each
  result fetched once), and that process's peak RSS. The engine does nothing, so this is
  the service's own cost: HTTP, queue, dispatcher, receipts, group commit.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from overnight import AsyncClient, Client, LLMCall
from overnight._hashing import sha256_hex
from overnight.server.dispatcher import Dispatcher
from overnight.server.store.base import NewJob
from overnight.server.store.sqlite import SQLiteJobStore
from tests.live import OvernightProcess

from .common import MODEL, PeakRSS, cpu_seconds
from .noop_engine import NoopEngine

NOOP_ENGINE = "bench.noop_engine:create_engine"


def call(text: str = "x") -> LLMCall:
    return LLMCall(model=MODEL, max_tokens=8).add_user_message(text)


async def claim_to_complete(jobs: int) -> float:
    """jobs/s for the dispatcher draining ``jobs`` queued jobs into a no-op engine."""
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteJobStore(os.path.join(folder, "q.db"))
        await store.open()
        tenant = await store.create_tenant("bench")
        body = call()
        new = NewJob(body, sha256_hex(body.model_dump(mode="json")))
        for start in range(0, jobs, 5000):
            await store.submit(tenant.id, [new] * min(5000, jobs - start))
        dispatcher = Dispatcher(store, NoopEngine([MODEL], capacity=256))
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(dispatcher.run(stop))
        while (await store.count_by_state()).get((MODEL, "succeeded"), 0) < jobs:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        await store.close()
    return jobs / elapsed


def http_submit(server: OvernightProcess, single: int, bulk_batches: int, bulk_size: int) -> dict[str, float]:
    with Client(api_key=server.api_key, base_url=server.url) as client:
        started = time.perf_counter()
        for _ in range(single):
            client.send_job(call())
        sequential = single / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(bulk_batches):
            client.send_jobs([call() for _ in range(bulk_size)])
        bulk = bulk_batches * bulk_size / (time.perf_counter() - started)

    async def concurrent() -> float:
        async with AsyncClient(api_key=server.api_key, base_url=server.url,
                               http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=16))) as client:
            semaphore = asyncio.Semaphore(16)

            async def one() -> None:
                async with semaphore:
                    await client.send_job(call())

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(single)))
            return single / (time.perf_counter() - started)

    return {"submit_sequential_jobs_per_s": sequential, "submit_16_concurrent_jobs_per_s": asyncio.run(concurrent()),
            "submit_bulk_jobs_per_s": bulk}


def long_poll_wakeup(server: OvernightProcess, samples: int) -> list[float]:
    """Seconds from a job's finished_at (server clock) to the waiting client's answer."""
    delays = []
    with Client(api_key=server.api_key, base_url=server.url) as client:
        for _ in range(samples):
            job_id = client.send_job(call("sleep:0.1"))
            job = client.wait_for_job(job_id, timeout=30)
            answered = time.time()
            delays.append(answered - job.finished_at.timestamp())
    return delays


def service_cpu(server: OvernightProcess, jobs: int) -> dict[str, float]:
    """CPU seconds the service process spends on ``jobs`` jobs: bulk submit (1,000 per
    request), dispatch into the no-op engine, and each result fetched once (long poll)."""
    assert server.proc is not None

    async def run() -> float:
        async with AsyncClient(api_key=server.api_key, base_url=server.url, timeout=600,
                               http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=64))) as client:
            semaphore = asyncio.Semaphore(64)

            async def fetch(job_id: str) -> None:
                async with semaphore:
                    job = await client.wait_for_job(job_id, timeout=600)
                    assert job.state.value == "succeeded", job.state

            before = cpu_seconds(server.proc.pid)
            items = await client.send_jobs([call() for _ in range(jobs)])
            await asyncio.gather(*(fetch(item.job.id) for item in items))
            return cpu_seconds(server.proc.pid) - before

    return {"jobs": jobs, "cpu_s": asyncio.run(run())}


def phase_queue(config: dict[str, Any]) -> dict[str, Any]:
    """Every queue measurement, ``config["cheap_repeats"]`` times; raw values per repeat."""
    sizes = config["queue"]
    runs: list[dict[str, Any]] = []
    for _ in range(config["cheap_repeats"]):
        walls: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            walls[name], clock = time.perf_counter() - clock, time.perf_counter()

        row: dict[str, Any] = {"claim_to_complete_jobs_per_s": asyncio.run(claim_to_complete(sizes["claim_jobs"]))}
        lap("claim_to_complete")
        with tempfile.TemporaryDirectory() as folder:
            with OvernightProcess(Path(folder), engine=NOOP_ENGINE) as server:
                assert server.proc is not None
                lap("service_start")
                with PeakRSS(server.proc.pid) as rss:
                    row["service_cpu"] = service_cpu(server, sizes["cpu_jobs"])
                    lap("service_cpu")
                    row.update(http_submit(server, single=sizes["single"], bulk_batches=sizes["bulk_batches"],
                                           bulk_size=1000))
                    lap("http_submit")
                    row["long_poll_wakeup_s"] = long_poll_wakeup(server, samples=sizes["long_poll_samples"])
                    lap("long_poll")
                row["service_peak_rss_bytes"] = rss.peak_bytes
        row["wall_s"] = walls
        runs.append(row)
    return {"queue": {"runs": runs, "sizes": sizes}}


def main() -> None:
    import sys

    from .__main__ import main as bench_main

    sys.exit(bench_main(["run", "--only", "queue", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
