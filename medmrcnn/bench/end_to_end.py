"""Benchmark 4: end to end, a CT DICOM folder in and a DICOM-SEG on disk out, through `medmrcnn infer`'s code path.

Timed: `medmrcnn.batch.run_batch` with formats ("seg",): discovery, reading, segmentation, DICOM-SEG writing and
the batch summary. Loading the model happens once per batch of studies and is reported apart. The batch's own
per-study timings (read / segment / write) come with the figure.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medmrcnn.bench.compare import interleaved, summarise
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings


def run_infer(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: load the predictor, then segment the series folder into a DICOM-SEG."""
    from medmrcnn.batch import BatchOptions, load_predictor, run_batch
    from medmrcnn.batch.outputs import FILES

    t0 = time.perf_counter()
    predictor, settings = load_predictor(spec["weights"], device=spec["device"])
    model_load_s = time.perf_counter() - t0
    options = BatchOptions(Path(spec["output"]), ("seg",), overwrite=True, settings=settings)
    with probe.section():
        summary = run_batch([spec["series"]], predictor, options, class_names=predictor.model_cfg.labels)
    outcome = summary.outcomes[0]
    if outcome.status != "ok":
        raise RuntimeError(f"the study was not segmented: {outcome.reason}")
    seg = Path(spec["output"]) / outcome.name / FILES["seg"][0]
    return {"model_load_s": round(model_load_s, 3), "timings": outcome.timings, "seg_written": seg.is_file(),
            "instances": outcome.instances, "notes": outcome.notes}


def bench_end_to_end(runner: IsolatedRunner, settings: BenchSettings, fixtures: dict[str, Any], workdir: str
                     ) -> dict[str, Any]:
    """Seconds and slices/s of the end-to-end run (no baseline: its parts are compared in benchmarks 1 and 3)."""
    spec = {"series": fixtures["series"]["path"], "weights": fixtures["demo_weights"], "device": settings.device,
            "output": str(Path(workdir) / "end_to_end")}
    samples = interleaved(runner, {"medmrcnn": (run_infer, spec)}, settings.end_to_end_repeats)["medmrcnn"]
    n = fixtures["series"]["shape"][0]
    figures = summarise(samples, n, "slices")
    first = samples[0]
    figures.update({k: first[k] for k in ("model_load_s", "timings", "seg_written", "instances", "notes")})
    return {"series": fixtures["series"]["shape"], "weights": fixtures["demo_weights_kind"], "variants":
            {"medmrcnn": figures}}
