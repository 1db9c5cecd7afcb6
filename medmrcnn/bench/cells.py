"""Benchmark: cells per second on a 1024 x 1024 fluorescence image (256 x 256 with --quick), `medmrcnn infer`'s
predictor with the nuclei architecture of `medmrcnn.bench.nuclei` (tiny CPU recipe).

The image is a mosaic of the real DSB2018 nuclei image when the stardist wheel's data is installed (about 500
nuclei per 1024 x 1024), else a generated nuclei phantom. The weights are `--cells-weights` (e.g. the checkpoint
`python -m medmrcnn.bench.nuclei` trains) or, without them, a seeded random initialisation; cells/s counts the
cells found, images/s the throughput either way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.bench.compare import interleaved, summarise
from medmrcnn.bench.fixtures import load_npz, save_npz
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings
from medmrcnn.volume import Volume, affine_from_geometry


def _image(size: int) -> tuple[Volume, str]:
    """(the benchmark image, what it is)."""
    try:
        from medmrcnn.bench.nuclei import stardist_nuclei_2d

        image, _ = stardist_nuclei_2d()
        reps = int(np.ceil(size / image.shape[0]))
        mosaic = np.tile(image, (reps, reps))[:size, :size]
        kind = "DSB2018 nuclei mosaic"
    except Exception:  # noqa: BLE001 - the stardist wheel's data is optional for the benchmark
        from medmrcnn.synthetic import make_microscopy_image

        mosaic = make_microscopy_image(shape=(size, size), n_nuclei=size * size // 2000, seed=0).volume.array[0]
        kind = "nuclei phantom"
    return Volume(mosaic[None], affine_from_geometry((0.0005,) * 3, (0, 0, 0)), modality="SM"), kind


def _weights(path: str | None, workdir: Path) -> tuple[str, str]:
    """(checkpoint, kind): the given one, or the nuclei architecture with seeded random weights."""
    if path:
        return path, "given"
    import torch

    from medmrcnn.bench.nuclei import finetune_config
    from medmrcnn.modeling import build_model, save_checkpoint

    cfg = finetune_config(workdir, workdir, 6).model
    torch.manual_seed(0)
    return str(save_checkpoint(workdir / "cells-random.safetensors", build_model(cfg), cfg)), "random init"


def run_cells(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: load the predictor, warm up on a corner, then segment the whole image once (timed)."""
    from medmrcnn.inference import SliceWisePredictor

    volume = load_npz(spec["image"])
    predictor = SliceWisePredictor.from_checkpoint(spec["weights"], device=spec["device"])
    predictor.predict(Volume(volume.array[:, :128, :128], volume.affine, modality="SM"))
    t0 = time.perf_counter()
    with probe.section():
        result = predictor.predict(volume)
    return {"cells": result.num_instances, "seconds_wall": round(time.perf_counter() - t0, 3)}


def bench_cells(runner: IsolatedRunner, settings: BenchSettings, workdir: str) -> dict[str, Any]:
    """Seconds per image, images/s and cells/s of the predictor on one large microscopy image."""
    work = Path(workdir)
    size = 256 if settings.quick else 1024
    volume, kind = _image(size)
    weights, weights_kind = _weights(settings.cells_weights, work)
    spec = {"image": str(save_npz(volume, work / "cells.npz")), "weights": weights, "device": settings.device}
    samples = interleaved(runner, {"medmrcnn": (run_cells, spec)}, settings.repeats)["medmrcnn"]
    figures = summarise(samples, 1, "images")
    cells = int(np.median([s["cells"] for s in samples]))
    figures.update({"cells": cells, "cells_per_s": round(cells / figures["median_s"], 2) if figures["median_s"]
                    else None})
    return {"image": [size, size], "image_kind": kind, "weights": weights_kind, "variants": {"medmrcnn": figures}}
