"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point.

    [project.entry-points.apache_airflow_provider]
    provider_info = "airflow_provider.get_provider_info:get_provider_info"

``airflow providers list`` then shows the ``overnight`` package, and the connection form
offers the ``overnight`` connection type (host = base URL, password = API key). This module
imports nothing heavy: Airflow calls it while discovering providers.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONNECTION_TYPE", "UI_FIELD_BEHAVIOUR", "get_provider_info"]

CONNECTION_TYPE = "overnight"

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login"],
    "relabeling": {"host": "Base URL", "password": "API Key"},
    "placeholders": {
        "host": "http://127.0.0.1:8000",
        "password": "ovn_...",
        "port": "(optional, when the base URL has none)",
        "extra": '{"timeout": 60, "max_retries": 4}',
    },
}
"""The connection form: kebab-case keys, as in ``provider.yaml``."""

_INTEGRATION = "Overnight"


def get_provider_info() -> dict[str, Any]:
    """Hooks, operators, triggers, sensors, the connection type and the extra link."""
    return {
        "package-name": "overnight",
        "name": "Overnight",
        "description": "Deferrable LLM jobs on Overnight, the asynchronous batch LLM inference service.",
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "tags": ["ai", "llm", "batch-inference"],
            }
        ],
        "hooks": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_provider.hooks.overnight"]}],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider.operators.llm_job", "airflow_provider.operators.llm_batch"],
            }
        ],
        "triggers": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_provider.triggers.overnight"]}],
        "sensors": [{"integration-name": _INTEGRATION, "python-modules": ["airflow_provider.sensors.overnight"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider.hooks.overnight.OvernightHook",
                "hook-name": "Overnight",
                "connection-type": CONNECTION_TYPE,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": {
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Seconds before one HTTP request gives up (long polls add their window).",
                        "schema": {"type": ["number", "null"], "default": 60},
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "description": "Retries of connection errors, 429 and 5xx, with the same Idempotency-Key.",
                        "schema": {"type": ["integer", "null"], "default": 4},
                    },
                },
            }
        ],
        "extra-links": ["airflow_provider.operators.llm_job.OvernightJobLink"],
    }
