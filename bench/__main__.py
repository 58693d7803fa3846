"""The benchmark suite: Overnight against its peers, side by side, in one run.

    python -m bench run [--quick] [--model smollm2-135m] [--out results/] [--usd-per-hour 0.09]
    python -m bench run --only queue          # or offline, run-batch, ray (comma list)
    python -m bench report results/bench-20260101-120000.json   # re-render a saved run

Phases, each in its own process (``bench/common.py``): ``queue`` (no-op engine,
``bench/queue_throughput.py``), then ``offline``, ``run-batch`` and ``ray``
(``bench/engine_throughput.py``). It writes ``<out>/bench-<time>.json`` (every raw
number, the config and the machine), ``.md`` (the tables) and two PNG plots, and prints
the tables last. ``--model`` picks any registry model; ``RAY_ADDRESS`` puts the Serve
replica (and ``overnight serve``'s engine) on that cluster, while ``offline`` and
``run-batch`` run on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from .common import MAX_TOKENS, MODEL, machine, run_phase
from .report import markdown, summarize_run, write_plots

PHASES = {
    "queue": "bench.queue_throughput:phase_queue",
    "offline": "bench.engine_throughput:phase_offline",
    "run-batch": "bench.engine_throughput:phase_run_batch",
    "ray": "bench.engine_throughput:phase_ray",
}
DEFAULT_USD_PER_HOUR = 0.09  # about one on-demand 2-vCPU cloud VM (e.g. AWS c7i.large) for an hour


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    config: dict[str, Any] = {
        "quick": quick,
        "model": args.model,
        "max_tokens": MAX_TOKENS,
        "n": args.n or (64 if quick else 256),
        "levels": [int(c) for c in args.levels.split(",")] if args.levels else ([1, 8, 32] if quick else [1, 8, 32, 64, 128]),
        "engine_repeats": args.repeats or (1 if quick else 3),
        "sweep_repeats": args.repeats or (1 if quick else 3),
        "cheap_repeats": 3 if quick else 5,
        "sweep_waves": 1 if quick else 2,  # requests at level c: waves x c (at least sweep_min_requests)
        "sweep_min_requests": 2 if quick else 4,
        "overhead_samples": 20 if quick else 60,
        "overhead_max_tokens": 1,  # the added latency does not grow with the answer; short answers, less noise
        "queue": ({"claim_jobs": 2000, "single": 200, "bulk_batches": 2, "cpu_jobs": 1000, "long_poll_samples": 30}
                  if quick else
                  {"claim_jobs": 5000, "single": 500, "bulk_batches": 5, "cpu_jobs": 3000, "long_poll_samples": 50}),
        "usd_per_hour": args.usd_per_hour,
        "phase_timeout_s": 900 if quick else 6 * 3600,
    }
    return config


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    wanted = [p.strip() for p in args.only.split(",")] if args.only else list(PHASES)
    unknown = [p for p in wanted if p not in PHASES]
    if unknown:
        print(f"unknown phase(s) {unknown}; choose from {list(PHASES)}", file=sys.stderr)
        return 2
    described = machine()
    started = time.perf_counter()
    phases: dict[str, Any] = {}
    for name in wanted:
        print(f"[bench {time.perf_counter() - started:6.0f} s] phase {name} ...", file=sys.stderr, flush=True)
        phases[name] = run_phase(PHASES[name], config, timeout_s=config["phase_timeout_s"])
        state = f"failed: {phases[name]['error']}" if "error" in phases[name] else "done"
        print(f"[bench {time.perf_counter() - started:6.0f} s] phase {name} {state} "
              f"({phases[name]['phase_wall_s']:.0f} s)", file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    described["load_average_after"] = machine()["load_average"]
    return write_outputs(phases, config, described, wall, Path(args.out))


def write_outputs(phases: dict[str, Any], config: dict[str, Any], described: dict[str, Any], wall: float,
                  out_dir: Path, stem: str | None = None) -> int:
    summary = summarize_run(phases, config, described)
    table = markdown(summary, config, described) + f"\n\nWall time of the run: {wall / 60:.1f} min."
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or str(out_dir / f"bench-{datetime.now():%Y%m%d-%H%M%S}")
    Path(f"{stem}.json").write_text(json.dumps({
        "benchmark": "overnight", "schema": 1, "config": config, "machine": described, "wall_s": wall,
        "phases": phases, "summary": summary, "table": table,
    }, indent=2))
    Path(f"{stem}.md").write_text(table + "\n")
    try:
        plots = write_plots(summary, phases, config, stem)
    except ImportError:
        plots = []
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
    print(f"\nwrote {stem}.json, {stem}.md" + "".join(f", {p}" for p in plots) + "\n")
    print(table)
    return 1 if summary["errors"] else 0


def report(args: argparse.Namespace) -> int:
    data = json.loads(Path(args.file).read_text())
    stem = str(Path(args.file).with_suffix(""))
    return write_outputs(data["phases"], data["config"], data["machine"], data["wall_s"], Path(args.file).parent, stem)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the benchmarks")
    run_parser.add_argument("--quick", action="store_true",
                            help="64 prompts, engine runs once, sweep 1/8/32; under 15 minutes on 2 cores")
    run_parser.add_argument("--model", default=MODEL, help="registry model (default %(default)s)")
    run_parser.add_argument("--out", default="results", help="folder for the JSON, Markdown and plots")
    run_parser.add_argument("--n", type=int, default=None, help="prompts per throughput run (default 256, quick 64)")
    run_parser.add_argument("--repeats", type=int, default=None, help="engine runs per measurement (default 3, quick 1)")
    run_parser.add_argument("--levels", default=None, help="concurrency sweep, e.g. 1,8,32 (default 1,8,32,64,128)")
    run_parser.add_argument("--usd-per-hour", type=float, default=DEFAULT_USD_PER_HOUR,
                            help="price of an hour of the machine running the engine, GPU or CPU "
                                 "(default %(default)s: about an on-demand 2-vCPU cloud VM)")
    run_parser.add_argument("--only", default=None, help=f"comma list of phases: {', '.join(PHASES)}")
    report_parser = commands.add_parser("report", help="re-render the tables and plots of a saved run")
    report_parser.add_argument("file")
    args = parser.parse_args(argv)
    return run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    sys.exit(main())
