"""Shared engine fixtures: the prepared smollm2-135m, one in-process ``VLLMEngine`` and one
``RayServeEngine`` for the whole session (each takes ~40 s to start on CPU).

Async tests in this folder run in one session-wide event loop, because both engines
bind to the loop they first run in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from overnight._models import LLMCall, Priority
from overnight.engine import EngineJob
from overnight.registry import (
    DEFAULT_MODEL,
    ModelRegistry,
    ModelSpec,
    resolve_cache_dir,
)

HERE = Path(__file__).parent
# A prompt this model answers at length at temperature 0 (well over 1,500 tokens).
LONG_PROMPT = "Write a very long story about a dragon."


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marker = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if HERE in Path(item.path).parents and pytest_asyncio.is_async_test(item):
            item.add_marker(marker, append=False)


def chat(question: str, **fields: object) -> LLMCall:
    call = LLMCall(model=DEFAULT_MODEL, **fields)  # type: ignore[arg-type]
    return call.add_user_message(question)


def engine_job(
    job_id: str, question: str, priority: Priority = Priority.STANDARD, **fields: object
) -> EngineJob:
    return EngineJob(
        id=job_id, model=DEFAULT_MODEL, request=chat(question, **fields),
        priority=priority, attempt=1,
    )


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The real cache dir ($OVERNIGHT_CACHE_DIR or ~/.cache/overnight): conversion is
    done once per machine, not once per run."""
    return resolve_cache_dir()


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    """The built-in models, ignoring any $OVERNIGHT_MODELS_FILE of the developer."""
    return ModelRegistry.load(env={})


@pytest.fixture(scope="session")
def smollm2_path(registry: ModelRegistry, cache_dir: Path) -> Path:
    from overnight.prepare import prepare_model

    return prepare_model(DEFAULT_MODEL, registry, cache_dir)


@pytest.fixture(scope="session")
def local_spec(registry: ModelRegistry) -> ModelSpec:
    """smollm2 with 2 sequences at once (so priority ordering is observable) and 1 GiB KV."""
    return registry.merged(
        {DEFAULT_MODEL: {"engine": {"max_num_seqs": 2, "cpu_kv_cache_gib": 1}}}
    ).get(DEFAULT_MODEL)


@pytest.fixture(scope="session")
def vllm_engine(local_spec: ModelSpec, smollm2_path: Path):
    from ray_backend import VLLMEngine

    engine = VLLMEngine.from_spec(local_spec, model_path=str(smollm2_path))
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def hf_tokenizer(smollm2_path: Path):
    """The tokenizer loaded by transformers, independently of vLLM."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_path))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def serve_engine(registry: ModelRegistry, cache_dir: Path, smollm2_path: Path):
    from ray_backend import RayServeEngine

    spec = registry.merged({DEFAULT_MODEL: {"engine": {"cpu_kv_cache_gib": 1}}}).get(
        DEFAULT_MODEL
    )
    engine = RayServeEngine([spec], cache_dir=cache_dir)
    await engine.start()
    yield engine
    await engine.close()

