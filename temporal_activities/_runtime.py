"""Wiring for an existing Temporal project: a worker with Overnight's activities and workflows,
and the completion bridge served in the same process.

    client = await Client.connect("localhost:7233", data_converter=pydantic_data_converter)
    activities = OvernightActivities(AsyncClient(max_retries=0), bridge_url="http://127.0.0.1:8090/")
    worker = create_worker(client, "llm", activities, workflows=[MyWorkflow])
    async with serve_bridge(CompletionBridge(client, "whsec_..."), "127.0.0.1", 8090), worker:
        ...

``create_worker`` registers ``WORKFLOWS`` and the activities. It uses a sandbox that passes
``overnight`` and ``temporal_activities`` through, so a workflow run does not re-import them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ._activities import OvernightActivities
from ._bridge import CompletionBridge
from ._workflows import BatchLLMWorkflow, LLMJobWorkflow

__all__ = ["WORKFLOWS", "create_worker", "serve_bridge", "workflow_runner"]

WORKFLOWS: tuple[type, ...] = (LLMJobWorkflow, BatchLLMWorkflow)
PASSTHROUGH_MODULES = ("overnight", "temporal_activities")


def workflow_runner(*extra_passthrough: str) -> SandboxedWorkflowRunner:
    """The default sandbox, with ``overnight`` and ``temporal_activities`` (and ``extra_passthrough``)
    imported once, outside it. Their code is deterministic. It is passed through for speed."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES, *extra_passthrough)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def create_worker(client: Client, task_queue: str, overnight: OvernightActivities, *,
                  workflows: Sequence[type] = (), activities: Sequence[Callable[..., Any]] = (),
                  **options: Any) -> Worker:
    """A ``Worker`` running Overnight's workflows and activities, plus your ``workflows`` and
    ``activities``. ``options`` go to ``Worker`` unchanged (``max_concurrent_activities``, ...)."""
    options.setdefault("workflow_runner", workflow_runner())
    return Worker(
        client, task_queue=task_queue, workflows=[*WORKFLOWS, *workflows],
        activities=[*overnight.all(), *activities], **options,
    )


@contextlib.asynccontextmanager
async def serve_bridge(bridge: CompletionBridge, host: str = "127.0.0.1", port: int = 8090) -> AsyncIterator[Any]:
    """Serve ``bridge`` with uvicorn on this event loop until the block exits; yields the server.

    Needs ``uvicorn``. Signal handling is left to the caller.
    """
    import uvicorn

    class _Server(uvicorn.Server):
        def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # the caller owns signals
            return contextlib.nullcontext()

    server = _Server(uvicorn.Config(bridge, host=host, port=port, log_level="warning", access_log=False,
                                    lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start (e.g. the port is taken)
                raise RuntimeError(f"the bridge server on {host}:{port} stopped during start-up")
            await asyncio.sleep(0.01)  # uvicorn exposes start-up only as a flag
        yield server
    finally:
        server.should_exit = True
        await task
