"""Airflow discovers the provider through the installed ``apache_airflow_provider`` entry point:
the CLI lists it, and the connection form offers the ``overnight`` type with its fields."""

from __future__ import annotations

import json
import tomllib
from importlib import import_module
from importlib.metadata import entry_points

import pytest

from airflow_provider.get_provider_info import get_provider_info
from tests.airflow.conftest import Airflow
from tests.live import REPO


def cli_json(airflow: Airflow, *args: str) -> list[dict]:
    done = airflow.run(*args, "--output", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index("[") :])


def test_the_entry_point_is_declared_and_installed() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["apache_airflow_provider"]
    assert declared == {"provider_info": "airflow_provider.get_provider_info:get_provider_info"}
    (installed,) = [ep for ep in entry_points(group="apache_airflow_provider") if ep.dist and ep.dist.name == "overnight"]
    assert installed.load() is get_provider_info


def test_airflow_providers_list_shows_it(airflow: Airflow) -> None:
    (provider,) = [p for p in cli_json(airflow, "providers", "list") if p["package_name"] == "overnight"]
    assert provider["version"] == "0.1.0"


def test_the_hook_triggers_and_link_are_registered(airflow: Airflow) -> None:
    (hook,) = [h for h in cli_json(airflow, "providers", "hooks") if h["connection_type"] == "overnight"]
    assert (hook["class"], hook["conn_id_attribute_name"]) == ("airflow_provider.hooks.overnight.OvernightHook", "overnight_conn_id")
    assert {"package_name": "overnight", "class": "airflow_provider.triggers.overnight", "integration_name": "Overnight"} in cli_json(
        airflow, "providers", "triggers"
    )
    links = [link["extra_link_class_name"] for link in cli_json(airflow, "providers", "links")]
    assert "airflow_provider.operators.llm_job.OvernightJobLink" in links


def test_the_connection_form_metadata(airflow: Airflow) -> None:
    """What the UI's connection form reads (``GET /ui/connections/hook_meta``)."""
    script = (
        "import json\n"
        "from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService\n"
        "print(json.dumps([m.model_dump(mode='json') for m in HookMetaService.hook_meta_data()]))\n"
    )
    done = airflow.run_python(script)
    assert done.returncode == 0, done.stderr[-3000:]
    (meta,) = [m for m in json.loads(done.stdout.strip().splitlines()[-1]) if m["connection_type"] == "overnight"]
    assert meta["hook_name"] == "Overnight"
    fields = meta["standard_fields"]
    assert (fields["host"]["title"], fields["host"]["placeholder"]) == ("Base URL", "http://127.0.0.1:8000")
    assert fields["password"]["title"] == "API Key"
    assert fields["login"]["hidden"] and fields["url_schema"]["hidden"]
    assert not fields["host"]["hidden"] and not fields["password"]["hidden"]
    assert set(meta["extra_fields"]) == {"timeout", "max_retries"}


@pytest.mark.parametrize("kind", ["hooks", "operators", "triggers", "sensors"])
def test_every_listed_module_imports(kind: str) -> None:
    (entry,) = get_provider_info()[kind]
    for module in entry["python-modules"]:
        import_module(module)
    info = get_provider_info()
    for path in [info["connection-types"][0]["hook-class-name"], *info["extra-links"]]:
        module, _, name = path.rpartition(".")
        assert hasattr(import_module(module), name), path
