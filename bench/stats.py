"""Small statistics for the benchmark report: no numpy, no I/O.

    percentile([1, 2, 3, 4], 0.5)      # 2.5 (linear interpolation, numpy's default)
    summarize([3.0, 1.0, 2.0])         # {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3, "values": [...]}
    latency([...seconds...])           # {"p50", "p95", "p99", "mean", "max", "n"}
    ratio(summarize(a), summarize(b))  # median of a over median of b, with the spread of paired ratios
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, interpolating linearly between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread (min, max) of repeated measurements, keeping the raw values."""
    if not values:
        raise ValueError("summarize needs at least one value")
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": list(values)}


def latency(values: Sequence[float]) -> dict[str, Any]:
    """p50 / p95 / p99 / mean / max of a latency sample."""
    if not values:
        raise ValueError("latency needs at least one value")
    return {"p50": percentile(values, 0.50), "p95": percentile(values, 0.95),
            "p99": percentile(values, 0.99), "mean": statistics.fmean(values),
            "max": max(values), "n": len(values)}


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, Any]:
    """``numerator / denominator`` of two summaries: the ratio of medians, and as spread the
    range of per-repeat ratios (repeat i over repeat i) when both have the same number."""
    value = numerator["median"] / denominator["median"]
    tops, bottoms = numerator["values"], denominator["values"]
    paired = [a / b for a, b in zip(tops, bottoms)] if len(tops) == len(bottoms) else [value]
    return {"median": value, "min": min(paired), "max": max(paired), "n": len(paired), "values": paired}


def fmt_summary(summary: dict[str, Any] | None, digits: int = 1, unit: str = "") -> str:
    """``"190.2 [185.0-195.1]"`` for a spread, ``"190.2"`` for one run, ``"n/a"`` for none."""
    if summary is None:
        return "n/a"
    text = f"{summary['median']:,.{digits}f}{unit}"
    if summary["n"] > 1:
        text += f" [{summary['min']:,.{digits}f}-{summary['max']:,.{digits}f}]"
    return text
