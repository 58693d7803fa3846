"""Workflows for the end-to-end suite, built the way n8n exports them.

    overnight_node("Ask", "submitAndWait", prompt="...")   # one node of type CUSTOM.overnight
    workflow("wfId", "name", [trigger(), node, ...])       # nodes chained in the order given
"""

from __future__ import annotations

import itertools
import json
from typing import Any

NODE_TYPE = "CUSTOM.overnight"  # a package loaded through N8N_CUSTOM_EXTENSIONS
CREDENTIAL = {"id": "ovnNodeCred00001", "name": "Overnight (tests)"}
WRONG_SECRET_CREDENTIAL = {"id": "ovnNodeCred00002", "name": "Overnight (other webhook secret)"}
HEADER_AUTH = {"id": "ovnHeaderAuth001", "name": "Overnight API key"}  # as in the templates


def credentials(url: str, api_key: str, other_secret: str) -> list[dict[str, Any]]:
    return [
        {**CREDENTIAL, "type": "overnightApi", "data": {"baseUrl": url, "apiKey": api_key, "webhookSecret": ""}},
        {**WRONG_SECRET_CREDENTIAL, "type": "overnightApi",
         "data": {"baseUrl": url, "apiKey": api_key, "webhookSecret": other_secret}},
        {**HEADER_AUTH, "type": "httpHeaderAuth", "data": {"name": "Authorization", "value": f"Bearer {api_key}"}},
    ]


def trigger() -> dict[str, Any]:
    return {"id": "trigger", "name": "Start", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1,
            "position": [0, 0], "parameters": {}}


def overnight_node(name: str, operation: str, credential: dict[str, str] = CREDENTIAL, **parameters: Any) -> dict[str, Any]:
    return {"id": f"node-{name}", "name": name, "type": NODE_TYPE, "typeVersion": 1, "position": [0, 0],
            "parameters": {"operation": operation, **parameters}, "credentials": {"overnightApi": credential}}


def chat(prompt: str, max_tokens: int = 24) -> dict[str, Any]:
    """Request parameters of the submit operations: one user message, greedy decoding."""
    return {
        "model": "smollm2-135m",
        "input": "messages",
        "messages": {"message": [{"role": "user", "content": prompt}]},
        "options": {"maxTokens": max_tokens, "temperature": 0},
    }


def set_fields(name: str, **fields: str) -> dict[str, Any]:
    assignments = [{"id": f"{name}-{i}", "name": key, "value": value, "type": "string"} for i, (key, value) in enumerate(fields.items())]
    return {"id": f"set-{name}", "name": name, "type": "n8n-nodes-base.set", "typeVersion": 3.4, "position": [0, 0],
            "parameters": {"mode": "manual", "assignments": {"assignments": assignments}, "options": {}}}


def items_from(name: str, field: str, values: list[str]) -> list[dict[str, Any]]:
    """Two nodes that turn a fixed list into one item per value (``{field: value}``)."""
    holder = {"id": f"set-{name}", "name": name, "type": "n8n-nodes-base.set", "typeVersion": 3.4, "position": [0, 0],
              "parameters": {"mode": "manual", "assignments": {"assignments": [
                  {"id": f"{name}-0", "name": field, "value": json.dumps(values), "type": "array"}]}, "options": {}}}
    split = {"id": f"split-{name}", "name": f"{name} (items)", "type": "n8n-nodes-base.splitOut", "typeVersion": 1,
             "position": [0, 0], "parameters": {"fieldToSplitOut": field, "options": {}}}
    return [holder, split]


def workflow(workflow_id: str, name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    for index, node in enumerate(nodes):
        node["position"] = [index * 220, 0]
    connections = {
        a["name"]: {"main": [[{"node": b["name"], "type": "main", "index": 0}]]} for a, b in itertools.pairwise(nodes)
    }
    return {"id": workflow_id, "name": name, "nodes": nodes, "connections": connections,
            "settings": {"executionOrder": "v1"}, "active": False}
