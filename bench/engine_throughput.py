"""Engine throughput: the same chat prompts through every inference path, side by side.

    python -m bench.engine_throughput [--quick] [--model smollm2-135m] [--out results/]
    (the same as ``python -m bench run --only offline,run-batch,ray``)

Same prompts (built here, no downloads), temperature 0, ``max_tokens`` 128, one machine.
Three phases, each in its own process (one engine start per phase; start-up is timed
apart and never counted in a throughput):

- ``offline``: vLLM's ``LLM.chat`` (the ceiling).
- ``run_batch``: ``vllm run-batch`` on the prompts as an OpenAI batch file. The command's
  own code (``vllm.entrypoints.launchers.run_batch``) runs in-process on one engine, so
  its engine start-up is left out of the timing as for every other path.
- ``ray``: one Ray cluster (local, or ``RAY_ADDRESS``) with a real ``overnight serve``
  process on it. The same Serve replica is then driven three ways: a direct Serve handle
  from this process; Overnight end to end (bulk HTTP submit, queue, dispatcher, Serve,
  vLLM; long-poll waits); and an OpenAI batch file through ``/v1/files`` + ``/v1/batches``.
  Also: synchronous ``/v1/chat/completions`` at 1 (one-at-a-time, the per-request
  serverless pattern) and more concurrent clients, and the added latency of
  ``chat.completions`` over a direct handle call, in interleaved pairs.

Every phase also runs a concurrency sweep: ``c`` requests in flight at a time, for ``c``
in ``levels``. A phase returns raw numbers only; ``bench/report.py`` derives the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .common import CpuWindow, PeakRSS, chunks, cpu_seconds, prompts, vllm_kwargs

WARMUP_MAX_TOKENS = 8


def run_row(requests: int, output_tokens: int, wall_s: float) -> dict[str, Any]:
    return {"requests": requests, "output_tokens": output_tokens, "wall_s": wall_s,
            "tok_s": output_tokens / wall_s if wall_s > 0 else 0.0}


def sweep_requests(config: dict[str, Any], level: int) -> int:
    """Requests sent at concurrency ``level``: at least one full wave of ``level``."""
    return min(config["n"], max(level * config["sweep_waves"], config["sweep_min_requests"]))


def batch_file_lines(chats: list[list[dict[str, str]]], model: str, max_tokens: int) -> list[str]:
    """The prompts as an OpenAI batch input file, one ``/v1/chat/completions`` line each."""
    return [json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": model, "messages": chat, "temperature": 0, "max_tokens": max_tokens}})
            for i, chat in enumerate(chats)]


def batch_output_tokens(lines: list[str]) -> tuple[int, int]:
    """``(completion tokens, failed lines)`` of an OpenAI batch output file."""
    tokens = failed = 0
    for line in filter(str.strip, lines):
        row = json.loads(line)
        body = (row.get("response") or {}).get("body") or {}
        if row.get("error") or (row.get("response") or {}).get("status_code", 200) != 200 or "usage" not in body:
            failed += 1
            continue
        tokens += body["usage"]["completion_tokens"]
    return tokens, failed


async def closed_loop(one: Callable[[int], Awaitable[int]], requests: int, concurrency: int) -> dict[str, Any]:
    """``requests`` calls of ``one(i)`` (which returns output tokens), ``concurrency`` at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> int:
        async with semaphore:
            return await one(i)

    started = time.perf_counter()
    tokens = await asyncio.gather(*(limited(i) for i in range(requests)))
    return run_row(requests, sum(tokens), time.perf_counter() - started)


# -- vLLM offline --------------------------------------------------------------------------

def phase_offline(config: dict[str, Any]) -> dict[str, Any]:
    """``LLM.chat`` on all prompts at once (repeated), then chunk by chunk for the sweep."""
    from vllm import LLM, SamplingParams

    chats = prompts(config["n"])
    kwargs = vllm_kwargs(config["model"])
    with PeakRSS() as rss:
        started = time.perf_counter()
        llm = LLM(**kwargs)
        start_s = time.perf_counter() - started
        params = SamplingParams(temperature=0, max_tokens=config["max_tokens"])
        llm.chat(chats[:2], SamplingParams(temperature=0, max_tokens=WARMUP_MAX_TOKENS), use_tqdm=False)

        def run(batch: list, size: int) -> dict[str, Any]:
            started = time.perf_counter()
            tokens = 0
            for part in chunks(batch, size):
                outputs = llm.chat(part, params, use_tqdm=False)
                tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
            return run_row(len(batch), tokens, time.perf_counter() - started)

        def measured(batch: list, size: int) -> dict[str, Any]:
            with CpuWindow() as cpu:
                row = run(batch, size)
            return {**row, "cpu": cpu.result}

        main = [measured(chats, len(chats)) for _ in range(config["engine_repeats"])]
        sweep = {str(c): [run(chats[:sweep_requests(config, c)], c) for _ in range(config["sweep_repeats"])]
                 for c in config["levels"]}
    return {"offline": {"main": main, "sweep": sweep, "engine_start_s": start_s, "peak_rss_bytes": rss.peak_bytes,
                        "engine_kwargs": kwargs}}


# -- vllm run-batch ------------------------------------------------------------------------

def run_batch_argv(kwargs: dict[str, Any], input_file: str, output_file: str) -> list[str]:
    """``vllm run-batch`` arguments with the registry's engine settings."""
    argv = ["-i", input_file, "-o", output_file]
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, (dict, list)):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


def phase_run_batch(config: dict[str, Any]) -> dict[str, Any]:
    """``vllm run-batch`` on the prompts as a batch file (repeated), then on files of ``c``
    lines for the sweep. One engine serves every file, as it would one CLI call per file
    minus the engine start (timed apart)."""
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.run_batch import make_arg_parser, run_batch, validate_run_batch_args
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    model, max_tokens = config["model"], config["max_tokens"]
    chats = prompts(config["n"])
    kwargs = vllm_kwargs(model)
    folder = Path(tempfile.mkdtemp(prefix="bench-run-batch-"))
    argv = run_batch_argv(kwargs, str(folder / "in.jsonl"), str(folder / "out.jsonl"))
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv)
    validate_run_batch_args(args)

    async def main() -> dict[str, Any]:
        started = time.perf_counter()
        async with build_async_engine_client(args, usage_context=UsageContext.OPENAI_BATCH_RUNNER) as client:
            start_s = time.perf_counter() - started

            async def run_files(batch: list, size: int, tokens_cap: int = max_tokens) -> dict[str, Any]:
                started = time.perf_counter()
                tokens = 0
                for part in chunks(batch, size):
                    args.input_file = str(folder / "in.jsonl")
                    args.output_file = str(folder / "out.jsonl")
                    Path(args.input_file).write_text("\n".join(batch_file_lines(part, model, tokens_cap)) + "\n")
                    await run_batch(client, args)
                    got, failed = batch_output_tokens(Path(args.output_file).read_text().splitlines())
                    if failed:
                        raise RuntimeError(f"vllm run-batch failed {failed} lines")
                    tokens += got
                return run_row(len(batch), tokens, time.perf_counter() - started)

            await run_files(chats[:2], 2, WARMUP_MAX_TOKENS)
            main_runs = []
            for _ in range(config["engine_repeats"]):
                with CpuWindow() as cpu:
                    row = await run_files(chats, len(chats))
                main_runs.append({**row, "cpu": cpu.result})
            sweep = {str(c): [await run_files(chats[:sweep_requests(config, c)], c)
                              for _ in range(config["sweep_repeats"])] for c in config["levels"]}
        return {"main": main_runs, "sweep": sweep, "engine_start_s": start_s}

    with PeakRSS() as rss:
        result = asyncio.run(main())
    result["peak_rss_bytes"] = rss.peak_bytes
    result["command"] = "vllm run-batch " + " ".join(argv)
    return {"run-batch": result}


# -- Ray Serve: direct handle, and Overnight on the same replica ---------------------------

def phase_ray(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray cluster, one ``overnight serve`` on it, every Serve path on its replica."""
    import ray
    from ray import serve

    from ray_backend.cluster import LocalRaySettings, init_ray
    from ray_backend.replica import app_name
    from tests.live import OvernightProcess

    model = config["model"]
    with tempfile.TemporaryDirectory() as folder, PeakRSS() as tree:
        started = time.perf_counter()
        started_ray = init_ray(local=LocalRaySettings(log_to_driver=False))
        try:
            # the service joins this cluster, so the handle below reaches its very replica
            if not os.environ.get("RAY_ADDRESS"):
                os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
            with OvernightProcess(Path(folder), engine="ray", startup_timeout=900,
                                  extra_args=["--models", model]) as server:
                start_s = time.perf_counter() - started
                with PeakRSS(server.proc.pid) as service:
                    handle = serve.get_app_handle(app_name(model))
                    result = asyncio.run(_ray_measurements(config, server, handle))
                service_peak = service.peak_bytes
        finally:
            if started_ray:
                ray.shutdown()
    result["engine_start_s"] = start_s
    result["tree_peak_rss_bytes"] = tree.peak_bytes
    result["service_peak_rss_bytes"] = service_peak
    return result


async def _ray_measurements(config: dict[str, Any], server: Any, handle: Any) -> dict[str, Any]:
    import httpx

    from overnight import AsyncClient, LLMCall

    model, max_tokens, n = config["model"], config["max_tokens"], config["n"]
    chats = prompts(n)
    pid = server.proc.pid
    headers = {"Authorization": f"Bearer {server.api_key}"}
    limits = httpx.Limits(max_connections=max(300, n + 10), max_keepalive_connections=max(300, n + 10))
    out: dict[str, Any] = {}

    def body(i: int, tokens: int = max_tokens) -> dict[str, Any]:
        return {"model": model, "messages": chats[i % n], "temperature": 0, "max_tokens": tokens}

    async def direct(i: int, tokens: int = max_tokens, priority: str = "batch") -> int:
        call = LLMCall(**body(i, tokens))
        reply = await handle.generate.remote(call.engine_body(), f"direct-{time.time_ns()}-{i}", priority)
        if "error" in reply:
            raise RuntimeError(f"direct handle call failed: {reply['error']}")
        return reply["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=3600, limits=limits) as http, \
            AsyncClient(api_key=server.api_key, base_url=server.url, timeout=3600,
                        http_client=httpx.AsyncClient(limits=limits)) as client:

        async def chat(i: int, tokens: int = max_tokens) -> int:
            response = await http.post("/v1/chat/completions", json=body(i, tokens))
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

        async def overnight_bulk() -> tuple[dict[str, Any], list[dict[str, float]], float]:
            calls = [LLMCall(**body(i), priority="batch") for i in range(n)]
            cpu_before = cpu_seconds(pid)
            started = time.perf_counter()
            items = await client.send_jobs(calls)
            jobs = await asyncio.gather(*(client.wait_for_job(item.job.id) for item in items))
            wall = time.perf_counter() - started
            cpu = cpu_seconds(pid) - cpu_before
            failed = [job.id for job in jobs if job.state.value != "succeeded"]
            if failed:
                raise RuntimeError(f"{len(failed)} Overnight jobs did not succeed, e.g. {failed[0]}")
            timings = [{"queued_s": job.timings.queued_seconds, "engine_s": job.timings.engine_seconds,
                        "end_to_end_s": (job.finished_at - job.created_at).total_seconds()} for job in jobs]
            return run_row(n, sum(job.usage.completion_tokens for job in jobs), wall), timings, cpu

        async def openai_batch() -> dict[str, Any]:
            data = ("\n".join(batch_file_lines(chats, model, max_tokens)) + "\n").encode()
            started = time.perf_counter()
            file = (await http.post("/v1/files", data={"purpose": "batch"},
                                    files={"file": ("bench.jsonl", data, "application/jsonl")})).raise_for_status().json()
            batch = (await http.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                                          "completion_window": "24h"})).raise_for_status().json()
            while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                await asyncio.sleep(0.1)
                batch = (await http.get(f"/v1/batches/{batch['id']}")).raise_for_status().json()
            if batch["status"] != "completed" or not batch.get("output_file_id"):
                raise RuntimeError(f"OpenAI batch ended {batch['status']}: {batch.get('errors')}")
            content = (await http.get(f"/v1/files/{batch['output_file_id']}/content")).raise_for_status().text
            wall = time.perf_counter() - started
            tokens, failed = batch_output_tokens(content.splitlines())
            if failed:
                raise RuntimeError(f"{failed} lines of the Overnight batch failed")
            return run_row(n, tokens, wall)

        # warm up every path once, with short answers
        await asyncio.gather(direct(0, WARMUP_MAX_TOKENS), direct(1, WARMUP_MAX_TOKENS))
        warm = await client.send_jobs([LLMCall(**body(i, WARMUP_MAX_TOKENS)) for i in range(2)])
        await asyncio.gather(*(client.wait_for_job(item.job.id) for item in warm))
        await chat(0, WARMUP_MAX_TOKENS)

        # chat.completions through the queue against a direct handle call, interleaved pairs
        pairs = []
        for i in range(config["overhead_samples"]):
            started = time.perf_counter()
            await direct(i, config["overhead_max_tokens"], "interactive")
            direct_s = time.perf_counter() - started
            started = time.perf_counter()
            await chat(i, config["overhead_max_tokens"])
            pairs.append({"direct_s": direct_s, "chat_s": time.perf_counter() - started})
        out["chat_overhead"] = {"max_tokens": config["overhead_max_tokens"], "pairs": pairs}

        serve_main, overnight_main, batch_main, timings, cpu = [], [], [], [], []
        pids = {"service": pid, "client": os.getpid()}
        for _ in range(config["engine_repeats"]):  # the systems take turns, so drift hits each alike
            with CpuWindow(pids) as window:
                row = await closed_loop(direct, n, n)
            serve_main.append({**row, "cpu": window.result})
            with CpuWindow(pids) as window:
                row, job_timings, cpu_s = await overnight_bulk()
            overnight_main.append({**row, "cpu": window.result})
            timings += job_timings
            cpu.append({"jobs": n, "cpu_s": cpu_s, "wall_s": row["wall_s"]})
            with CpuWindow(pids) as window:
                row = await openai_batch()
            batch_main.append({**row, "cpu": window.result})

        serve_sweep: dict[str, list] = {}
        chat_sweep: dict[str, list] = {}
        for c in config["levels"]:
            requests = sweep_requests(config, c)
            for _ in range(config["sweep_repeats"]):
                serve_sweep.setdefault(str(c), []).append(await closed_loop(direct, requests, c))
                chat_sweep.setdefault(str(c), []).append(await closed_loop(chat, requests, c))

    out["serve"] = {"main": serve_main, "sweep": serve_sweep}
    out["overnight"] = {"main": overnight_main, "job_timings": timings, "service_cpu": cpu}
    out["overnight-batch"] = {"main": batch_main}
    out["overnight-chat"] = {"sweep": chat_sweep}
    return out


def main() -> None:
    import sys

    from .__main__ import main as bench_main

    sys.exit(bench_main(["run", "--only", "offline,run-batch,ray", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
