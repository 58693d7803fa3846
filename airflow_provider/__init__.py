"""The Airflow provider for Overnight: deferrable LLM operators that never pay twice.

    from airflow_provider.operators.llm_job import LLMJobOperator
    from airflow_provider.operators.llm_batch import LLMBatchOperator
    from airflow_provider.sensors.overnight import LLMJobSensor

    LLMJobOperator(task_id="summarise", prompt="Summarise: {{ params.text }}", deferrable=True)

Layout as in Airflow's own providers: ``hooks/`` (``OvernightHook``, connection type
``overnight``), ``operators/``, ``triggers/`` (``LLMJobTrigger``), ``sensors/``,
``exceptions.py``, ``get_provider_info.py`` (the ``apache_airflow_provider`` entry point) and
``example_dags/``. The names above are also importable from this package, lazily, so that
provider discovery stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "LLMBatchOperator",
    "LLMJobOperator",
    "LLMJobSensor",
    "LLMJobTrigger",
    "OvernightHook",
    "OvernightJobLink",
]

_HOMES = {
    "LLMBatchOperator": ".operators.llm_batch",
    "LLMJobOperator": ".operators.llm_job",
    "OvernightJobLink": ".operators.llm_job",
    "LLMJobSensor": ".sensors.overnight",
    "LLMJobTrigger": ".triggers.overnight",
    "OvernightHook": ".hooks.overnight",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
