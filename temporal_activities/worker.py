"""A Temporal worker for Overnight's LLM steps, with the completion bridge built in.

    OVERNIGHT_API_KEY=ovn_... OVERNIGHT_BASE_URL=http://127.0.0.1:8000 OVERNIGHT_WEBHOOK_SECRET=whsec_... \\
    python -m temporal_activities.worker --task-queue llm --address localhost:7233 \\
        --bridge-listen 127.0.0.1:8090 --workflow myapp.workflows:Summarize

Runs ``LLMJobWorkflow``, ``BatchLLMWorkflow``, every ``--workflow`` and the Overnight activities.
With ``--bridge-listen`` it also serves the completion bridge. Overnight posts webhooks to
``--bridge-url``, which defaults to ``http://<bridge-listen>/``. Without a bridge, only
``mode="poll"`` steps can run. The worker prints ``worker ready`` once it is polling, and it
shuts down gracefully on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from overnight import AsyncClient

from ._activities import OvernightActivities
from ._bridge import CompletionBridge
from ._runtime import create_worker, serve_bridge

__all__ = ["main", "parse_args", "run"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m temporal_activities.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--address", default=os.environ.get("TEMPORAL_ADDRESS", "localhost:7233"))
    parser.add_argument("--namespace", default=os.environ.get("TEMPORAL_NAMESPACE", "default"))
    parser.add_argument("--overnight-url", default=None, help="default $OVERNIGHT_BASE_URL or http://127.0.0.1:8000")
    parser.add_argument("--bridge-listen", default=None, metavar="HOST:PORT", help="serve the completion bridge here")
    parser.add_argument("--bridge-url", default=None, help="where Overnight posts webhooks (default http://<bridge-listen>/)")
    parser.add_argument("--workflow", action="append", default=[], metavar="MODULE:CLASS", help="also run this workflow (repeatable)")
    parser.add_argument("--max-concurrent-activities", type=int, default=None)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.bridge_listen and args.bridge_url is None:
        if args.bridge_listen.rpartition(":")[0] in ("0.0.0.0", "::", "[::]", ""):
            parser.error("--bridge-listen on all interfaces needs --bridge-url (the address Overnight posts to)")
        args.bridge_url = f"http://{args.bridge_listen}/"
    return args


def _load(spec: str) -> type:
    module, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"--workflow takes MODULE:CLASS, got {spec!r}")
    return getattr(importlib.import_module(module), name)


async def run(args: argparse.Namespace) -> None:
    """Connect, start the worker (and bridge), and run until SIGINT/SIGTERM."""
    client = await Client.connect(args.address, namespace=args.namespace, data_converter=pydantic_data_converter)
    overnight = AsyncClient(base_url=args.overnight_url, max_retries=0)
    activities = OvernightActivities(overnight, bridge_url=args.bridge_url)
    options = {}
    if args.max_concurrent_activities:
        options["max_concurrent_activities"] = args.max_concurrent_activities
    worker = create_worker(client, args.task_queue, activities, workflows=[_load(s) for s in args.workflow], **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if args.bridge_listen:
            secrets = [s.strip() for s in os.environ.get("OVERNIGHT_WEBHOOK_SECRET", "").split(",") if s.strip()]
            if not secrets:
                raise SystemExit("--bridge-listen needs OVERNIGHT_WEBHOOK_SECRET (the tenant's whsec_ secret)")
            host, _, port = args.bridge_listen.rpartition(":")
            await stack.enter_async_context(serve_bridge(CompletionBridge(client, secrets), host, int(port)))
        stack.push_async_callback(overnight.aclose)
        await stack.enter_async_context(worker)
        print(f"worker ready: task_queue={args.task_queue} bridge={args.bridge_url or '-'}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
