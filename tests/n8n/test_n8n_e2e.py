"""End to end with real n8n 2.41 (Node 24): the built community node and the shipped templates,
run by n8n's CLI and resumed under ``n8n start`` by Overnight's signed webhooks, against the live
Overnight server on the real engine.

One n8n user folder serves the module: credentials and workflows are imported once, and one
``n8n start`` receives the resume webhooks while ``n8n execute --id`` starts each workflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from overnight._hashing import derive_idempotency_key
from overnight._webhooks import (
    build_event,
    event_body,
    new_message_id,
    new_webhook_secret,
    sign_webhook,
)
from tests.n8n.harness import N8n, load_template
from tests.n8n.workflows import (
    WRONG_SECRET_CREDENTIAL,
    chat,
    credentials,
    items_from,
    overnight_node,
    set_fields,
    trigger,
    workflow,
)

SUBMIT_GET = "ovnE2eSubmitGet1"
SUBMIT_WAIT = "ovnE2eSubmitWait"
GUARDED = "ovnE2eGuardedWt1"
HTTP_TEMPLATE = "overnight-http-request-wait.json"
BULK_TEMPLATE = "overnight-bulk-enrich-rows.json"
QUESTIONS = ["What is the capital of France?", "Name a colour of the sky."]


def node_workflows() -> list[dict[str, Any]]:
    return [
        workflow(SUBMIT_GET, "Overnight: submit, then get", [
            trigger(),
            overnight_node("Submit", "submit", **chat("What is the capital of France?")),
            overnight_node("Get", "get", jobId="={{ $json.id }}", waitForCompletion=True, waitTimeout=240),
        ]),
        # Waits twice: one item (resumed by job.succeeded), then two items (resumed by batch.completed).
        workflow(SUBMIT_WAIT, "Overnight: submit and wait", [
            trigger(),
            overnight_node("Ask one", "submitAndWait", **chat("What is the capital of France?")),
            *items_from("Questions", "question", QUESTIONS),
            overnight_node("Ask batch", "submitAndWait", **{**chat(""), "messages": {"message": [
                {"role": "user", "content": "={{ $json.question }}"}]}}),
            set_fields("Answers", answer="={{ $json.text }}", job_id="={{ $json.id }}", state="={{ $json.state }}"),
        ]),
        workflow(GUARDED, "Overnight: submit and wait, other secret", [
            trigger(),
            overnight_node("Ask", "submitAndWait", WRONG_SECRET_CREDENTIAL, **chat("Say hello.")),
            set_fields("Answer", answer="={{ $json.text }}"),
        ]),
    ]


def with_url(template: dict[str, Any], url: str) -> dict[str, Any]:
    """The one edit a user makes: the Overnight URL in the template's Settings node."""
    for node in template["nodes"]:
        if node["name"] == "Settings":
            for assignment in node["parameters"]["assignments"]["assignments"]:
                if assignment["name"] == "overnight_url":
                    assignment["value"] = url
                    return template
    raise AssertionError("template has no Settings.overnight_url")


@pytest.fixture(scope="module")
def other_secret() -> str:
    """A webhook secret that is not the tenant's: the GUARDED workflow's credential trusts it."""
    return new_webhook_secret()


@pytest.fixture(scope="module")
def api(overnight) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=overnight.url, headers={"Authorization": f"Bearer {overnight.api_key}"}, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def n8n(n8n_install, node_package, overnight, other_secret, tmp_path_factory) -> Iterator[N8n]:
    instance = N8n(n8n_install, tmp_path_factory.mktemp("n8n"), custom_extensions=node_package)
    instance.import_credentials(credentials(overnight.url, overnight.api_key, other_secret))
    instance.import_workflows([
        *node_workflows(),
        with_url(load_template(HTTP_TEMPLATE), overnight.url),
        with_url(load_template(BULK_TEMPLATE), overnight.url),
    ])
    with instance.server():
        yield instance


def chat_text(job: dict[str, Any]) -> str:
    return job["result"]["choices"][0]["message"]["content"]


def start_waiting(n8n: N8n, workflow_id: str) -> int:
    """Run a workflow with `n8n execute`; it must stop as `waiting`. Its execution id."""
    run = n8n.execute(workflow_id)
    assert run["status"] == "waiting", json.dumps(run)[:2000]
    return n8n.latest_execution(workflow_id)


def test_submit_job_then_get_job_with_n8n_execute(n8n, api):
    run = n8n.execute(SUBMIT_GET)
    assert run["status"] == "success", json.dumps(run)[:2000]
    execution = n8n.execution(n8n.latest_execution(SUBMIT_GET))
    [submitted] = execution.node_output("Submit")
    [done] = execution.node_output("Get")
    assert done["id"] == submitted["id"]
    assert done["state"] == "succeeded"
    job = api.get(f"/v1/jobs/{done['id']}").json()
    assert done["text"] == chat_text(job) != ""
    # the key the node derived is the Python SDK's derivation of (execution, node, run, item)
    assert job["idempotency_key"] == derive_idempotency_key("n8n", str(execution.id), "Submit", 0, 0)
    assert job["metadata"] == {"n8n_execution": str(execution.id), "n8n_node": "Submit", "n8n_item": "0"}


def test_submit_and_wait_pauses_and_resumes_on_overnights_signed_webhook(n8n, api):
    execution_id = start_waiting(n8n, SUBMIT_WAIT)
    done = n8n.wait_for_execution(execution_id)
    assert done.status == "success", done.error

    [first] = done.node_output("Ask one")
    job = api.get(f"/v1/jobs/{first['id']}").json()
    assert job["callback_url"].startswith(f"{n8n.url}/webhook-waiting/{execution_id}?signature=")
    assert first["state"] == "succeeded" and first["text"] == chat_text(job) != ""

    answers = done.node_output("Answers")
    assert len(answers) == len(QUESTIONS)
    batch_ids = set()
    for index, (answer, question) in enumerate(zip(answers, QUESTIONS)):
        job = api.get(f"/v1/jobs/{answer['job_id']}").json()
        assert job["request"]["messages"][0]["content"] == question  # items stay in input order
        assert job["metadata"]["n8n_item"] == str(index)
        assert answer["state"] == "succeeded" and answer["answer"] == chat_text(job) != ""
        batch_ids.add(job["batch_id"])
    assert len(batch_ids) == 1 and None not in batch_ids  # one bulk request, resumed by batch.completed


def test_resume_webhook_refuses_unsigned_and_forged_calls(n8n, api, overnight, other_secret):
    execution_id = start_waiting(n8n, GUARDED)
    [job] = api.get("/v1/jobs", params={"metadata.n8n_execution": str(execution_id)}).json()["data"]
    job = api.get(f"/v1/jobs/{job['id']}/wait", params={"timeout": 240}).json()
    assert job["state"] == "succeeded"
    resume_url = job["callback_url"]
    body = event_body(build_event("job.succeeded", job))
    now = int(time.time())

    def post(content: str, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(resume_url, content=content, headers={"content-type": "application/json", **headers}, timeout=60)

    refused = {
        "missing_signature": post(body, {}),
        # Overnight's own delivery is signed with the tenant's secret, which this credential does not trust
        "invalid_signature": post(body, sign_webhook([overnight.webhook_secret], new_message_id(), now, body)),
        "tampered": post(body.replace(chat_text(job), "forged"), sign_webhook([other_secret], new_message_id(), now, body)),
        "timestamp_out_of_tolerance": post(body, sign_webhook([other_secret], new_message_id(), now - 3600, body)),
    }
    for case, response in refused.items():
        assert response.status_code == 401, (case, response.text)
        assert response.json()["error"]["code"] == ("invalid_signature" if case == "tampered" else case)
    assert n8n.execution(execution_id).status == "waiting"

    accepted = post(body, sign_webhook([other_secret], new_message_id(), int(time.time()), body))
    assert accepted.status_code == 200, accepted.text
    done = n8n.wait_for_execution(execution_id)
    assert done.status == "success", done.error
    assert done.node_output("Answer") == [{"answer": chat_text(job)}]


def test_http_request_and_wait_template_resumes_on_the_callback(n8n, api):
    execution_id = start_waiting(n8n, load_template(HTTP_TEMPLATE)["id"])
    done = n8n.wait_for_execution(execution_id)
    assert done.status == "success", done.error
    [out] = done.node_output("Extract text")
    job = api.get(f"/v1/jobs/{out['job_id']}").json()
    assert job["callback_url"].startswith(f"{n8n.url}/webhook-waiting/{execution_id}?signature=")
    assert out["event"] == "job.succeeded" and out["state"] == "succeeded"
    assert out["text"] == chat_text(job) != ""


def test_bulk_enrich_rows_template_returns_rows_in_order(n8n, api):
    template = load_template(BULK_TEMPLATE)
    execution_id = start_waiting(n8n, template["id"])
    done = n8n.wait_for_execution(execution_id)
    assert done.status == "success", done.error
    rows = done.node_output("In row order")
    [sample] = [n for n in template["nodes"] if n["name"] == "Sample rows"]
    originals = json.loads(sample["parameters"]["assignments"]["assignments"][0]["value"])
    assert [(r["id"], r["text"], r["row"]) for r in rows] == [(o["id"], o["text"], i) for i, o in enumerate(originals)]
    batch_ids = set()
    for row, original in zip(rows, originals):
        job = api.get(f"/v1/jobs/{row['job_id']}").json()
        assert job["request"]["messages"][1]["content"] == original["text"]
        assert row["job_state"] == "succeeded" and row["summary"] == chat_text(job) != ""
        batch_ids.add(job["batch_id"])
    assert len(batch_ids) == 1


def test_credential_test_calls_whoami(n8n, overnight):
    """What the credential form's Test button does, through n8n's REST API as the owner."""
    headers = {"browser-id": "overnight-tests"}
    with httpx.Client(base_url=n8n.url, headers=headers, timeout=60) as client:
        owner = {"email": "owner@example.com", "firstName": "Ada", "lastName": "Lovelace", "password": "Overnight-n8n-1"}
        setup = client.post("/rest/owner/setup", json=owner)
        assert setup.status_code == 200, setup.text  # the client keeps the auth cookie it sets

        def test_credential(**data: str) -> dict[str, Any]:
            # id "": the owner tests unsaved data, as the credential form does before saving
            response = client.post(
                "/rest/credentials/test", json={"credentials": {"id": "", "name": "t", "type": "overnightApi", "data": data}}
            )
            assert response.status_code == 200, response.text
            return response.json()["data"]

        ok = test_credential(baseUrl=f"{overnight.url}/", apiKey=overnight.api_key, webhookSecret="")
        assert ok["status"] == "OK", ok
        wrong_key = test_credential(baseUrl=overnight.url, apiKey="ovn_not_a_key", webhookSecret="")
        assert wrong_key["status"] == "Error", wrong_key
