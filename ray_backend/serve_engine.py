"""``RayServeEngine``: the ``Engine`` the dispatcher calls, backed by Ray Serve replicas.

    engine = build_engine(["smollm2-135m"])
    await engine.start()                  # ray.init (or RAY_ADDRESS), serve.run, wait ready
    engine.capacity("smollm2-135m")       # live replicas x max_ongoing_requests
    result = await engine.run(job)        # EngineResult, or raises EngineError
    await engine.cancel(job.id)           # DeploymentResponse.cancel() -> vLLM abort
    await engine.close()                  # serve.shutdown / ray.shutdown if start() began them

A replica that dies under a job (killed, out of memory, node lost) fails that job with
``EngineError(retryable=True)``, so the store retries it; Serve starts a new replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from overnight._models import Usage
from overnight.engine import EngineError, EngineJob, EngineResult
from overnight.registry import ModelRegistry, ModelSpec, resolve_cache_dir

from .cluster import LocalRaySettings, init_ray
from .replica import app_name, build_app, find_replica_actors

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.serve.handle import DeploymentHandle, DeploymentResponse

__all__ = ["RayServeEngine", "build_engine"]

logger = logging.getLogger(__name__)


class RayServeEngine:
    """Runs jobs on one Serve application per model. Implements ``overnight.engine.Engine``."""

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        ray_address: str | None = None,
        local_ray: LocalRaySettings | None = None,
        status_interval_s: float = 2.0,
    ) -> None:
        if not specs:
            raise ValueError("RayServeEngine needs at least one model")
        self.specs = {spec.name: spec for spec in specs}
        self.models: Sequence[str] = tuple(self.specs)
        self.cache_dir = resolve_cache_dir(cache_dir)
        self._ray_address = ray_address
        self._local_ray = local_ray
        self._status_interval_s = status_interval_s
        self._handles: dict[str, DeploymentHandle] = {}
        self._running_replicas: dict[str, int] = {}
        self._responses: dict[str, DeploymentResponse] = {}
        self._status_task: asyncio.Task[None] | None = None
        self._started_ray = False
        self._started_apps: list[str] = []

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, timeout_s: float = 900.0) -> None:
        """Connect Ray, deploy every model, and return when each has a running replica."""
        try:
            await asyncio.to_thread(self._start_blocking)
            await self.wait_ready(timeout_s=timeout_s)
        except BaseException:
            await self.close()  # leave no half-started Ray or Serve behind
            raise
        self._status_task = asyncio.create_task(self._poll_status(), name="serve-status")

    def _start_blocking(self) -> None:
        from ray import serve

        self._started_ray = init_ray(self._ray_address, local=self._local_ray)
        serve.start(proxy_location="Disabled")
        for name, spec in self.specs.items():
            app = app_name(name)
            self._started_apps.append(app)
            self._handles[name] = serve.run(
                build_app(spec, self.cache_dir), name=app, route_prefix=None
            )

    async def wait_ready(self, model: str | None = None, timeout_s: float = 900.0) -> None:
        """Wait until ``model`` (default: every model) has at least one running replica."""
        deadline = time.monotonic() + timeout_s
        wanted = [model] if model else list(self.models)
        while True:
            counts = await asyncio.to_thread(self._replica_counts)
            self._running_replicas.update(counts)
            if all(counts.get(m, 0) > 0 for m in wanted):
                return
            if time.monotonic() > deadline:
                raise EngineError(
                    "engine_unavailable",
                    f"no running replica for {wanted} after {timeout_s:.0f}s",
                    retryable=True,
                )
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        """Stop polling; delete the apps, stop Serve and Ray if :meth:`start` started them."""
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
            self._status_task = None
        if self._started_apps or self._started_ray:
            await asyncio.to_thread(self._close_blocking)
        self._handles.clear()
        self._running_replicas.clear()

    def _close_blocking(self) -> None:
        import ray
        from ray import serve

        if self._started_ray:
            serve.shutdown()
            ray.shutdown()
            self._started_ray = False
        else:  # a shared cluster: remove only what we deployed
            for app in self._started_apps:
                with contextlib.suppress(Exception):
                    serve.delete(app)
        self._started_apps.clear()

    # -- Engine protocol --------------------------------------------------------------

    def capacity(self, model: str) -> int:
        """Live replicas x ``max_ongoing_requests`` (at least one replica's worth while
        the deployment exists, so requests reach an autoscaler scaling from zero)."""
        spec = self.specs.get(model)
        if spec is None or model not in self._handles:
            return 0
        replicas = max(self._running_replicas.get(model, 0), 1)
        return replicas * spec.max_ongoing_requests

    async def run(self, job: EngineJob) -> EngineResult:
        """Send ``job`` to a replica of its model and wait for the result."""
        from ray.exceptions import RayActorError, RayError, TaskCancelledError
        from ray.serve.exceptions import (
            BackPressureError,
            DeploymentUnavailableError,
            RayServeException,
            RequestCancelledError,
        )

        handle = self._handles.get(job.model)
        if handle is None:
            known = job.model in self.specs
            raise EngineError(
                "engine_not_started" if known else "unknown_model",
                f"model {job.model!r} is not deployed here"
                + ("" if known else f"; this engine serves {list(self.models)}"),
                retryable=known,
            )
        if job.id in self._responses:
            raise EngineError("duplicate_request", f"job {job.id} is already running here")
        body, priority = job.request.engine_body(), job.priority.value
        if job.on_text is None:
            response = handle.generate.remote(body, job.id, priority)
        else:
            response = handle.options(stream=True).generate_stream.remote(body, job.id, priority)
        self._responses[job.id] = response
        try:
            reply = await response if job.on_text is None else await _follow(response, job.on_text)
        except asyncio.CancelledError:
            response.cancel()  # our caller gave up: stop the work in the replica too
            raise
        except (RequestCancelledError, TaskCancelledError) as exc:
            raise EngineError("cancelled", f"job {job.id} was cancelled") from exc
        except (RayActorError, DeploymentUnavailableError, BackPressureError) as exc:
            raise EngineError(
                "replica_unavailable",
                f"the replica running job {job.id} is unavailable: {type(exc).__name__}: "
                f"{_short(exc)}",
                retryable=True,
            ) from exc
        except (RayError, RayServeException) as exc:
            raise EngineError(
                "replica_error", f"{type(exc).__name__}: {_short(exc)}", retryable=True
            ) from exc
        finally:
            self._responses.pop(job.id, None)
        if "error" in reply:
            error = reply["error"]
            raise EngineError(error["code"], error["message"], retryable=error["retryable"])
        return EngineResult(
            response=reply["response"],
            usage=Usage.model_validate(reply["usage"]),
            engine_seconds=reply["engine_seconds"],
        )

    async def cancel(self, job_id: str) -> None:
        """Abort ``job_id``: Serve cancels it in its replica, which aborts it in vLLM.

        Jobs started by another process are looked for on every replica (broadcast).
        """
        response = self._responses.get(job_id)
        if response is not None:
            # cancel() may briefly wait for the replica assignment: keep it off the loop
            await asyncio.to_thread(response.cancel)
            return
        for model, handle in list(self._handles.items()):
            try:
                await asyncio.to_thread(
                    lambda h=handle: h.broadcast("cancel", job_id).results(timeout_s=30)
                )
            except Exception as exc:  # best effort; the job will finish or fail on its own
                logger.warning("cancel %s on %s failed: %s", job_id, model, exc)

    # -- inspection -------------------------------------------------------------------

    def replica_actors(self, model: str) -> list[ActorHandle]:
        """Handles of the live replica actors of ``model`` (for fault injection and tests).

            ray.kill(engine.replica_actors("smollm2-135m")[0], no_restart=True)
        """
        return find_replica_actors(model)

    async def replica_stats(self, model: str) -> list[dict[str, Any]]:
        """Each running replica's ``{"pid", "in_flight"}``."""
        handle = self._handles[model]
        return await asyncio.to_thread(lambda: handle.broadcast("stats").results(timeout_s=30))

    def _replica_counts(self) -> dict[str, int]:
        from ray import serve

        status = serve.status()
        counts: dict[str, int] = {}
        for model in self.models:
            app = status.applications.get(app_name(model))
            if app is None:
                counts[model] = 0
                continue
            deployment = app.deployments.get(app_name(model))
            states = deployment.replica_states if deployment else {}
            counts[model] = int(states.get("RUNNING", 0))
        return counts

    async def _poll_status(self) -> None:
        while True:
            try:
                self._running_replicas.update(await asyncio.to_thread(self._replica_counts))
            except Exception as exc:  # the controller restarting; keep the last counts
                logger.warning("could not read Serve status: %s", exc)
            await asyncio.sleep(self._status_interval_s)


async def _follow(stream: Any, on_text: Callable[[str], None]) -> dict[str, Any]:
    """Forward a replica's streamed ``{"text": ...}`` items; return its final reply."""
    reply: dict[str, Any] = {}
    async for item in stream:
        if "text" in item:
            on_text(item["text"])
        else:
            reply = item
    return reply


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first[:limit]


def build_engine(
    models: Sequence[str],
    registry: ModelRegistry | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    ray_address: str | None = None,
    local_ray: LocalRaySettings | None = None,
) -> RayServeEngine:
    """A :class:`RayServeEngine` for ``models`` (registry names). Call ``await start()``."""
    registry = registry or ModelRegistry.load()
    return RayServeEngine(
        [registry.get(name) for name in models],
        cache_dir=cache_dir,
        ray_address=ray_address,
        local_ray=local_ray,
    )
