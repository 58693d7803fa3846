"""The benchmark's statistics and report helpers, on made-up numbers (fast, no engine)."""

from __future__ import annotations

import json

import pytest

from bench.engine_throughput import batch_file_lines, batch_output_tokens, run_batch_argv, sweep_requests
from bench.report import cost_per_job, markdown, summarize_run
from bench.stats import fmt_summary, latency, percentile, ratio, summarize


def test_percentile_interpolates_between_ranks():
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile([1, 2, 3, 4], 0.0) == 1
    assert percentile([1, 2, 3, 4], 1.0) == 4
    assert percentile(list(range(101)), 0.99) == pytest.approx(99.0)
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1], 1.5)


def test_summaries_keep_median_spread_and_raw_values():
    s = summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"], s["values"]) == (2.0, 1.0, 3.0, 3, [3.0, 1.0, 2.0])
    lat = latency([0.1] * 98 + [1.0, 2.0])
    assert lat["p50"] == pytest.approx(0.1) and lat["max"] == 2.0 and lat["n"] == 100
    assert lat["p99"] > lat["p95"] >= lat["p50"]


def test_ratio_pairs_repeats_and_falls_back_to_medians():
    r = ratio(summarize([180.0, 200.0]), summarize([200.0, 200.0]))
    assert r["median"] == pytest.approx(0.95)
    assert (r["min"], r["max"]) == (pytest.approx(0.9), pytest.approx(1.0))
    unpaired = ratio(summarize([100.0]), summarize([50.0, 50.0, 50.0]))
    assert unpaired["median"] == unpaired["min"] == unpaired["max"] == 2.0


def test_fmt_summary_shows_spread_only_for_repeats():
    assert fmt_summary(summarize([190.24])) == "190.2"
    assert fmt_summary(summarize([1.0, 2.0, 3.0]), 2, "x") == "2.00x [1.00-3.00]"
    assert fmt_summary(None) == "n/a"


def test_cost_per_job():
    # 200 tok/s: 1,000 tokens take 5 s; 5 s of a $0.09/h machine
    assert cost_per_job(200.0, 0.09) == pytest.approx(0.09 * 5 / 3600)


def test_sweep_requests_is_one_wave_at_least():
    config = {"n": 64, "sweep_waves": 1, "sweep_min_requests": 2}
    assert [sweep_requests(config, c) for c in (1, 8, 32, 128)] == [2, 8, 32, 64]


def test_run_batch_argv_maps_engine_kwargs_to_flags():
    argv = run_batch_argv({"model": "/m", "dtype": "float16", "enforce_eager": True, "trust_remote_code": False,
                           "max_num_seqs": 64}, "in.jsonl", "out.jsonl")
    assert argv == ["-i", "in.jsonl", "-o", "out.jsonl", "--model", "/m", "--dtype", "float16",
                    "--enforce-eager", "--max-num-seqs", "64"]


def test_batch_file_and_output_tokens():
    lines = batch_file_lines([[{"role": "user", "content": "hi"}]] * 2, "m", 16)
    rows = [json.loads(line) for line in lines]
    assert [r["custom_id"] for r in rows] == ["req-0", "req-1"]
    assert rows[0]["url"] == "/v1/chat/completions" and rows[0]["body"]["max_tokens"] == 16
    ok = {"custom_id": "a", "response": {"status_code": 200, "body": {"usage": {"completion_tokens": 5}}}, "error": None}
    bad = {"custom_id": "b", "response": None, "error": {"message": "boom"}}
    assert batch_output_tokens([json.dumps(ok), json.dumps(ok), json.dumps(bad), ""]) == (10, 1)


def _run(tok_s: float, requests: int = 64) -> dict:
    return {"requests": requests, "output_tokens": int(tok_s * 10), "wall_s": 10.0, "tok_s": tok_s}


CONFIG = {"model": "m", "n": 64, "max_tokens": 128, "levels": [1, 8], "engine_repeats": 1, "sweep_repeats": 1,
          "cheap_repeats": 2, "usd_per_hour": 0.09, "quick": True}
MACHINE = {"cpus": 2, "cpu_model": "x", "memory_gib": 24, "gpus": [], "vllm_version": "0", "ray_version": "0"}


def _phases() -> dict:
    timing = {"queued_s": 0.01, "engine_s": 9.0, "end_to_end_s": 9.1}
    return {
        "queue": {"queue": {"runs": [
            {"claim_to_complete_jobs_per_s": v, "submit_bulk_jobs_per_s": v, "submit_sequential_jobs_per_s": 300.0,
             "submit_16_concurrent_jobs_per_s": 200.0, "long_poll_wakeup_s": [0.002, 0.003, 0.004],
             "service_cpu": {"jobs": 1000, "cpu_s": 1.5}, "service_peak_rss_bytes": 100 << 20}
            for v in (2000.0, 3000.0)]}},
        "offline": {"offline": {"main": [_run(200.0)], "sweep": {"1": [_run(16.0, 2)], "8": [_run(80.0, 8)]},
                                "engine_start_s": 17.0}},
        "run-batch": {"run-batch": {"main": [_run(190.0)], "sweep": {}, "engine_start_s": 18.0}},
        "ray": {"serve": {"main": [_run(195.0)], "sweep": {"1": [_run(15.0, 2)]}},
                "overnight": {"main": [_run(180.0)], "job_timings": [timing] * 4, "service_cpu": [{"jobs": 64, "cpu_s": 3.2}]},
                "overnight-batch": {"main": [_run(180.0)]},
                "overnight-chat": {"sweep": {"1": [_run(15.0, 2)], "8": [_run(70.0, 8)]}},
                "chat_overhead": {"max_tokens": 1, "pairs": [{"direct_s": 0.100, "chat_s": 0.112}] * 3},
                "engine_start_s": 32.0, "service_peak_rss_bytes": 1 << 28, "tree_peak_rss_bytes": 5 << 30},
    }


def test_summarize_run_ratios_aims_and_table():
    summary = summarize_run(_phases(), CONFIG, MACHINE)
    ratios = summary["ratios"]
    assert ratios["pipeline/offline"]["value"]["median"] == pytest.approx(0.90)
    assert ratios["pipeline/one-at-a-time"]["value"]["median"] == pytest.approx(12.0)
    assert ratios["OpenAI batch via Overnight/run-batch"]["value"]["median"] == pytest.approx(180 / 190)
    assert summary["chat_overhead"]["p50_overhead_s"] == pytest.approx(0.012)
    assert summary["queue"]["claim_to_complete_jobs_per_s"]["median"] == 2500.0
    assert summary["queue"]["cpu_s_per_1000_jobs"]["median"] == pytest.approx(1.5)
    assert summary["resources"]["engine_run_cpu_s_per_1000_jobs"]["median"] == pytest.approx(50.0)
    assert summary["engine_start_s"] == {"offline": 17.0, "run-batch": 18.0, "ray": 32.0}
    # factors: offline 0.90/0.90 = 1.0, one-at-a-time 12/6 = 2, batch 0.947/0.9 = 1.05, overhead 30/12 = 2.5
    assert summary["aims"]["pipeline/offline"] == pytest.approx(1.0)
    assert summary["furthest_from_aim"] == "pipeline/offline"
    text = markdown(summary, CONFIG, MACHINE)
    assert "| pipeline/offline | 0.90x | >= 0.9 (met) |" in text
    assert "| c=1 | c=8 | all 64 at once |" in text


def test_a_failed_phase_is_reported_not_raised():
    phases = _phases()
    phases["run-batch"] = {"error": "bench.engine_throughput:phase_run_batch exited 1", "phase_wall_s": 3.0}
    summary = summarize_run(phases, CONFIG, MACHINE)
    assert summary["ratios"]["OpenAI batch via Overnight/run-batch"]["value"] is None
    assert "Phase `run-batch` failed" in markdown(summary, CONFIG, MACHINE)


def test_plots_are_written(tmp_path):
    from bench.report import write_plots

    summary = summarize_run(_phases(), CONFIG, MACHINE)
    paths = write_plots(summary, _phases(), CONFIG, str(tmp_path / "b"))
    assert [p.rsplit("-", 1)[1] for p in paths] == ["throughput.png", "latency.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 10_000 for p in paths)
