"""From the phases' raw numbers to the summary, the Markdown tables, the JSON and the plots.

    summary = summarize_run(phases, config, machine)      # pure: dicts in, dicts out
    print(markdown(summary, config, machine))
    write_plots(summary, phases, config, "results/bench-20260101-120000")

Nothing here measures anything; ``python -m bench report FILE.json`` re-renders a saved run.
"""

from __future__ import annotations

from typing import Any

from .stats import fmt_summary, latency, ratio, summarize

# the published reference: async-batch marketplace price for Llama 3.1 8B
REFERENCE_USD_PER_JOB = 0.011
REFERENCE_LABEL = "$0.011/job, Llama 3.1 8B, async-batch marketplace (founding notes)"

SYSTEMS = {  # key in the phases' output -> label
    "offline": "vLLM offline `LLM.chat`",
    "run-batch": "`vllm run-batch`, OpenAI batch file",
    "serve": "Ray Serve handle, direct",
    "overnight": "Overnight end to end (bulk HTTP submit, queue, dispatcher, Serve, vLLM)",
    "overnight-batch": "Overnight, OpenAI batch file (`/v1/files` + `/v1/batches`)",
}
SWEEP_SYSTEMS = {
    "offline": "vLLM offline `LLM.chat` (chunks of c)",
    "run-batch": "`vllm run-batch` (files of c lines)",
    "serve": "Ray Serve handle (c calls in flight)",
    "overnight-chat": "Overnight, sync `chat.completions` (c clients)",
}


def _tok_s(runs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return summarize([r["tok_s"] for r in runs]) if runs else None


def _ratio(top: dict[str, Any] | None, bottom: dict[str, Any] | None) -> dict[str, Any] | None:
    return ratio(top, bottom) if top and bottom and bottom["median"] > 0 else None


def cost_per_job(tok_s: float, usd_per_hour: float, output_tokens: int = 1000) -> float:
    """Dollars for one job of ``output_tokens`` output tokens at ``tok_s`` on a machine
    that costs ``usd_per_hour``."""
    return usd_per_hour / 3600.0 * output_tokens / tok_s


def aim_status(value: float | None, aim: float, higher_is_better: bool = True) -> float | None:
    """How far ``value`` is from ``aim`` as a factor: >= 1 meets it, 0.5 is half way there."""
    if value is None:
        return None
    if higher_is_better:
        return value / aim
    return aim / value if value > 0 else float("inf")


def summarize_run(phases: dict[str, Any], config: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """Everything the table and the plots show, derived from the raw phase results."""
    rows: dict[str, Any] = {}
    for phase in phases.values():
        if isinstance(phase, dict):
            rows.update({k: v for k, v in phase.items() if isinstance(v, dict)})
    out: dict[str, Any] = {"errors": {name: p["error"] for name, p in phases.items() if "error" in p}}

    throughput = {key: _tok_s(rows.get(key, {}).get("main")) for key in SYSTEMS}
    sweep: dict[str, dict[str, Any]] = {}
    for key in SWEEP_SYSTEMS:
        levels = rows.get(key, {}).get("sweep", {})
        sweep[key] = {level: _tok_s(runs) for level, runs in levels.items()}
    one_at_a_time = sweep.get("overnight-chat", {}).get("1")
    throughput["one-at-a-time"] = one_at_a_time
    out["throughput_tok_s"] = throughput
    out["sweep_tok_s"] = sweep

    on_gpu = bool(machine.get("gpus"))
    pipeline = throughput["overnight"]
    out["ratios"] = {
        "pipeline/offline": {"value": _ratio(pipeline, throughput["offline"]), "aim": 0.95 if on_gpu else 0.90},
        "pipeline/run-batch": {"value": _ratio(pipeline, throughput["run-batch"]), "aim": None},
        "pipeline/serve handle": {"value": _ratio(pipeline, throughput["serve"]), "aim": None},
        "pipeline/one-at-a-time": {"value": _ratio(pipeline, one_at_a_time), "aim": 6.0},
        "OpenAI batch via Overnight/run-batch": {"value": _ratio(throughput["overnight-batch"], throughput["run-batch"]),
                                                 "aim": 0.9},
    }

    overhead = rows.get("chat_overhead")
    if overhead and overhead.get("pairs"):
        pairs = overhead["pairs"]
        chat = latency([p["chat_s"] for p in pairs])
        direct = latency([p["direct_s"] for p in pairs])
        diffs = latency([p["chat_s"] - p["direct_s"] for p in pairs])
        out["chat_overhead"] = {"chat_s": chat, "direct_s": direct, "paired_diff_s": diffs,
                                "p50_overhead_s": chat["p50"] - direct["p50"], "max_tokens": overhead["max_tokens"],
                                "aim_s": 0.030}

    timings = rows.get("overnight", {}).get("job_timings") or []
    out["job_latency_s"] = {
        name: latency([t[key] for t in timings if t.get(key) is not None])
        for name, key in (("queue wait", "queued_s"), ("engine", "engine_s"), ("end to end", "end_to_end_s"))
        if any(t.get(key) is not None for t in timings)
    }
    outside = [t["end_to_end_s"] - t["engine_s"] for t in timings
               if t.get("engine_s") is not None and t.get("end_to_end_s") is not None]
    if outside:
        out["job_latency_s"]["outside the engine (end to end - engine)"] = latency(outside)

    out["machine_busy_cores"] = {
        key: summarize([r["cpu"]["machine_busy_cores"] for r in rows[key]["main"]])
        for key in SYSTEMS if rows.get(key, {}).get("main") and all("cpu" in r for r in rows[key]["main"])
    }

    queue_runs = rows.get("queue", {}).get("runs") or []
    if queue_runs:
        queue: dict[str, Any] = {}
        for key in ("submit_bulk_jobs_per_s", "submit_sequential_jobs_per_s", "submit_16_concurrent_jobs_per_s",
                    "claim_to_complete_jobs_per_s"):
            queue[key] = summarize([r[key] for r in queue_runs])
        queue["long_poll_p50_s"] = summarize([latency(r["long_poll_wakeup_s"])["p50"] for r in queue_runs])
        queue["long_poll_p99_s"] = summarize([latency(r["long_poll_wakeup_s"])["p99"] for r in queue_runs])
        queue["long_poll_all_s"] = latency([d for r in queue_runs for d in r["long_poll_wakeup_s"]])
        queue["cpu_s_per_1000_jobs"] = summarize([r["service_cpu"]["cpu_s"] / r["service_cpu"]["jobs"] * 1000
                                                  for r in queue_runs])
        queue["service_peak_rss_bytes"] = max(r["service_peak_rss_bytes"] for r in queue_runs)
        out["queue"] = queue

    resources: dict[str, Any] = {}
    ray_phase = phases.get("ray", {})
    if "service_peak_rss_bytes" in ray_phase:
        resources["service_peak_rss_bytes"] = ray_phase["service_peak_rss_bytes"]
        resources["tree_peak_rss_bytes"] = ray_phase["tree_peak_rss_bytes"]
    trees = {key: rows[key]["peak_rss_bytes"] for key in ("offline", "run-batch")
             if "peak_rss_bytes" in rows.get(key, {})}
    if "tree_peak_rss_bytes" in resources:
        trees["Overnight (service + Ray + replica)"] = resources["tree_peak_rss_bytes"]
    resources["tree_peak_rss_bytes_by_system"] = trees
    cpu = rows.get("overnight", {}).get("service_cpu")
    if cpu:
        resources["engine_run_cpu_s_per_1000_jobs"] = summarize([c["cpu_s"] / c["jobs"] * 1000 for c in cpu])
        if all("wall_s" in c for c in cpu):
            resources["engine_run_cpu_share_of_core"] = summarize([c["cpu_s"] / c["wall_s"] for c in cpu])
    out["resources"] = resources
    out["engine_start_s"] = {name: phase["engine_start_s"] if "engine_start_s" in phase
                             else next((v["engine_start_s"] for v in phase.values()
                                        if isinstance(v, dict) and "engine_start_s" in v), None)
                             for name, phase in phases.items() if name != "queue"}

    usd = config["usd_per_hour"]
    out["cost_per_1000_token_job_usd"] = {
        key: cost_per_job(value["median"], usd) for key, value in throughput.items() if value and value["median"] > 0
    }

    aims = {name: aim_status(r["value"]["median"] if r["value"] else None, r["aim"])
            for name, r in out["ratios"].items() if r["aim"] is not None}
    if "chat_overhead" in out:
        aims["chat.completions overhead p50"] = aim_status(out["chat_overhead"]["p50_overhead_s"], 0.030,
                                                           higher_is_better=False)
    known = {k: v for k, v in aims.items() if v is not None}
    out["aims"] = aims
    out["furthest_from_aim"] = min(known, key=known.get) if known else None
    return out


# -- Markdown ------------------------------------------------------------------------------

def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f} GiB"


def _ms(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "n/a"
    return fmt_summary({**summary, "median": summary["median"] * 1000, "min": summary["min"] * 1000,
                        "max": summary["max"] * 1000}, digits=1, unit=" ms")


def _met(factor: float | None) -> str:
    if factor is None:
        return "not measured"
    return "met" if factor >= 1 else "**missed**"


def sweep_table(summary: dict[str, Any], config: dict[str, Any]) -> str:
    levels = [str(c) for c in config["levels"]]
    n = config["n"]
    header = "| output tok/s at c in flight | " + " | ".join(f"c={c}" for c in levels) + f" | all {n} at once |"
    lines = [header, "|---|" + "---:|" * (len(levels) + 1)]
    main_of = {"offline": "offline", "run-batch": "run-batch", "serve": "serve", "overnight-chat": "overnight"}
    for key, label in SWEEP_SYSTEMS.items():
        cells = [fmt_summary(summary["sweep_tok_s"].get(key, {}).get(c)) for c in levels]
        main = summary["throughput_tok_s"].get(main_of[key])
        note = " (bulk jobs API)" if key == "overnight-chat" and main else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt_summary(main)}{note} |")
    return "\n".join(lines)


def main_table(summary: dict[str, Any], config: dict[str, Any], machine: dict[str, Any]) -> str:
    n, usd = config["n"], config["usd_per_hour"]
    t = summary["throughput_tok_s"]
    rows: list[tuple[str, str, str]] = []

    def section(title: str) -> None:
        rows.append((f"**{title}**", "", ""))

    section(f"Output tok/s, {n} prompts at once")
    for key, label in SYSTEMS.items():
        rows.append((label, fmt_summary(t.get(key)), ""))
    rows.append(("Overnight one-at-a-time (sync `chat.completions`, c=1)", fmt_summary(t.get("one-at-a-time")), ""))

    section("Ratios (same run, same machine)")
    for name, r in summary["ratios"].items():
        value = r["value"]
        aim = "" if r["aim"] is None else f">= {r['aim']:g} ({_met(summary['aims'].get(name))})"
        rows.append((name, fmt_summary(value, digits=2, unit="x"), aim))
    overhead = summary.get("chat_overhead")
    if overhead:
        rows.append((f"`chat.completions` added latency vs direct handle, p50 (max_tokens {overhead['max_tokens']})",
                     f"{overhead['p50_overhead_s'] * 1000:.1f} ms (paired p50 {overhead['paired_diff_s']['p50'] * 1000:.1f} ms; "
                     f"{overhead['chat_s']['p50'] * 1000:.0f} vs {overhead['direct_s']['p50'] * 1000:.0f} ms)",
                     f"< 30 ms ({_met(summary['aims'].get('chat.completions overhead p50'))})"))

    queue = summary.get("queue")
    if queue:
        section("Queue, no-op engine")
        rows.append(("submit, bulk (1,000 per request)", fmt_summary(queue["submit_bulk_jobs_per_s"], 0, " jobs/s"), ">= 2,000"))
        rows.append(("submit, one job per request (sequential)",
                     fmt_summary(queue["submit_sequential_jobs_per_s"], 0, " jobs/s"), ""))
        rows.append(("submit, one job per request (16 concurrent)",
                     fmt_summary(queue["submit_16_concurrent_jobs_per_s"], 0, " jobs/s"), ""))
        rows.append(("claim-to-complete", fmt_summary(queue["claim_to_complete_jobs_per_s"], 0, " jobs/s"), ">= 1,000"))
        rows.append(("long-poll wake-up p50", _ms(queue["long_poll_p50_s"]), "< 50 ms"))
        rows.append(("long-poll wake-up p99", _ms(queue["long_poll_p99_s"]), "< 50 ms"))

    job_latency = summary.get("job_latency_s")
    if job_latency:
        section(f"Job latency, Overnight run of {n} jobs (jobs' own timings), p50 / p95 / p99")
        for name, values in job_latency.items():
            if values["p99"] < 1.0:
                text = f"{values['p50'] * 1000:.1f} / {values['p95'] * 1000:.1f} / {values['p99'] * 1000:.1f} ms"
            else:
                text = f"{values['p50']:.2f} / {values['p95']:.2f} / {values['p99']:.2f} s"
            rows.append((name, text, ""))

    resources = summary.get("resources", {})
    section("Resources")
    if queue:
        rows.append(("CPU s per 1,000 jobs outside the engine (`overnight serve`, no-op engine)",
                     fmt_summary(queue["cpu_s_per_1000_jobs"], 2, " s"), ""))
    if "engine_run_cpu_s_per_1000_jobs" in resources:
        share = resources.get("engine_run_cpu_share_of_core")
        rows.append(("CPU of `overnight serve` during the vLLM run (engine in Ray workers), per 1,000 jobs",
                     fmt_summary(resources["engine_run_cpu_s_per_1000_jobs"], 1, " s")
                     + (f" ({share['median'] * 100:.0f}% of one core)" if share else ""), ""))
    if queue:
        rows.append(("peak RSS, `overnight serve` (no-op engine)", _gib(queue["service_peak_rss_bytes"]), ""))
    if "service_peak_rss_bytes" in resources:
        rows.append(("peak RSS, `overnight serve` (Ray engine)", _gib(resources["service_peak_rss_bytes"]), ""))
    trees = resources.get("tree_peak_rss_bytes_by_system") or {}
    if trees:
        rows.append(("peak RSS, whole process tree", ", ".join(f"{k} {_gib(v)}" for k, v in trees.items()), ""))
    busy = summary.get("machine_busy_cores") or {}
    if busy:
        short = {"offline": "offline", "run-batch": "run-batch", "serve": "Serve handle", "overnight": "Overnight",
                 "overnight-batch": "Overnight batch"}
        rows.append((f"busy CPU cores during the main runs (of {machine.get('cpus')})",
                     ", ".join(f"{short[k]} {v['median']:.2f}" for k, v in busy.items()), ""))
    starts = {k: v for k, v in summary.get("engine_start_s", {}).items() if v is not None}
    if starts:
        rows.append(("engine start (not in any throughput)", ", ".join(f"{k} {v:.0f} s" for k, v in starts.items()), ""))

    costs = summary.get("cost_per_1000_token_job_usd", {})
    if costs:
        section(f"Cost of a 1,000-output-token job at ${usd:g}/hour")
        labels = {"overnight": "Overnight end to end", "offline": "vLLM offline", "run-batch": "vllm run-batch",
                  "overnight-batch": "Overnight OpenAI batch", "one-at-a-time": "one-at-a-time"}
        for key, label in labels.items():
            if key in costs:
                rows.append((label, f"${costs[key]:.5f}", REFERENCE_LABEL if key == "overnight" else ""))

    lines = ["| measure | result | aim / reference |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def markdown(summary: dict[str, Any], config: dict[str, Any], machine: dict[str, Any]) -> str:
    gpus = ", ".join(machine.get("gpus") or []) or "no GPU"
    repeats = (f"engine measurements: median of {config['engine_repeats']} run(s)"
               f"{' (one run: no spread)' if config['engine_repeats'] == 1 else ''}, sweep {config['sweep_repeats']}; "
               f"queue measurements: median of {config['cheap_repeats']} runs; [min-max] is the spread")
    head = (f"### Overnight benchmark: {config['model']}, {config['n']} chat prompts, temperature 0, "
            f"max_tokens {config['max_tokens']}{' (--quick)' if config.get('quick') else ''}\n\n"
            f"{machine.get('cpus')} CPUs ({machine.get('cpu_model')}), {machine.get('memory_gib')} GiB, {gpus}; "
            f"vLLM {machine.get('vllm_version')}, Ray {machine.get('ray_version')}. {repeats}.")
    parts = [head, "", sweep_table(summary, config), "", main_table(summary, config, machine)]
    notes = []
    if summary.get("furthest_from_aim"):
        name = summary["furthest_from_aim"]
        notes.append(f"Furthest from its aim: {name} ({summary['aims'][name]:.2f} of the way).")
    for name, error in summary.get("errors", {}).items():
        notes.append(f"Phase `{name}` failed: {error}")
    if notes:
        parts += ["", *notes]
    return "\n".join(parts)


# -- plots ---------------------------------------------------------------------------------

def write_plots(summary: dict[str, Any], phases: dict[str, Any], config: dict[str, Any], stem: str) -> list[str]:
    """``<stem>-throughput.png`` and ``<stem>-latency.png``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    n = config["n"]
    title = f"{config['model']}, max_tokens {config['max_tokens']}"

    fig, ax = plt.subplots(figsize=(9, 5.5))
    main_of = {"offline": "offline", "run-batch": "run-batch", "serve": "serve"}
    for key, label in SWEEP_SYSTEMS.items():
        points = [(int(c), s) for c, s in summary["sweep_tok_s"].get(key, {}).items() if s]
        main = summary["throughput_tok_s"].get(main_of.get(key, ""))
        if main:
            points.append((n, main))
        if not points:
            continue
        points.sort(key=lambda p: p[0])
        xs = [p[0] for p in points]
        ys = [p[1]["median"] for p in points]
        err = [[p[1]["median"] - p[1]["min"] for p in points], [p[1]["max"] - p[1]["median"] for p in points]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label.replace("`", ""))
    for key, marker, label in (("overnight", "*", f"Overnight, bulk jobs API (all {n})"),
                               ("overnight-batch", "D", f"Overnight, OpenAI batch file (all {n})")):
        s = summary["throughput_tok_s"].get(key)
        if s:
            ax.errorbar([n], [s["median"]], yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                        marker=marker, markersize=12 if marker == "*" else 8, linestyle="none", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ticks = sorted({*config["levels"], n})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("requests in flight (c); rightmost: all prompts at once")
    ax.set_ylabel("output tokens / s")
    ax.set_title(f"Throughput against concurrency: {title}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = f"{stem}-throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    rows: dict[str, Any] = {}
    for phase in phases.values():
        if isinstance(phase, dict):
            rows.update({k: v for k, v in phase.items() if isinstance(v, dict)})
    timings = rows.get("overnight", {}).get("job_timings") or []
    queue_runs = rows.get("queue", {}).get("runs") or []
    pairs = (rows.get("chat_overhead") or {}).get("pairs") or []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    ax = axes[0]
    for name, key in (("queue wait", "queued_s"), ("engine", "engine_s"), ("end to end", "end_to_end_s")):
        values = sorted(t[key] for t in timings if t.get(key) is not None)
        if values:
            ax.step([0.0, *values], [0.0, *((i + 1) / len(values) for i in range(len(values)))], where="post",
                    label=name)
    ax.set_xlabel("seconds")
    ax.set_ylabel("fraction of jobs")
    ax.set_title(f"Overnight job latency, {n} jobs submitted at once (CDF)")
    ax.grid(True, alpha=0.3)
    if timings:
        ax.legend()
    ax = axes[1]
    delays = [d * 1000 for r in queue_runs for d in r["long_poll_wakeup_s"]]
    if delays:
        ax.hist(delays, bins=30)
    ax.set_xlabel("ms from job finished to client answered")
    ax.set_ylabel("samples")
    ax.set_title("Long-poll wake-up (no-op engine)")
    ax.grid(True, alpha=0.3)
    ax = axes[2]
    if pairs:
        ax.boxplot([[p["direct_s"] * 1000 for p in pairs], [p["chat_s"] * 1000 for p in pairs]])
        ax.set_xticks([1, 2], ["direct Serve handle", "chat.completions\nthrough the queue"])
    ax.set_ylabel("ms per request")
    max_tokens = (rows.get("chat_overhead") or {}).get("max_tokens")
    ax.set_title(f"Request latency, one at a time (max_tokens {max_tokens})")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = f"{stem}-latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
