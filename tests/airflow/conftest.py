"""Airflow 3 for the provider tests: its own AIRFLOW_HOME, a SQLite metadata DB, our DAGs.

AIRFLOW_HOME and the dags folder are set here, at import, before any test module of this
folder imports airflow (airflow reads its configuration once, when first imported).

    def test_x(airflow, fake_server):
        run = airflow.dags_test("overnight_provider_checks", conn=connection_json(fake_server))
        assert run.task("reattach")["state"] == "success"

Fixtures: ``airflow`` (session: ``airflow db migrate`` once; the example DAG and
``tests/airflow/dags/*.py`` copied into the dags folder) and ``fake_server`` (session: an
``overnight serve`` on the deterministic ``tests.fakes`` engine). End-to-end tests on the real
engine use the session-wide ``real_server`` from ``tests/conftest.py``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.live import REPO, OvernightProcess

HOME = Path(tempfile.mkdtemp(prefix="overnight-airflow-"))
DAGS = HOME / "dags"
DAGS.mkdir()
atexit.register(shutil.rmtree, HOME, True)
os.environ.update(
    AIRFLOW_HOME=str(HOME),
    AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
    AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
)

HERE = Path(__file__).resolve().parent
EXAMPLE_DAG = REPO / "airflow_provider" / "example_dags" / "example_nightly_summaries.py"


def connection_json(server: OvernightProcess) -> str:
    """The ``overnight`` connection for a live server, in Airflow's JSON form."""
    return json.dumps({"conn_type": "overnight", "host": server.url, "password": server.api_key})


@dataclass
class DagRun:
    dag_id: str
    run_id: str
    state: str
    output: str
    db: Path

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, args).fetchall()

    def task(self, task_id: str, map_index: int = -1) -> dict[str, Any]:
        """The task instance row (state, try_number, ...)."""
        rows = self._rows(
            "SELECT * FROM task_instance WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=?",
            self.dag_id, self.run_id, task_id, map_index,
        )
        assert rows, f"no task instance {task_id}[{map_index}] in {self.run_id}"
        return dict(rows[0])

    def states(self) -> dict[str, str]:
        """task_id -> state; mapped tasks appear as ``task_id[map_index]``."""
        rows = self._rows("SELECT task_id, map_index, state FROM task_instance WHERE dag_id=? AND run_id=?", self.dag_id, self.run_id)
        return {row["task_id"] + (f"[{row['map_index']}]" if row["map_index"] >= 0 else ""): row["state"] for row in rows}

    def tries(self, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Earlier tries of a task instance, from task_instance_history, oldest first."""
        rows = self._rows(
            "SELECT * FROM task_instance_history WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? ORDER BY try_number",
            self.dag_id, self.run_id, task_id, map_index,
        )
        return [dict(row) for row in rows]

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        rows = self._rows(
            "SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=? AND key=?",
            self.dag_id, self.run_id, task_id, map_index, key,
        )
        assert rows, f"no XCom {key!r} for {task_id}[{map_index}]"
        return json.loads(rows[0]["value"])


class Airflow:
    """The Airflow CLI against this session's AIRFLOW_HOME."""

    home = HOME
    dags = DAGS
    db = HOME / "airflow.db"

    def run(self, *args: str, conn: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS...``; ``conn`` becomes the ``overnight_default`` connection."""
        return self.run_python("-m", "airflow", *args, conn=conn, timeout=timeout)

    def run_python(self, *args: str, conn: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``python ARGS...`` (a script as one argument is run with ``-c``) in this Airflow home."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if conn is not None:
            env["AIRFLOW_CONN_OVERNIGHT_DEFAULT"] = conn
        argv = ["-c", args[0]] if len(args) == 1 else list(args)
        return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    def dags_test(self, dag_id: str, *, conn: str, conf: dict[str, Any] | None = None, timeout: float = 300) -> DagRun:
        """``airflow dags test DAG_ID``: triggers run inline (defer, trigger, resume)."""
        args = ["dags", "test", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
        done = self.run(*args, conn=conn, timeout=timeout)
        output = done.stdout + done.stderr
        with sqlite3.connect(self.db) as db:
            row = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
        assert row, output[-5000:]
        assert done.returncode == (0 if row[1] == "success" else 1), output[-5000:]  # exits 1 when the run failed
        return DagRun(dag_id, row[0], row[1], output, self.db)


@pytest.fixture(scope="session")
def airflow() -> Iterator[Airflow]:
    cli = Airflow()
    migrated = cli.run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    shutil.copy(EXAMPLE_DAG, DAGS / EXAMPLE_DAG.name)
    for dag_file in (HERE / "dags").glob("*.py"):
        shutil.copy(dag_file, DAGS / dag_file.name)
    yield cli


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvernightProcess]:
    """``overnight serve`` on the deterministic engine ("slow:<s>", "hang", "fail-fatal", ...)."""
    with OvernightProcess(tmp_path_factory.mktemp("overnight-fake")) as server:
        yield server
