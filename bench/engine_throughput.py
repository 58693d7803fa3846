"""Engine throughput: the same chat prompts through vLLM offline, Ray Serve, and one by one.

    python -m bench.engine_throughput [--quick] [--model smollm2-135m] [--out results/]

Same prompts (built here, no downloads), temperature 0, ``max_tokens`` 128, one machine:

- ``offline``: vLLM's ``LLM.chat`` on all prompts at once (the ceiling);
- ``serve``: every prompt sent at once through ``RayServeEngine`` (a direct Serve handle);
- ``sequential``: the same path, one job at a time (no batching), on the first
  ``--sequential`` prompts, since one request at a time is slow.

Each phase runs in its own process so that engines do not share memory; peak RSS is
the sum over that process and all its descendants (engine and Ray processes), sampled
every 0.2 s. Prints a markdown table and writes JSON to ``--out``. More phases (the full
HTTP path) plug into ``PHASES``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Self

MODEL = "smollm2-135m"
MAX_TOKENS = 128

_SUBJECTS = ["rivers", "the moon", "sourdough bread", "night trains", "jazz", "volcanoes",
             "honey bees", "chess openings", "lighthouses", "glaciers", "paper maps", "owls",
             "tea ceremonies", "bicycles", "coral reefs", "old libraries"]
_TASKS = ["Write a short paragraph about {s}.", "Explain {s} to a ten-year-old.",
          "List three surprising facts about {s}.", "Write a four-line poem about {s}.",
          "Describe a day spent studying {s}.", "Give two arguments for caring about {s}.",
          "Write a product description inspired by {s}.", "Summarise the history of {s}."]
_STYLES = ["", " Keep it simple.", " Use a cheerful tone.", " Be precise."]


def prompts(n: int) -> list[list[dict[str, str]]]:
    """``n`` distinct single-turn chats, deterministic."""
    out = []
    for i in range(n):
        subject = _SUBJECTS[i % len(_SUBJECTS)]
        task = _TASKS[(i // len(_SUBJECTS)) % len(_TASKS)]
        style = _STYLES[(i // (len(_SUBJECTS) * len(_TASKS))) % len(_STYLES)]
        out.append([{"role": "user", "content": task.format(s=subject) + style}])
    return out


class PeakRSS:
    """Samples the RSS of this process and its descendants in a thread; keeps the peak."""

    def __init__(self, interval_s: float = 0.2) -> None:
        import psutil

        self._root = psutil.Process()
        self._interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for proc in [self._root, *self._root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self._interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _spec(model: str):
    from overnight.registry import ModelRegistry

    return ModelRegistry.load().get(model)


def phase_offline(model: str, chats: list[list[dict[str, str]]], args: argparse.Namespace) -> dict:
    from vllm import LLM, SamplingParams

    from overnight.prepare import prepare_model
    from ray_backend.vllm_engine import engine_kwargs

    spec = _spec(model)
    path = prepare_model(spec)
    with PeakRSS() as rss:
        llm = LLM(**engine_kwargs(spec, str(path)))
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
        llm.chat(chats[:2], params, use_tqdm=False)  # warm-up
        started = time.perf_counter()
        outputs = llm.chat(chats, params, use_tqdm=False)
        wall = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"requests": len(chats), "output_tokens": tokens, "wall_s": wall,
            "peak_rss_bytes": rss.peak_bytes}


def phase_serve(model: str, chats: list[list[dict[str, str]]], args: argparse.Namespace) -> dict:
    """Concurrent, then sequential, through one RayServeEngine (one Ray start for both)."""
    from overnight._models import LLMCall, Priority
    from overnight.engine import EngineJob
    from ray_backend import build_engine

    def job(i: int, tag: str) -> EngineJob:
        call = LLMCall(model=model, messages=chats[i], temperature=0, max_tokens=MAX_TOKENS)
        return EngineJob(id=f"{tag}-{i}", model=model, request=call,
                         priority=Priority.BATCH, attempt=1)

    async def main() -> dict:
        engine = build_engine([model])
        with PeakRSS() as rss:
            await engine.start()
            try:
                await asyncio.gather(*(engine.run(job(i, "warm")) for i in range(2)))
                started = time.perf_counter()
                results = await asyncio.gather(*(engine.run(job(i, "c")) for i in range(len(chats))))
                concurrent_wall = time.perf_counter() - started
                seq_n = min(args.sequential, len(chats))
                started = time.perf_counter()
                seq_results = [await engine.run(job(i, "s")) for i in range(seq_n)]
                sequential_wall = time.perf_counter() - started
            finally:
                await engine.close()
        return {
            "serve": {
                "requests": len(chats),
                "output_tokens": sum(r.usage.completion_tokens for r in results),
                "wall_s": concurrent_wall,
                "peak_rss_bytes": rss.peak_bytes,
            },
            "sequential": {
                "requests": seq_n,
                "output_tokens": sum(r.usage.completion_tokens for r in seq_results),
                "wall_s": sequential_wall,
                "peak_rss_bytes": rss.peak_bytes,
            },
        }

    return asyncio.run(main())


def phase_overnight(model: str, chats: list[list[dict[str, str]]], args: argparse.Namespace) -> dict:
    """End to end: bulk HTTP submit, queue, dispatcher, Ray Serve, vLLM; then one synchronous
    ``/v1/chat/completions`` request at a time (the per-request serverless pattern)."""
    import httpx

    from overnight import AsyncClient, LLMCall
    from tests.live import OvernightProcess

    def call(i: int) -> LLMCall:
        return LLMCall(model=model, messages=chats[i], temperature=0, max_tokens=MAX_TOKENS, priority="batch")

    async def run_all(server: OvernightProcess) -> tuple[int, float]:
        async with AsyncClient(api_key=server.api_key, base_url=server.url, timeout=3600,
                               http_client=httpx.AsyncClient(limits=httpx.Limits(max_connections=300))) as client:
            warm = await client.send_jobs([call(0), call(1)])
            await asyncio.gather(*(client.wait_for_job(item.job.id) for item in warm))
            started = time.perf_counter()
            items = await client.send_jobs([call(i) for i in range(len(chats))])
            jobs = await asyncio.gather(*(client.wait_for_job(item.job.id) for item in items))
            wall = time.perf_counter() - started
        assert all(job.state.value == "succeeded" for job in jobs), "some jobs failed"
        return sum(job.usage.completion_tokens for job in jobs), wall

    with tempfile.TemporaryDirectory() as folder, PeakRSS() as rss:
        with OvernightProcess(Path(folder), engine="ray", startup_timeout=900) as server:
            tokens, wall = asyncio.run(run_all(server))
            seq_n = min(args.sequential, len(chats))
            headers = {"Authorization": f"Bearer {server.api_key}"}
            started = time.perf_counter()
            seq_tokens = 0
            with httpx.Client(base_url=server.url, headers=headers, timeout=600) as http:
                for i in range(seq_n):
                    body = {"model": model, "messages": chats[i], "temperature": 0, "max_tokens": MAX_TOKENS}
                    response = http.post("/v1/chat/completions", json=body)
                    response.raise_for_status()
                    seq_tokens += response.json()["usage"]["completion_tokens"]
            seq_wall = time.perf_counter() - started
    return {
        "overnight": {"requests": len(chats), "output_tokens": tokens, "wall_s": wall, "peak_rss_bytes": rss.peak_bytes},
        "overnight one-at-a-time": {"requests": seq_n, "output_tokens": seq_tokens, "wall_s": seq_wall,
                                    "peak_rss_bytes": rss.peak_bytes},
    }


PHASES: dict[str, Callable[[str, list, argparse.Namespace], dict]] = {
    "offline": phase_offline,
    "serve": phase_serve,  # also yields "sequential"
    "overnight": phase_overnight,  # also yields "overnight one-at-a-time"
}


def run_phase_in_subprocess(name: str, args: argparse.Namespace) -> dict[str, dict]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, "-m", "bench.engine_throughput", "--phase", name,
               "--n", str(args.n), "--sequential", str(args.sequential),
               "--model", args.model, "--phase-out", str(out)]
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parent.parent)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def table(results: dict[str, dict], n: int) -> str:
    base = results["offline"]["tok_s"]
    lines = [
        f"Output tok/s, {n} chat prompts, temperature 0, max_tokens {MAX_TOKENS}",
        "",
        "| path | requests | output tokens | wall s | output tok/s | vs offline | peak RSS GiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        lines.append(
            f"| {name} | {row['requests']} | {row['output_tokens']} | {row['wall_s']:.1f} | "
            f"{row['tok_s']:.1f} | {row['tok_s'] / base:.2f}x | "
            f"{row['peak_rss_bytes'] / 2**30:.2f} |"
        )
    if "serve" in results and "sequential" in results:
        lines.append("")
        lines.append(f"serve / sequential: {results['serve']['tok_s'] / results['sequential']['tok_s']:.1f}x")
    if "overnight" in results and "overnight one-at-a-time" in results:
        ours = results["overnight"]["tok_s"]
        lines.append(f"overnight / offline (b/a): {ours / base:.2f}x; "
                     f"overnight / one-at-a-time (b/c): {ours / results['overnight one-at-a-time']['tok_s']:.1f}x; "
                     f"overnight / serve handle: {ours / results['serve']['tok_s']:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 prompts instead of 256")
    parser.add_argument("--n", type=int, default=None, help="number of prompts")
    parser.add_argument("--sequential", type=int, default=None,
                        help="prompts for the one-at-a-time run (default 16, quick 8)")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--out", default="results", help="folder for the JSON result")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.n = args.n or (64 if args.quick else 256)
    args.sequential = args.sequential or (8 if args.quick else 16)

    if args.phase:  # child process: run one phase, write its rows
        rows = PHASES[args.phase](args.model, prompts(args.n), args)
        rows = rows if args.phase in ("serve", "overnight") else {args.phase: rows}
        Path(args.phase_out).write_text(json.dumps(rows))
        return

    results: dict[str, dict] = {}
    for name in PHASES:
        results.update(run_phase_in_subprocess(name, args))
    for row in results.values():
        row["tok_s"] = row["output_tokens"] / row["wall_s"]
    report = table(results, args.n)
    print(report)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"engine-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({
        "benchmark": "engine_throughput",
        "model": args.model,
        "prompts": args.n,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "results": results,
    }, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
