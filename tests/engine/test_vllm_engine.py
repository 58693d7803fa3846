"""VLLMEngine with the real smollm2-135m on CPU (one engine for the module, max_num_seqs=2)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from overnight._models import Priority
from overnight.engine import Engine, EngineError

from .conftest import LONG_PROMPT, chat, engine_job

FRANCE = "What is the capital of France?"


async def test_answers_the_capital_of_france(vllm_engine):
    result = await vllm_engine.generate(chat(FRANCE, temperature=0), request_id="fr-1")
    choice = result.response["choices"][0]
    assert "Paris" in choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    assert result.response["model"] == "smollm2-135m"
    usage = result.usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert result.response["usage"] == usage.model_dump()
    assert result.engine_seconds > 0


async def test_streamed_text_joins_to_the_final_answer(vllm_engine):
    pieces: list[str] = []
    result = await vllm_engine.generate(
        chat("Name three colours.", temperature=0, max_tokens=24), request_id="stream-1", on_text=pieces.append
    )
    assert len(pieces) > 3  # forwarded as it was produced, not at the end in one piece
    assert "".join(pieces) == result.response["choices"][0]["message"]["content"]


async def test_prompt_calls_are_raw_text_completions(vllm_engine, hf_tokenizer):
    from overnight import LLMCall

    call = LLMCall(model="smollm2-135m", prompt="The capital of France is", temperature=0, max_tokens=8)
    result = await vllm_engine.generate(call, request_id="cmpl-1")
    assert result.response["object"] == "text_completion"
    assert result.response["choices"][0]["text"].strip()
    assert result.usage.prompt_tokens == len(hf_tokenizer.encode("The capital of France is"))


async def test_token_counts_agree_with_the_tokenizer(vllm_engine, hf_tokenizer):
    prompt_ids = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": FRANCE}], add_generation_prompt=True, return_dict=True
    )["input_ids"]

    stopped = await vllm_engine.generate(chat(FRANCE, temperature=0), request_id="count-1")
    text = stopped.response["choices"][0]["message"]["content"]
    assert stopped.usage.prompt_tokens == len(prompt_ids)
    # finished on <|im_end|>: the text's tokens plus the end-of-turn token
    assert stopped.usage.completion_tokens == len(hf_tokenizer.encode(text)) + 1

    capped = await vllm_engine.generate(
        chat("Write a poem about the sea.", temperature=0, max_tokens=16), request_id="count-2"
    )
    choice = capped.response["choices"][0]
    assert choice["finish_reason"] == "length"
    assert capped.usage.completion_tokens == 16
    assert len(hf_tokenizer.encode(choice["message"]["content"])) == 16


async def test_stop_sequences_cut_the_answer(vllm_engine):
    full = await vllm_engine.generate(chat(FRANCE, temperature=0), request_id="stop-1")
    cut = await vllm_engine.generate(chat(FRANCE, temperature=0, stop=["Paris"]), request_id="stop-2")
    full_text = full.response["choices"][0]["message"]["content"]
    cut_text = cut.response["choices"][0]["message"]["content"]
    assert "Paris" in full_text and "Paris" not in cut_text
    assert full_text.startswith(cut_text) and cut_text.strip()
    assert cut.response["choices"][0]["finish_reason"] == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens


async def test_seed_makes_sampling_reproducible(vllm_engine):
    question = "Invent a name for a cat."

    async def sample(seed: int, request_id: str) -> str:
        call = chat(question, temperature=1.0, max_tokens=24, seed=seed)
        result = await vllm_engine.generate(call, request_id=request_id)
        return result.response["choices"][0]["message"]["content"]

    first = await sample(7, "seed-a")
    again = await sample(7, "seed-b")
    others = {await sample(seed, f"seed-{seed}") for seed in (1, 2, 3)}
    assert first == again
    assert len(others | {first}) >= 2


async def test_json_schema_response_format(vllm_engine):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    call = chat("Describe a cat as JSON with its name and age.", temperature=0, max_tokens=100,
                response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}})
    result = await vllm_engine.generate(call, request_id="json-1")
    data = json.loads(result.response["choices"][0]["message"]["content"])
    assert set(data) == {"name", "age"}
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


async def _until_in_vllm(engine, count: int) -> None:
    """Wait until vLLM holds ``count`` unfinished requests (they are added asynchronously)."""
    deadline = time.monotonic() + 30
    while engine.llm.get_num_unfinished_requests() < count:
        assert time.monotonic() < deadline, "request never reached vLLM"
        await asyncio.sleep(0.01)


async def test_cancel_aborts_a_long_generation(vllm_engine):
    started = time.monotonic()
    long_run = asyncio.create_task(vllm_engine.generate(
        chat(LONG_PROMPT, temperature=0, max_tokens=1500), request_id="cancel-1"))
    await _until_in_vllm(vllm_engine, 1)
    # A short request finishing next to it proves the long one is being decoded.
    short = await vllm_engine.generate(chat(FRANCE, temperature=0), request_id="cancel-side")
    assert short.usage.completion_tokens > 3
    assert "cancel-1" in vllm_engine.in_flight

    await vllm_engine.cancel("cancel-1")
    with pytest.raises(EngineError) as info:
        await long_run
    assert info.value.code == "cancelled" and not info.value.retryable
    # 1,500 tokens take about a minute here; the cancelled run ended long before.
    assert time.monotonic() - started < 20
    assert vllm_engine.llm.get_num_unfinished_requests() == 0
    assert vllm_engine.in_flight == []

    await vllm_engine.cancel("cancel-1")  # finished or unknown ids are ignored
    await vllm_engine.cancel("never-seen")


async def test_cancelling_the_caller_aborts_in_vllm(vllm_engine):
    """The Ray Serve path: Serve cancels the replica's task, vLLM must drop the request."""
    long_run = asyncio.create_task(vllm_engine.generate(
        chat(LONG_PROMPT, temperature=0, max_tokens=1500), request_id="cancel-2"))
    await _until_in_vllm(vllm_engine, 1)
    long_run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_run
    assert vllm_engine.llm.get_num_unfinished_requests() == 0
    assert vllm_engine.in_flight == []


async def test_interactive_jobs_overtake_queued_batch_jobs(vllm_engine):
    """Two sequences run at once; an interactive job waiting behind three batch jobs
    gets the first free slot (under fcfs it would finish with the last of them)."""
    finished: list[str] = []

    def submit(name: str, priority: Priority, max_tokens: int) -> asyncio.Task:
        task = asyncio.create_task(vllm_engine.generate(
            chat(LONG_PROMPT, temperature=0, max_tokens=max_tokens),
            request_id=name, priority=priority))
        task.add_done_callback(lambda _: finished.append(name))
        return task

    tasks = [submit(f"block-{i}", Priority.BATCH, 60) for i in range(2)]
    await _until_in_vllm(vllm_engine, 2)
    tasks += [submit(f"batch-{i}", Priority.BATCH, 20) for i in range(3)]
    await _until_in_vllm(vllm_engine, 5)
    tasks.append(submit("interactive", Priority.INTERACTIVE, 20))
    await _until_in_vllm(vllm_engine, 6)
    assert all(not t.done() for t in tasks[:2])  # the slots were still taken
    results = await asyncio.gather(*tasks)

    assert all(r.response["choices"][0]["finish_reason"] == "length" for r in results)
    queued_batch_before = [n for n in finished[: finished.index("interactive")]
                           if n.startswith("batch-")]
    assert len(queued_batch_before) <= 1, finished


async def test_bad_requests_are_not_retryable(vllm_engine):
    too_long = chat("word " * 3000, max_tokens=10)  # over max_model_len=2048
    with pytest.raises(EngineError) as info:
        await vllm_engine.generate(too_long, request_id="bad-1")
    assert info.value.code == "invalid_request" and not info.value.retryable

    with pytest.raises(EngineError) as info:
        await vllm_engine.generate({"model": "smollm2-135m", "input": "embed me"},
                                   request_id="bad-2")
    assert info.value.code == "invalid_request"

    with pytest.raises(EngineError) as info:
        await vllm_engine.generate({"model": "smollm2-135m"}, request_id="bad-3")
    assert info.value.code == "invalid_request"
    assert vllm_engine.in_flight == []


async def test_implements_the_engine_protocol(vllm_engine):
    assert isinstance(vllm_engine, Engine)
    assert list(vllm_engine.models) == ["smollm2-135m"]
    assert vllm_engine.capacity("smollm2-135m") == 2 and vllm_engine.capacity("other") == 0
    result = await vllm_engine.run(engine_job("proto-1", FRANCE, temperature=0))
    assert "Paris" in result.response["choices"][0]["message"]["content"]
