"""Side-by-side runs on a shared machine: interleaved repeats, medians, paired ratios, machine load.

Each repeat runs every variant once, alternating the order (A B C, C B A, ...), so a load change on the machine
hits baseline and medmrcnn alike; a speed-up is the median over repeats of baseline time / our time in that repeat.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Sequence
from typing import Any

from medmrcnn.bench.measure import IsolatedRunner, Task

log = logging.getLogger(__name__)


def load_average() -> float | None:
    """One-minute load average of the machine (None where the OS does not report it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def interleaved(runner: IsolatedRunner, variants: dict[str, tuple[Task, dict[str, Any]]], repeats: int
                ) -> dict[str, list[dict[str, Any]]]:
    """{variant: [one sample per repeat]}: every variant once per repeat, in alternating order."""
    names = list(variants)
    samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            task, spec = variants[name]
            load = load_average()
            sample = runner.run(task, spec)
            sample["load_average"] = load
            log.info("%s repeat %d: %.2f s", name, r + 1, sample["seconds"])
            samples[name].append(sample)
    return samples


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summarise(samples: list[dict[str, Any]], work: float, unit: str, seconds_key: str = "seconds") -> dict[str, Any]:
    """Medians over repeats: seconds, throughput (`work` units per second), CPU use and memory peaks.

    `cpu_utilisation` = CPU seconds / wall seconds of the timed work: how many cores it actually got.
    """
    seconds = [s[seconds_key] for s in samples]
    med = statistics.median(seconds)
    cpu = _median([s["cpu_seconds"] / s["seconds"] if s.get("cpu_seconds") is not None else None for s in samples])
    out = {
        "seconds": [round(s, 4) for s in seconds],
        "median_s": round(med, 4),
        "cpu_median_s": _rounded(_median([s.get("cpu_seconds") for s in samples])),
        f"{unit}_per_s": round(work / med, 3),
        "cpu_utilisation": None if cpu is None else round(cpu, 2),
        "host_peak_mb": _rounded(_median([s["host_peak_mb"] for s in samples]), 1),
        "host_peak_increase_mb": _rounded(_median([s["host_peak_increase_mb"] for s in samples]), 1),
        "cuda_peak_mb": _rounded(_median([s.get("cuda_peak_mb") for s in samples]), 1),
        "load_average": _median([s.get("load_average") for s in samples]),
    }
    gpu = _median([s.get("gpu_seconds") for s in samples])
    if gpu is not None:
        out["gpu_median_s"] = round(gpu, 4)
    return out


def speedup(baseline: list[dict[str, Any]], ours: list[dict[str, Any]], seconds_key: str = "seconds") -> float:
    """Median over repeats of baseline seconds / our seconds in the same repeat (> 1: we are faster).

    With seconds_key="cpu_seconds": the same for the CPU time the processes consumed, which a busy machine
    disturbs less than wall time (it still counts the cost of the work, not the waiting for a core).
    """
    return round(statistics.median(b[seconds_key] / o[seconds_key] for b, o in zip(baseline, ours, strict=True)), 3)


def median_ratio(baseline: list[dict[str, Any]], ours: list[dict[str, Any]], seconds_key: str = "seconds") -> float:
    """Baseline median seconds / our median seconds: where it differs much from `speedup`, the load changed a lot
    between repeats and neither figure is firm."""
    return round(statistics.median(b[seconds_key] for b in baseline) / statistics.median(o[seconds_key] for o in ours),
                 3)


def memory_ratio(baseline: dict[str, Any], ours: dict[str, Any], key: str) -> float | None:
    """Our peak / the baseline's peak for a summarised memory figure (< 1: we need less)."""
    if not baseline.get(key) or ours.get(key) is None:
        return None
    return round(ours[key] / baseline[key], 3)
