"""The official `openai` client against ``overnight serve`` on the real engine."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

MODEL = "smollm2-135m"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(real_server) -> openai.OpenAI:
    return openai.OpenAI(api_key=real_server.api_key, base_url=f"{real_server.url}/v1", max_retries=0, timeout=600)


def test_chat_completion_and_stream_agree(client):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=32)
    completion = raw.parse()
    text = completion.choices[0].message.content
    assert "Paris" in text and completion.usage.completion_tokens > 0
    assert raw.headers["x-request-id"].startswith("job_")

    stream = client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=32, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == text


def test_embeddings_on_the_chat_model_are_refused_clearly(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=MODEL, input="hello")
    assert refused.value.code == "unsupported_model_task"


def test_batch_flow_on_the_real_engine(client):
    def line(custom_id: str, question: str) -> str:
        body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 24, "temperature": 0}
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})

    content = "\n".join([line("q1", "What is the capital of France?"), line("q2", "Name a colour."),
                         "not json", line("q1", "duplicate id"), line("q3", "Name an animal.")])
    file = client.files.create(file=("batch.jsonl", io.BytesIO(content.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 600
    while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.5)  # an OpenAI user's polling interval
    assert batch.status == "completed"
    output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == ["q1", "q2", "q3"]
    france = next(o for o in output if o["custom_id"] == "q1")
    assert "Paris" in france["response"]["body"]["choices"][0]["message"]["content"]
    errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    assert sorted(e["error"]["line"] for e in errors) == [3, 4]
