"""``overnight submit | status | wait | cancel``: the client from the shell.

    overnight submit prompts.jsonl --out results.jsonl     # bulk submit, progress bar, wait
    overnight status job_123
    overnight wait job_123 --timeout 600
    overnight cancel job_123

Each input line is a job body (``{"model": ..., "messages": [...]}``) or an OpenAI batch
line (``{"custom_id": ..., "method": "POST", "url": ..., "body": {...}}``). A file of OpenAI
batch lines gets OpenAI-format output lines (``id``, ``custom_id``, ``response``, ``error``). The key and URL come from ``--api-key`` /
``--base-url`` or ``OVERNIGHT_API_KEY`` / ``OVERNIGHT_BASE_URL``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from .._client import Client
from .._exceptions import OvernightError
from .._models import LLMCall, batch_output_line

__all__ = ["add_parser"]


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-key", default=None, help="default $OVERNIGHT_API_KEY")
    common.add_argument("--base-url", default=None, help="default $OVERNIGHT_BASE_URL or http://127.0.0.1:8000")

    submit = subparsers.add_parser("submit", parents=[common], help="submit a JSONL file of jobs")
    submit.add_argument("file", type=Path)
    submit.add_argument("--out", type=Path, default=None, help="results JSONL (default FILE.results.jsonl)")
    submit.add_argument("--model", default=None, help="model for lines that name none")
    submit.add_argument("--callback-url", default=None, help="receives batch.completed")
    submit.add_argument("--no-wait", action="store_true", help="print job ids and return at once")
    submit.set_defaults(func=submit_file)

    for name, func, help_text in (
        ("status", show_status, "show a job"),
        ("wait", wait_job, "wait for a job to end and show it"),
        ("cancel", cancel_job, "cancel a queued or running job"),
    ):
        command = subparsers.add_parser(name, parents=[common], help=help_text)
        command.add_argument("job_id")
        if name == "wait":
            command.add_argument("--timeout", type=float, default=None)
        command.set_defaults(func=func)


def _client(args: argparse.Namespace) -> Client:
    return Client(api_key=args.api_key, base_url=args.base_url)


def _read_jobs(path: Path, default_model: str | None) -> tuple[list[LLMCall], list[str | None], bool]:
    """The calls, their custom ids, and whether the file is in OpenAI batch format."""
    calls, custom_ids, openai_lines = [], [], 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row: dict[str, Any] = json.loads(line)
            custom_id = row.get("custom_id")
            openai_lines += "body" in row
            body = dict(row["body"]) if "body" in row else row
            body.pop("custom_id", None)
            if default_model and "model" not in body:
                body["model"] = default_model
            if custom_id is not None:
                body.setdefault("metadata", {})["custom_id"] = str(custom_id)
            calls.append(LLMCall.model_validate(body))
            custom_ids.append(custom_id)
        except (ValueError, KeyError) as exc:
            raise SystemExit(f"{path}:{number}: not a job: {exc}")
    return calls, custom_ids, openai_lines == len(calls) > 0


def submit_file(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    calls, custom_ids, openai_format = _read_jobs(args.file, args.model)
    out_path = args.out or args.file.with_suffix(".results.jsonl")
    with _client(args) as client:
        items = client.send_jobs(calls, callback_url=args.callback_url, progress=True)
        if args.no_wait:
            for item in items:
                print(item.job.id if item.job else f"error: {item.error.message if item.error else '?'}")
            return 0
        failures = 0
        with Progress(console=console) as progress, out_path.open("w") as out:
            task = progress.add_task("running", total=len(items))
            for item in items:
                custom_id = custom_ids[item.index]
                if item.job is None:
                    error = item.error.model_dump() if item.error else None
                    row: dict[str, Any] = (
                        {"id": None, "custom_id": custom_id, "response": None, "error": error}
                        if openai_format else {"index": item.index, "custom_id": custom_id, "state": "rejected", "error": error}
                    )
                    failures += 1
                else:
                    job = client.wait_for_job(item.job.id)
                    failures += job.state.value != "succeeded"
                    row = batch_output_line(job) if openai_format else {
                        "index": item.index, "custom_id": custom_id, "job_id": job.id, "state": job.state.value,
                        "text": job.text, "usage": job.usage.model_dump() if job.usage else None,
                        "error": job.error.model_dump() if job.error else None,
                    }
                out.write(json.dumps(row) + "\n")
                progress.advance(task)
    console.print(f"{len(items) - failures}/{len(items)} succeeded; results in {out_path}")
    return 1 if failures else 0


def _print_job(args: argparse.Namespace, action: str) -> int:
    try:
        with _client(args) as client:
            if action == "status":
                job = client.get_job(args.job_id)
            elif action == "wait":
                job = client.wait_for_job(args.job_id, timeout=args.timeout)
            else:
                job = client.cancel_job(args.job_id)
    except OvernightError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    print(job.model_dump_json(indent=2))
    return 0


def show_status(args: argparse.Namespace) -> int:
    return _print_job(args, "status")


def wait_job(args: argparse.Namespace) -> int:
    return _print_job(args, "wait")


def cancel_job(args: argparse.Namespace) -> int:
    return _print_job(args, "cancel")
