"""Where Overnight jobs run: vLLM engines behind Ray Serve.

    from ray_backend import build_engine
    engine = build_engine(["smollm2-135m"])   # RayServeEngine, an overnight.engine.Engine
    await engine.start()
    result = await engine.run(job)
    await engine.close()

``VLLMEngine`` runs one model in-process (no Ray); ``LLMReplica``/``build_app`` are the
Serve deployment; ``init_ray`` connects to ``RAY_ADDRESS`` or starts a local Ray.
Importing this package imports Ray Serve but not vLLM (replicas import it).
"""

from .cluster import LocalRaySettings, init_ray
from .replica import (
    LLMReplica,
    app_name,
    build_app,
    deployment_options,
    find_replica_actors,
)
from .serve_engine import RayServeEngine, build_engine
from .vllm_engine import (
    VLLMEngine,
    build_engine_args,
    engine_kwargs,
    sampling_params_for,
    vllm_priority,
)

__all__ = [
    "LLMReplica",
    "LocalRaySettings",
    "RayServeEngine",
    "VLLMEngine",
    "app_name",
    "build_app",
    "build_engine",
    "build_engine_args",
    "deployment_options",
    "engine_kwargs",
    "find_replica_actors",
    "init_ray",
    "sampling_params_for",
    "vllm_priority",
]
