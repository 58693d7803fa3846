"""Benchmark: N deferred ``LLMJobOperator`` tasks on one Airflow triggerer.

    python -m bench.airflow_triggerer                      # 500 tasks, 120 s steady window
    python -m bench.airflow_triggerer --tasks 50 --measure 30 --poll-interval 10   # quick

What it does, all on this machine (a fresh AIRFLOW_HOME with SQLite, nothing shared):
1. starts ``overnight serve`` on this module's engine: every job waits for a gate file, then
   ends ``offset`` seconds later (offsets spread over ``--stagger``); an ASGI wrapper counts
   the API requests by kind;
2. runs a DAG of N mapped ``LLMJobOperator`` tasks the way ``airflow dags test`` does, but
   without running triggers inline, so every task submits its job and defers;
3. starts ``airflow triggerer`` and, once every trigger has a long poll in flight, measures for
   ``--measure`` seconds: the triggerer's CPU (its process tree) and RSS, and requests per job
   per minute;
4. opens the gate; for each task, the resume delay is the task instance's ``scheduled_dttm``
   (set when the triggerer hands the event back) minus the job's ``finished_at``.

Prints a table and writes ``results/airflow_triggerer.json``. Run by hand, not in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "bench_overnight_triggerer"
GATE_ENV = "OVERNIGHT_BENCH_GATE"


# -- the engine and the counting server (run inside `python -m bench.airflow_triggerer serve`) --


class GateEngine:
    """Jobs ``"gate:<offset>"`` wait until the gate file exists, then ``offset`` seconds more."""

    def __init__(self, models: Sequence[str], gate: Path) -> None:
        self.models: Sequence[str] = tuple(models)
        self.gate = gate
        self._open: asyncio.Event | None = None

    def capacity(self, model: str) -> int:
        return 5000

    async def _watch(self, opened: asyncio.Event) -> None:
        while not self.gate.exists():
            await asyncio.sleep(0.02)  # one watcher for every job: a cheap stat, 50 times a second
        opened.set()

    async def run(self, job: Any) -> Any:
        from overnight.engine import EngineResult

        if self._open is None:
            self._open = asyncio.Event()
            asyncio.get_running_loop().create_task(self._watch(self._open))
        text = job.request.messages[-1].content if job.request.messages else ""
        if text.startswith("gate:"):
            await self._open.wait()
            await asyncio.sleep(float(text.split(":", 1)[1]))
        return EngineResult.chat("ok", prompt_tokens=1, completion_tokens=1, model=job.model)

    async def cancel(self, job_id: str) -> None:
        return None


class CountRequests:
    """ASGI wrapper: counts requests by kind; ``GET /bench/requests`` reports the counts."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self.waiting = 0
        self.wait_seconds = 0.0
        self.last_wait: dict[str, float] = {}
        self.answered: dict[str, float] = {}  # job id -> wall clock when its last long poll was answered
        self.gaps = [0.0, 0]  # sum and count of the seconds between one job's consecutive long polls

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == "/bench/answered":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": json.dumps(self.answered).encode()})
            return
        if path == "/bench/requests":
            extra = {"waiting_now": self.waiting, "wait_seconds": self.wait_seconds,
                     "gap_sum": self.gaps[0], "gap_count": self.gaps[1]}
            body = json.dumps({**self.counts, **extra}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        kind = "wait" if path.endswith("/wait") else f"{scope['method']} {'/v1/jobs/{id}' if path.count('/') > 2 else path}"
        self.counts[kind] += 1
        self.waiting += kind == "wait"
        started = time.monotonic()
        if kind == "wait":
            job_id = path.split("/")[3]
            if job_id in self.last_wait:
                self.gaps[0] += started - self.last_wait[job_id]
                self.gaps[1] += 1
            self.last_wait[job_id] = started
        try:
            await self.app(scope, receive, send)
        finally:
            if kind == "wait":
                self.waiting -= 1
                self.wait_seconds += time.monotonic() - started
                self.answered[job_id] = time.time()


def serve(port: int, data_dir: Path, gate: Path, recheck: float | None) -> None:
    import uvicorn

    from overnight.server import app as server_app
    from overnight.server.config import ServerConfig
    from overnight.server.service import create_service

    if recheck is not None:  # how often each long poll re-reads the store (the server's default: 1 s)
        server_app._RECHECK_SECONDS = recheck  # type: ignore[attr-defined]

    config = ServerConfig(data_dir=data_dir, port=port)
    app = CountRequests(create_service(config, GateEngine(config.models, gate)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, backlog=4096)


# -- deferring every task (run inside `python -m bench.airflow_triggerer defer-all`) ------------


def defer_all(dag_id: str, expected: int) -> None:
    """``airflow dags test`` minus the inline triggers: each task runs, submits its job, defers."""
    import airflow.sdk.definitions.dag as dag_module
    from airflow.utils.cli import get_bagged_dag

    run_task = dag_module._run_task
    dag_module._run_task = lambda *, ti, task, run_triggerer=False: run_task(ti=ti, task=task, run_triggerer=False)
    dag = get_bagged_dag(None, dag_id)
    db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"

    def exit_when_all_deferred() -> None:
        while _count(db, "deferred") < expected:
            time.sleep(0.5)  # progress polling of the metadata DB
        os._exit(0)  # dag.test would idle forever on the deferred tasks

    threading.Thread(target=exit_when_all_deferred, daemon=True).start()
    dag.test()  # in the main thread: the task runner installs signal handlers
    raise SystemExit(f"the DAG run ended before {expected} tasks deferred")


def _count(db: Path, state: str) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM task_instance WHERE dag_id=? AND state=?", (DAG_ID, state)).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


# -- the driver ---------------------------------------------------------------------------


DAG_TEMPLATE = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider.operators.llm_job import LLMJobOperator

with DAG("{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False):
    LLMJobOperator.partial(task_id="wait", deferrable=True, poll_interval={poll}, max_tokens=1).expand(
        prompt=["gate:%.3f" % (i * {stagger} / {tasks}) for i in range({tasks})]
    )
'''


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in _tree(pid):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except Exception:
            pass
    return total


def _cpu_by_process(pid: int) -> dict[str, float]:
    """CPU seconds of each process in the tree, keyed by a short name (pid and command)."""
    seconds: dict[str, float] = {}
    for proc in _tree(pid):
        try:
            times = proc.cpu_times()
            name = " ".join(proc.cmdline()[1:4])[:60]
            seconds[f"{proc.pid} {name}"] = times.user + times.system
        except Exception:
            pass
    return seconds


def _rss_mib(pid: int) -> float:
    total = 0
    for proc in _tree(pid):
        try:
            total += proc.memory_info().rss
        except Exception:
            pass
    return total / 2**20


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--data-dir", type=Path, required=True)
    s.add_argument("--gate", type=Path, required=True)
    s.add_argument("--recheck", type=float, default=None)
    d = sub.add_parser("defer-all")
    d.add_argument("--expected", type=int, required=True)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--measure", type=float, default=120.0, help="steady-state window, seconds")
    parser.add_argument("--poll-interval", type=float, default=30.0, help="the trigger's long-poll window")
    parser.add_argument("--stagger", type=float, default=20.0, help="jobs end over this many seconds after the gate opens")
    parser.add_argument("--server-recheck", type=float, default=None,
                        help="seconds between store re-reads of each server long poll (default: the server's, 1 s)")
    parser.add_argument("--asyncio-debug", action="store_true", help="PYTHONASYNCIODEBUG=1 in the triggerer (slow callbacks are logged)")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "airflow_triggerer.json")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port, args.data_dir, args.gate, args.recheck)
        return 0
    if args.command == "defer-all":
        defer_all(DAG_ID, args.expected)
        return 0
    return run_bench(args)


def run_bench(args: argparse.Namespace) -> int:
    import httpx

    from overnight import Client

    work = Path(tempfile.mkdtemp(prefix="bench-airflow-"))
    home, dags, gate = work / "airflow", work / "airflow" / "dags", work / "gate"
    dags.mkdir(parents=True)
    (dags / f"{DAG_ID}.py").write_text(DAG_TEMPLATE.format(dag_id=DAG_ID, poll=args.poll_interval, stagger=args.stagger, tasks=args.tasks))
    port = _free_port()
    keys = json.loads(subprocess.check_output(
        [sys.executable, "-m", "overnight", "keys", "create", "--json", "--tenant", "bench", "--data-dir", str(work / "server")], cwd=REPO))
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ, "PYTHONPATH": str(REPO), "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__TRIGGERER__CAPACITY": str(max(1000, args.tasks)),
        "AIRFLOW_CONN_OVERNIGHT_DEFAULT": json.dumps({"conn_type": "overnight", "host": url, "password": keys["api_key"]}),
    }
    procs: list[subprocess.Popen[bytes]] = []

    def start(*cmd: str, log: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=env, stdout=(work / log).open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
        return proc

    def counts() -> dict[str, int]:
        return httpx.get(f"{url}/bench/requests", timeout=10).json()

    try:
        recheck = ["--recheck", str(args.server_recheck)] if args.server_recheck is not None else []
        server = start("-m", "bench.airflow_triggerer", "serve", "--port", str(port), "--data-dir", str(work / "server"),
                       "--gate", str(gate), *recheck, log="server.log")
        _until(lambda: _healthy(url), 60, "the server to start")
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], cwd=REPO, env=env, check=True, capture_output=True)

        started = time.monotonic()
        deferring = start("-m", "bench.airflow_triggerer", "defer-all", "--expected", str(args.tasks), log="defer.log")
        _until(lambda: deferring.poll() is not None, 3600, "every task to defer")
        assert deferring.returncode == 0, (work / "defer.log").read_text()[-3000:]
        defer_seconds = time.monotonic() - started
        print(f"{args.tasks} tasks deferred in {defer_seconds:.0f} s", flush=True)

        if args.asyncio_debug:
            env["PYTHONASYNCIODEBUG"] = "1"
        triggerer = start("-m", "airflow", "triggerer", "--capacity", str(max(1000, args.tasks)), log="triggerer.log")
        started = time.monotonic()
        _until(lambda: counts()["waiting_now"] >= args.tasks, 600, "every trigger to long-poll")
        pickup_seconds = time.monotonic() - started
        print(f"all {args.tasks} triggers waiting after {pickup_seconds:.1f} s; measuring {args.measure:.0f} s", flush=True)

        before, cpu_before, t0 = counts(), _cpu_seconds(triggerer.pid), time.monotonic()
        per_process_before, server_before = _cpu_by_process(triggerer.pid), _cpu_seconds(server.pid)
        rss: list[float] = []
        while time.monotonic() - t0 < args.measure:
            rss.append(_rss_mib(triggerer.pid))
            time.sleep(1.0)  # RSS sampling period
        after, cpu_after, window = counts(), _cpu_seconds(triggerer.pid), time.monotonic() - t0
        per_process = {name: round(100 * (cpu - per_process_before.get(name, 0.0)) / window, 1)
                       for name, cpu in _cpu_by_process(triggerer.pid).items()}
        server_cpu = round(100 * (_cpu_seconds(server.pid) - server_before) / window, 1)
        load = os.getloadavg()
        waits = after["wait"] - before["wait"]

        gate.touch()
        opened = time.time()
        cpu_resume_before = _cpu_seconds(triggerer.pid)
        _until(lambda: _count(home / "airflow.db", "scheduled") >= args.tasks, 600, "every task to be resumed")
        resume_window = time.time() - opened
        cpu_resume = _cpu_seconds(triggerer.pid) - cpu_resume_before

        with Client(api_key=keys["api_key"], base_url=url) as client:
            jobs = list(client.iter_jobs(metadata={"airflow_dag_id": DAG_ID}, page_size=1000))
        finished = {int(job.metadata["airflow_map_index"]): job.finished_at.timestamp() for job in jobs if job.finished_at}
        with sqlite3.connect(home / "airflow.db") as db:
            scheduled = {row[0]: _utc(row[1]) for row in db.execute(
                "SELECT map_index, scheduled_dttm FROM task_instance WHERE dag_id=? AND state='scheduled'", (DAG_ID,))}
        fired = _fired_at(home / "logs")
        answered = httpx.get(f"{url}/bench/answered", timeout=30).json()
        ids = {int(job.metadata["airflow_map_index"]): job.id for job in jobs}
        server_delays = sorted(answered[ids[i]] - finished[i] for i in finished)
        client_delays = sorted(fired[i] - answered[ids[i]] for i in fired)
        delays = sorted(scheduled[i] - finished[i] for i in scheduled)
        poll_delays = sorted(fired[i] - finished[i] for i in fired)
        loop_delays = sorted(scheduled[i] - fired[i] for i in fired)
        result = {
            "tasks": args.tasks, "poll_interval_s": args.poll_interval, "measure_s": round(window, 1),
            "defer_all_s": round(defer_seconds, 1), "trigger_pickup_s": round(pickup_seconds, 1),
            "triggerer_cpu_percent_waiting": round(100 * (cpu_after - cpu_before) / window, 1),
            "triggerer_cpu_percent_by_process": per_process,
            "server_cpu_percent_waiting": server_cpu, "server_recheck_s": args.server_recheck or 1.0,
            "machine_load_average_1_5_15": [round(x, 2) for x in load],
            "triggerer_rss_mib_mean": round(statistics.fmean(rss), 1), "triggerer_rss_mib_max": round(max(rss), 1),
            "wait_requests_in_window": waits,
            "requests_per_job_per_minute": round(60 * (after["gap_count"] - before["gap_count"])
                                                 / max(1e-9, after["gap_sum"] - before["gap_sum"]), 3),
            "requests_per_job_per_minute_counted": round(waits / args.tasks / (window / 60), 3),
            "mean_server_time_per_wait_request_s": round((after["wait_seconds"] - before["wait_seconds"]) / max(1, waits), 2),
            "other_requests_in_window": sum(after.get(k, 0) - before.get(k, 0) for k in after
                                            if k in before and not k.startswith(("wait", "gap"))),
            "resume_window_s": round(resume_window, 1), "triggerer_cpu_s_during_resume": round(cpu_resume, 1),
            "resume_delay_s_p50": round(statistics.median(delays), 3),
            "resume_delay_s_p95": round(delays[int(0.95 * (len(delays) - 1))], 3),
            "resume_delay_s_max": round(delays[-1], 3),
            "job_end_to_trigger_event_s_p50_p95_max": _p50_p95_max(poll_delays),
            "job_end_to_long_poll_answered_s_p50_p95_max": _p50_p95_max(server_delays),
            "long_poll_answered_to_trigger_event_s_p50_p95_max": _p50_p95_max(client_delays),
            "trigger_event_to_scheduled_s_p50_p95_max": _p50_p95_max(loop_delays),
            "triggerer_blocked_loop_warnings": (work / "triggerer.log").read_text().count("async thread was blocked"),
            "requests_by_kind_total": {k: v for k, v in counts().items() if not k.startswith(("waiting", "wait_", "gap"))},
        }
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    _print(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} (work dir {work})")
    return 0


def _p50_p95_max(values: list[float]) -> list[float]:
    if not values:
        return []
    return [round(statistics.median(values), 3), round(values[int(0.95 * (len(values) - 1))], 3), round(values[-1], 3)]


def _fired_at(logs: Path) -> dict[int, float]:
    """When each task's trigger fired its event, from the triggerer's per-task JSON logs."""
    fired: dict[int, float] = {}
    for path in logs.rglob("*.log.trigger.*.log"):
        for line in path.read_text().splitlines():
            if '"Trigger fired event"' in line:
                record = json.loads(line)
                fired[int(record.get("map_index", path.parent.name.split("=")[-1]))] = _utc(record["timestamp"].replace("Z", "+00:00"))
    return fired


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _utc(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)  # polling progress of separate processes


def _print(result: dict[str, Any]) -> None:
    def span(key: str) -> str:
        return " / ".join(map(str, result[key])) + " s"

    rows = [
        ("deferred tasks on one triggerer", f"{result['tasks']}"),
        ("triggerer CPU while waiting", f"{result['triggerer_cpu_percent_waiting']} % of one core"),
        ("overnight server CPU while waiting",
         f"{result['server_cpu_percent_waiting']} % (store re-read every {result['server_recheck_s']} s per poll)"),
        ("triggerer RSS (mean / max)", f"{result['triggerer_rss_mib_mean']} / {result['triggerer_rss_mib_max']} MiB"),
        ("HTTP requests per job per minute", f"{result['requests_per_job_per_minute']} (window {result['poll_interval_s']} s)"),
        ("job end -> task scheduled, p50 / p95 / max",
         f"{result['resume_delay_s_p50']} / {result['resume_delay_s_p95']} / {result['resume_delay_s_max']} s"),
        ("  of which job end -> trigger event", span("job_end_to_trigger_event_s_p50_p95_max")),
        ("    job end -> long poll answered (server)", span("job_end_to_long_poll_answered_s_p50_p95_max")),
        ("    answered -> trigger event (triggerer)", span("long_poll_answered_to_trigger_event_s_p50_p95_max")),
        ("  of which event -> task scheduled (Airflow)", span("trigger_event_to_scheduled_s_p50_p95_max")),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
