"""``overnight serve`` as a real process: the seed snippet, webhooks, the CLI, and SIGKILL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from overnight import Client, JobState, LLMCall
from tests.live import REPO, OvernightProcess, WebhookReceiver


@pytest.fixture
def server(tmp_path):
    with OvernightProcess(tmp_path) as server:
        yield server


def test_seed_snippet_against_a_live_server(server, monkeypatch):
    monkeypatch.setenv("OVERNIGHT_API_KEY", server.api_key)
    monkeypatch.setenv("OVERNIGHT_BASE_URL", server.url)
    with WebhookReceiver(server.webhook_secret) as receiver:
        # -- the seed's usage, as written apart from the import line --
        client = Client(api_key=os.environ["OVERNIGHT_API_KEY"])   # base_url from env or arg
        job = LLMCall(model="smollm2-135m")
        job.add_user_message("Summarize the attached contract...")
        job_id = client.send_job(job, callback_url=receiver.url)
        result = client.wait_for_job(job_id)
        # -------------------------------------------------------------
        assert result.state is JobState.SUCCEEDED
        assert result.text == "echo: Summarize the attached contract..."
        ((webhook_id, event),) = receiver.collect(1)
        assert event["type"] == "job.succeeded" and event["data"]["id"] == job_id
        assert webhook_id.startswith("msg_")


def test_webhook_retries_until_the_receiver_recovers(server):
    client = Client(api_key=server.api_key, base_url=server.url)
    with WebhookReceiver(server.webhook_secret, fail_first=1) as receiver:
        job_id = client.send_job(LLMCall(model="smollm2-135m").add_user_message("hi"), callback_url=receiver.url)
        # first attempt answered 500; the outbox retries 5 s later with the same webhook-id
        ((webhook_id, event),) = receiver.collect(1, timeout=30)
        assert event["data"]["id"] == job_id and receiver.fail_first == 0
    metrics = client._request("GET", "/metrics").text
    assert 'overnight_webhook_deliveries_total{outcome="retry"} 1.0' in metrics
    assert 'overnight_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics


def test_cli_submit_status_wait_cancel(server, tmp_path):
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text(
        json.dumps({"custom_id": "a", "body": {"model": "smollm2-135m", "messages": [{"role": "user", "content": "one"}]}}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "two"}]}) + "\n"
    )
    env = {**os.environ, "OVERNIGHT_API_KEY": server.api_key, "OVERNIGHT_BASE_URL": server.url, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "overnight", *args], env=env, capture_output=True, text=True, cwd=REPO)

    submitted = cli("submit", str(jobs_file), "--model", "smollm2-135m", "--out", str(tmp_path / "out.jsonl"))
    assert submitted.returncode == 0, submitted.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["custom_id"], r["state"], r["text"]) for r in rows] == [("a", "succeeded", "echo: one"), (None, "succeeded", "echo: two")]

    openai_file = tmp_path / "openai.jsonl"
    openai_file.write_text("".join(
        json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "smollm2-135m", "messages": [{"role": "user", "content": cid}]}}) + "\n"
        for cid in ("x", "y")
    ))
    assert cli("submit", str(openai_file), "--out", str(tmp_path / "openai.out.jsonl")).returncode == 0
    openai_rows = [json.loads(line) for line in (tmp_path / "openai.out.jsonl").read_text().splitlines()]
    assert [(r["custom_id"], r["response"]["status_code"], r["response"]["body"]["choices"][0]["message"]["content"])
            for r in openai_rows] == [("x", 200, "echo: x"), ("y", 200, "echo: y")]

    status = cli("status", rows[0]["job_id"])
    assert json.loads(status.stdout)["state"] == "succeeded"
    waited = cli("wait", rows[1]["job_id"], "--timeout", "5")
    assert json.loads(waited.stdout)["usage"]["completion_tokens"] == 2

    hanging = Client(api_key=server.api_key, base_url=server.url).send_job(LLMCall(model="smollm2-135m").add_user_message("hang"))
    cancelled = cli("cancel", hanging)
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    finished_again = cli("cancel", rows[0]["job_id"])
    assert finished_again.returncode == 2 and "job_finished" in finished_again.stderr


def test_sigkill_mid_run_loses_nothing_and_delivers_nothing_twice(tmp_path):
    """200 jobs, SIGKILL while they run, restart: all 200 succeed, one result webhook each."""
    server = OvernightProcess(tmp_path, extra_args=["--lease-seconds", "2"])
    with WebhookReceiver(server.webhook_secret) as receiver:
        server.start()
        client = Client(api_key=server.api_key, base_url=server.url)
        calls = [LLMCall(model="smollm2-135m").add_user_message("slow:0.5") for _ in range(200)]
        for call in calls:
            call.callback_url = receiver.url
        items = client.send_jobs(calls)
        job_ids = [item.job.id for item in items]
        deliveries: dict[str, set[str]] = {}
        for webhook_id, event in receiver.collect(40):  # some results are out...
            deliveries.setdefault(event["data"]["id"], set()).add(webhook_id)
        server.kill()                                     # ...and others are mid-run
        server.start()
        client = Client(api_key=server.api_key, base_url=server.url)
        final = [client.wait_for_job(job_id, timeout=120) for job_id in job_ids]
        assert all(job.state is JobState.SUCCEEDED for job in final)
        retried = [job for job in final if len(job.attempts) > 1]
        assert retried, "the kill should have interrupted running jobs"
        assert all(job.attempts[0].error.code == "lease_expired" for job in retried)
        while len(deliveries) < 200:
            webhook_id, event = receiver.events.get(timeout=60)
            deliveries.setdefault(event["data"]["id"], set()).add(webhook_id)
        server.stop()
    assert set(deliveries) == set(job_ids)
    # each job's result went out under exactly one webhook-id (a redelivery keeps its id)...
    assert all(len(ids) == 1 for ids in deliveries.values())
    # ...and the outbox holds exactly one result message per job
    with sqlite3.connect(tmp_path / "overnight.db") as db:
        rows = db.execute("SELECT json_extract(payload, '$.data.id'), state FROM webhook_outbox").fetchall()
    assert sorted(job_id for job_id, _ in rows) == sorted(job_ids)
    assert {state for _, state in rows} == {"delivered"}
