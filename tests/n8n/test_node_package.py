"""The community node package on its own: it lints with n8n's community-node rules, its Node unit
tests pass against the live Overnight server, and its pure functions agree with the Python SDK
(idempotency keys, Standard Webhooks signatures, error mapping) on the same inputs.

    node --test test/pure.test.js test/live.test.js     # in n8n_node/, what the first test runs
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from overnight._exceptions import error_from_response
from overnight._hashing import derive_idempotency_key
from overnight._webhooks import new_message_id, new_webhook_secret, sign_webhook
from tests.n8n.harness import PACKAGE_DIR, TEMPLATES_DIR, npm


def node_calls(install, calls: list[list[Any]]) -> list[Any]:
    done = subprocess.run(
        [str(install.node), "test/support/crosscheck.js"], check=False, cwd=PACKAGE_DIR, env=install.env(),
        input=json.dumps(calls), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_lint_passes_with_n8n_community_node_rules(n8n_install, node_package):
    output = npm(n8n_install, "run", "lint")
    assert "problem" not in output, output  # eslint prints "N problems" for errors and warnings alike


def test_node_unit_tests_pass_against_the_live_server(n8n_install, node_package, overnight):
    env = n8n_install.env(OVERNIGHT_URL=overnight.url, OVERNIGHT_API_KEY=overnight.api_key)
    done = subprocess.run(
        [str(n8n_install.node), "--test", "--test-reporter=spec", "test/pure.test.js", "test/live.test.js"],
        check=False, cwd=PACKAGE_DIR, env=env, capture_output=True, text=True, timeout=1200,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-8000:]
    counts = {key: int(value) for key, value in re.findall(r"ℹ (tests|pass|fail|skipped|todo|cancelled) (\d+)", report)}
    assert counts["tests"] >= 17 and counts["pass"] == counts["tests"], counts
    assert counts["fail"] == counts["skipped"] == counts["todo"] == counts["cancelled"] == 0, counts


PARTS = [
    ["1", "Overnight", 0, 0],
    ["42", 'Ask "one" ü 😀', 1, 3],
    ["x\ny\t\"\\/", "\u0001\u001f\u007f\u0080", 0, 0],
    ["", "", 0, 0],
    ["exec", "名前", 12345678901, 2],
    ["a/b", "</script>", 0],
    ["\u2028\u2029", "é", 7],
]


def test_idempotency_keys_equal_the_python_derivation(n8n_install, node_package):
    typescript = node_calls(n8n_install, [["idempotency", "deriveIdempotencyKey", ["n8n", *parts]] for parts in PARTS])
    assert typescript == [derive_idempotency_key("n8n", *parts) for parts in PARTS]
    assert len(set(typescript)) == len(PARTS)


def test_signatures_agree_with_the_python_signer(n8n_install, node_package):
    secrets = [new_webhook_secret(), new_webhook_secret(48)]
    body = json.dumps({"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"id": "job_1", "text": "naïve “quotes” 😀", "metadata": {}}}, ensure_ascii=False)
    message_id, timestamp = new_message_id(), 1_800_000_000
    headers = sign_webhook(secrets, message_id, timestamp, body)
    calls = [
        ["webhooks", "signWebhook", [secrets[0], message_id, timestamp, body]],
        ["webhooks", "signWebhook", [secrets[1], message_id, timestamp, body]],
        ["webhooks", "verifyWebhook", [body, headers, [secrets[1]], {"nowSeconds": timestamp + 60}]],
        ["webhooks", "verifyWebhook", [body + " ", headers, secrets, {"nowSeconds": timestamp}]],
        ["webhooks", "verifyWebhook", [body, headers, [new_webhook_secret()], {"nowSeconds": timestamp}]],
    ]
    first, second, accepted, tampered, stranger = node_calls(n8n_install, calls)
    assert f"{first} {second}" == headers["webhook-signature"]
    assert accepted["ok"] is True and accepted["event"]["data"]["text"] == "naïve “quotes” 😀"
    assert (tampered["ok"], tampered["code"]) == (False, "invalid_signature")
    assert (stranger["ok"], stranger["code"]) == (False, "invalid_signature")


ERROR_CASES = [
    (400, {"error": {"code": "model_not_found", "message": "Unknown model", "param": "model"}}),
    (401, {"error": {"code": "invalid_api_key", "message": "bad key", "param": None}}),
    (403, {"error": {"code": "forbidden", "message": "no", "param": None}}),
    (404, {"error": {"code": None, "message": "no such job", "param": "job_id"}}),
    (409, {"error": {"code": "idempotency_conflict", "message": "other body", "param": None}}),
    (413, {"error": {"message": "too big"}}),
    (422, {"error": {"code": "invalid_request", "message": "temperature: too high", "param": "temperature"}}),
    (429, {"error": {"code": "rate_limited", "message": "slow down", "param": None}}),
    (500, {"error": {"code": "internal_error", "message": "boom", "param": None}}),
    (503, "upstream unavailable"),
    (418, "teapot"),
]


@pytest.mark.parametrize("retry_after", [None, 3.0])
def test_error_mapping_equals_the_python_error_tree(n8n_install, node_package, retry_after):
    typescript = node_calls(n8n_install, [["errors", "errorFromResponse", [s, b, retry_after]] for s, b in ERROR_CASES])
    for (status, body), info in zip(ERROR_CASES, typescript):
        error = error_from_response(status, body, retry_after)
        expected = {
            "kind": type(error).__name__, "code": error.code, "message": error.message, "param": error.param,
            "status": error.status_code, "retryable": error.retryable, "retryAfter": error.retry_after,
        }
        assert info == expected, status


def test_templates_use_only_built_in_nodes_and_the_resume_url():
    templates = sorted(TEMPLATES_DIR.glob("*.json"))
    assert [t.name for t in templates] == ["overnight-bulk-enrich-rows.json", "overnight-http-request-wait.json"]
    for path in templates:
        workflow = json.loads(path.read_text())
        types = {node["type"] for node in workflow["nodes"]}
        assert all(t.startswith("n8n-nodes-base.") for t in types), types
        assert {"n8n-nodes-base.httpRequest", "n8n-nodes-base.wait", "n8n-nodes-base.set"} <= types
        [wait] = [n for n in workflow["nodes"] if n["type"] == "n8n-nodes-base.wait"]
        assert (wait["parameters"]["resume"], wait["parameters"]["httpMethod"]) == ("webhook", "POST")
        submit = next(n for n in workflow["nodes"] if n["type"] == "n8n-nodes-base.httpRequest")
        assert "callback_url: $execution.resumeUrl" in submit["parameters"]["jsonBody"]
