"""`run_benchmarks`: fixtures -> each benchmark side by side with its baseline -> targets -> one JSON document.

    prepare fixtures -> inference (R50-FPN, demo) -> training -> DICOM load -> DICOM-SEG export -> end to end
    -> portable models (TorchScript, ONNX Runtime) -> FLOPs vs peak -> cells per second on a large microscopy
    image -> mask refinement cost -> prompted
    segmentation (first vs next prompt, propagation) -> targets
A benchmark that fails is recorded as {"error": ...} and the others still run.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medmrcnn.bench.cells import bench_cells
from medmrcnn.bench.compare import load_average
from medmrcnn.bench.dicom import bench_dicom_load, bench_seg_export
from medmrcnn.bench.end_to_end import bench_end_to_end
from medmrcnn.bench.environment import describe_environment
from medmrcnn.bench.fixtures import prepare
from medmrcnn.bench.flops import bench_flops
from medmrcnn.bench.inference import bench_inference
from medmrcnn.bench.measure import IsolatedRunner
from medmrcnn.bench.portable import bench_portable
from medmrcnn.bench.refinement import bench_mask_refinement
from medmrcnn.bench.prompts import bench_prompts
from medmrcnn.bench.settings import BenchSettings
from medmrcnn.bench.targets import evaluate_targets
from medmrcnn.bench.training import bench_training
from medmrcnn.fileio import atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "medmrcnn-bench"
FORMAT_VERSION = 1


def run_benchmarks(settings: BenchSettings, workdir: str | Path | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmarks `settings.only` names and return the results document (see docs/benchmarks.md).

    Args:
        settings: sizes, repeats, device and threads.
        workdir: where the temporary fixtures go (a fresh folder inside it, deleted afterwards; default: the
            system temp folder). A full CPU run needs about 1 GB.
        progress: called with a short line as each benchmark starts.
    """
    say = progress or (lambda line: None)
    env = describe_environment(settings.device)
    runner = IsolatedRunner(settings.device, settings.threads, settings.timeout_s)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="medmrcnn-bench-", dir=workdir) as work:
        say("preparing phantoms, DICOM series and weights")
        fixtures = runner.run(prepare, {
            "workdir": work, "series_slices": settings.series_slices, "matrix": settings.matrix,
            "r50_slices": settings.r50_slices, "demo_slices": settings.demo_slices,
            "demo_weights": settings.demo_weights,
        })
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "inference_r50": lambda: bench_inference(runner, settings, fixtures, "r50"),
            "inference_demo": lambda: bench_inference(runner, settings, fixtures, "demo"),
            "training": lambda: bench_training(runner, settings, work),
            "dicom_load": lambda: bench_dicom_load(runner, settings, fixtures),
            "seg_export": lambda: bench_seg_export(runner, settings, fixtures, work),
            "end_to_end": lambda: bench_end_to_end(runner, settings, fixtures, work),
            "portable": lambda: bench_portable(runner, settings, fixtures, work),
            "flops": lambda: bench_flops(runner, settings, fixtures, results),
            "cells": lambda: bench_cells(runner, settings, work),
            "mask_refinement": lambda: bench_mask_refinement(runner, settings, fixtures, work),
            "prompts": lambda: bench_prompts(runner, settings, fixtures["demo_weights"]),
        }
        for name, step in steps.items():
            if name not in settings.only:
                continue
            if name == "flops" and settings.quick and not settings.cuda:
                results[name] = {"skipped": "CPU --quick run: FLOPs against the peak are measured in full runs"}
                continue
            say(f"{name} ...")
            start = time.perf_counter()
            try:
                results[name] = step()
            except Exception as e:  # noqa: BLE001 - one failed benchmark must not lose the others' figures
                log.debug("benchmark %s failed", name, exc_info=True)
                results[name] = {"error": f"{type(e).__name__}: {e}"}
            results[name]["benchmark_wall_s"] = round(time.perf_counter() - start, 1)
    env["load_average_end"] = load_average()
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings.to_dict(), "environment": env,
        "fixtures": {
            "series": {k: v for k, v in fixtures["series"].items() if k != "path"},  # the folder is gone
            "r50_weights": fixtures["r50_weights_kind"],
            "demo_weights": fixtures["demo_weights_kind"], "prepare_s": round(fixtures["seconds"], 2),
        },
        "benchmarks": results, "targets": evaluate_targets(results, settings),
    }


def failed_benchmarks(doc: dict[str, Any]) -> list[str]:
    """Names of the benchmarks that recorded an error."""
    return [name for name, r in doc["benchmarks"].items() if "error" in r]


def write_results(doc: dict[str, Any], path: str | Path) -> Path:
    """Write the results document as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(doc, indent=2, default=str) + "\n")
    return Path(path)
