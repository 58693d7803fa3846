"""Queue throughput with a no-op engine on SQLite, side by side in one run.

    python -m bench.queue_throughput [--quick] [--out results/]

Measures, on this machine:
- submit jobs/s over HTTP: one job per request (sequential, and 16 concurrent), and bulk;
- claim-to-complete jobs/s: the dispatcher draining a backlog into a no-op engine;
- long-poll wake-up: delay between a job's finish and the waiting client's answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from overnight import AsyncClient, Client, LLMCall
from overnight._hashing import sha256_hex
from overnight.server.dispatcher import Dispatcher
from overnight.server.store.base import NewJob
from overnight.server.store.sqlite import SQLiteJobStore
from tests.live import OvernightProcess

from .noop_engine import NoopEngine

MODEL = "smollm2-135m"


def call(text: str = "x") -> LLMCall:
    return LLMCall(model=MODEL, max_tokens=8).add_user_message(text)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    scale = 1 if args.quick else 4
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "when": datetime.now().isoformat(timespec="seconds"),
    }
    results["claim_to_complete_jobs_per_s"] = asyncio.run(claim_to_complete(5000 * scale))
    with tempfile.TemporaryDirectory() as folder:
        with OvernightProcess(Path(folder), engine="bench.noop_engine:create_engine") as server:
            results.update(http_submit(server, single=500 * scale, bulk_batches=5 * scale, bulk_size=1000))
            delays = long_poll_wakeup(server, samples=50 * scale)
    results["long_poll_wakeup_ms"] = {"p50": percentile(delays, 0.5) * 1000, "p99": percentile(delays, 0.99) * 1000}

    args.out.mkdir(parents=True, exist_ok=True)
    out_file = args.out / f"queue-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out_file.write_text(json.dumps(results, indent=2))
    rows = [
        ("submit, one job per request (sequential)", f"{results['submit_sequential_jobs_per_s']:.0f} jobs/s", ""),
        ("submit, one job per request (16 concurrent)", f"{results['submit_16_concurrent_jobs_per_s']:.0f} jobs/s", ""),
        ("submit, bulk (1,000 per request)", f"{results['submit_bulk_jobs_per_s']:.0f} jobs/s", ">= 2,000"),
        ("claim-to-complete, no-op engine", f"{results['claim_to_complete_jobs_per_s']:.0f} jobs/s", ">= 1,000"),
        ("long-poll wake-up p50", f"{results['long_poll_wakeup_ms']['p50']:.1f} ms", "< 50 ms"),
        ("long-poll wake-up p99", f"{results['long_poll_wakeup_ms']['p99']:.1f} ms", "< 50 ms"),
    ]
    print(f"\nQueue throughput on SQLite, {os.cpu_count()} CPUs (raw numbers: {out_file})\n")
    print("| measure | result | aim |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
