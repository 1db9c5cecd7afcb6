"""Markdown tables of a results document (what `medmrcnn bench` prints and docs/benchmarks.md shows)."""

from __future__ import annotations

from typing import Any

_THROUGHPUT = ("slices_per_s", "cells_per_s", "images_per_s")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _throughput(fig: dict[str, Any]) -> str:
    for key in _THROUGHPUT:
        if key in fig:
            return f"{_fmt(fig[key], 3)} {key.removesuffix('_per_s')}/s"
    return "-"


def _agreement(a: dict[str, Any]) -> str:
    by = (f"scores F1 {_fmt(a['scores']['f1'], 3)}" if a["rule"].startswith("untrained") else
          f"F1 boxes {_fmt(a['boxes']['f1'], 3)}, masks {_fmt(a['masks']['f1'], 3)}")
    return f"{_fmt(a['agrees'])} ({by}; {a['reference_instances']} ref. inst.)"


def results_table(doc: dict[str, Any]) -> str:
    """One row per benchmark variant: median seconds, throughput, speed-up of medmrcnn over it, memory, CPU use."""
    rows = ["| benchmark | variant | median s | throughput | medmrcnn speed-up | host peak +MB | CUDA peak MB "
            "| cores used | outputs agree |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, result in doc["benchmarks"].items():
        if "error" in result or "skipped" in result:
            rows.append(f"| {name} | {'error: ' + result['error'] if 'error' in result else result['skipped']} "
                        "| | | | | | | |")
            continue
        if name == "flops":
            for model, m in result["models"].items():
                rows.append(f"| flops | {model} ({_fmt(m['gflops_per_slice'])} GFLOP/slice) | | "
                            f"{_fmt(m.get('achieved_tflops'), 4)} TFLOP/s | | | | | "
                            f"{_fmt(m.get('fraction_of_peak'), 4)} of {result['peak_dtype']} peak "
                            f"({_fmt(result['peak_tflops'][result['peak_dtype']], 3)} TFLOP/s) |")
            continue
        for variant, fig in result["variants"].items():
            ratio = result.get("ratios", {}).get(variant, {})
            agreement = result.get("agreement", {}).get(variant)
            agree = "-" if agreement is None else _agreement(agreement)
            if name == "dicom_load" and variant != "medmrcnn":
                agree = f"{_fmt(result['identical_voxels'])} (voxels)"
            rows.append(
                f"| {name} | {variant} | {_fmt(fig['median_s'], 3)} | {_throughput(fig)} | "
                f"{_fmt(ratio.get('speedup'), 2) + 'x' if ratio else ('(ours)' if variant == 'medmrcnn' else '-')} | "
                f"{_fmt(fig['host_peak_increase_mb'], 0)} | {_fmt(fig['cuda_peak_mb'], 0)} | "
                f"{_fmt(fig['cpu_utilisation'])} | {agree} |"
            )
    return "\n".join(rows)


def targets_table(doc: dict[str, Any]) -> str:
    """One row per target: value, threshold, reached (yes / no / not verifiable) and why."""
    rows = ["| target | value | reached | note |", "|---|---:|---|---|"]
    for t in doc["targets"]:
        reached = {True: "yes", False: "**no**", None: "not verifiable"}[t["reached"]]
        rows.append(f"| {t['target']} | {_fmt(t['value'], 3)} | {reached} | {t['note']} |")
    return "\n".join(rows)
