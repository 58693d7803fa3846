"""How a ModelSpec becomes Serve deployment options and vLLM request parameters."""

from __future__ import annotations

import pytest

from overnight._models import Priority
from overnight.engine import EngineError
from overnight.registry import ModelRegistry
from ray_backend import deployment_options, sampling_params_for, vllm_priority
from ray_backend.replica import app_name, build_app

from .conftest import chat


def test_cpu_replica_options():
    spec = ModelRegistry()["smollm2-135m"]
    options = deployment_options(spec)
    assert options["name"] == app_name("smollm2-135m") == "overnight-smollm2-135m"
    assert options["num_replicas"] == 1
    assert options["max_ongoing_requests"] == 64  # = max_num_seqs: keeps vLLM's batch full
    actor = options["ray_actor_options"]
    assert "num_gpus" not in actor and actor["num_cpus"] == 1
    assert actor["runtime_env"]["env_vars"] == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    assert "autoscaling_config" not in options


def test_gpu_replica_options_autoscale():
    spec = ModelRegistry()["llama-3.1-8b"]
    options = deployment_options(spec)
    assert options["ray_actor_options"]["num_gpus"] == 1
    assert "runtime_env" not in options["ray_actor_options"]
    assert "num_replicas" not in options
    auto = options["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (1, 4)
    assert auto["target_ongoing_requests"] == 192
    assert options["max_ongoing_requests"] == spec.engine.max_num_seqs


def test_tensor_parallel_replica_gets_a_placement_group():
    spec = ModelRegistry().merged(
        {"llama-3.1-8b": {"engine": {"tensor_parallel_size": 2}}}
    )["llama-3.1-8b"]
    options = deployment_options(spec)
    assert options["placement_group_bundles"] == [{"CPU": 1, "GPU": 1}] * 2
    assert "num_gpus" not in options["ray_actor_options"]


def test_build_app_accepts_serve_builder_arguments():
    app = build_app({"model": "smollm2-135m", "cache_dir": "/tmp/c"})
    assert type(app).__name__ == "Application"
    with pytest.raises(KeyError):
        build_app({"model": "nope"})
    with pytest.raises(ValueError):
        build_app({})


def test_priorities_map_to_vllm_order():
    ranks = [vllm_priority(p, "priority") for p in (Priority.INTERACTIVE, Priority.STANDARD,
                                                     Priority.BATCH)]
    assert ranks == sorted(ranks) and len(set(ranks)) == 3  # lower runs first in vLLM
    assert vllm_priority("interactive", "fcfs") == vllm_priority("batch", "fcfs") == 0


def test_openai_fields_map_to_sampling_params():
    params = sampling_params_for(
        chat("hi", max_tokens=7, temperature=0.7, top_p=0.5, stop=["\n"], seed=11)
    )
    assert (params.max_tokens, params.temperature, params.top_p, params.seed) == (7, 0.7, 0.5, 11)
    assert params.stop == ["\n"]
    assert params.structured_outputs is None
    default = sampling_params_for(chat("hi"))
    assert default.temperature == 1.0 and default.max_tokens is None  # OpenAI defaults


def test_response_format_maps_to_structured_outputs():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params = sampling_params_for(chat("hi", response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}))
    assert params.structured_outputs.json == schema
    params = sampling_params_for(chat("hi", response_format={"type": "json_object"}))
    assert params.structured_outputs.json_object is True
    assert sampling_params_for(chat("hi", response_format={"type": "text"})).structured_outputs is None
    for bad in ({"type": "xml"}, {"type": "json_schema", "json_schema": {"name": "x"}}):
        with pytest.raises(EngineError) as info:
            sampling_params_for(chat("hi", response_format=bad))
        assert info.value.code == "invalid_request" and not info.value.retryable
