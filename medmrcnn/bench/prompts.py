"""Benchmark: prompted segmentation latency (`medmrcnn.inference.prompts`) with the demo model.

Variants, each in its own process (model loaded and its kernels warmed on another image first):
    first_prompt        a click on a new 512 x 512 image: normalisation, backbone, RPN and heads
    next_prompt         a second click on the same image: the heads only (features from the cache)
    propagation_cold    a click on an organ spanning >= 40 slices, followed through all of them (backbone per slice)
    propagation_warm    the same prompt again: the heads only on every slice
The ratio first / next is the saving of the feature cache (target: >= 10x, next < 0.3 s on two CPU cores).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from medmrcnn.bench.compare import interleaved, summarise
from medmrcnn.bench.measure import IsolatedRunner, Probe
from medmrcnn.bench.settings import BenchSettings
from medmrcnn.volume import Volume

VARIANTS = ("first_prompt", "next_prompt", "propagation_cold", "propagation_warm")
PROPAGATION_SLICES = 40


def _phantom(matrix: int, slices: int, seed: int) -> tuple[Volume, np.ndarray]:
    """A CT phantom of `slices` x matrix x matrix (0.7 mm pixels at 512, 2.5 mm slices) and its liver mask."""
    from medmrcnn.synthetic import make_ct_phantom

    ph = make_ct_phantom(shape=(slices, matrix, matrix), spacing=(2.5, 0.7 * 512 / matrix, 0.7 * 512 / matrix),
                         n_tumours=2, tumour_diameter_mm=(20.0, 30.0), seed=seed)
    liver = next(i for i, c in ph.gt_classes.items() if ph.labels.name_of(c) == "liver")
    return ph.volume, ph.gt_instances == liver


def _inside(mask: np.ndarray, k: int) -> tuple[int, int, int]:
    """The k-th voxel (in a fixed order) of the mask's central slice, eroded so the click is well inside."""
    z = int(np.flatnonzero(mask.any(axis=(1, 2))).mean())
    core = ndimage.binary_erosion(mask[z], iterations=8)
    ys, xs = np.nonzero(core if core.any() else mask[z])
    i = (len(ys) // 3) * (k + 1) % len(ys)
    return z, int(ys[i]), int(xs[i])


def run_prompt(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: one variant of VARIANTS (see module docstring)."""
    from medmrcnn.inference.prompts import Prompt, PromptSegmenter
    from medmrcnn.modeling import load_model

    model, cfg = load_model(spec["weights"], device=spec["device"])
    segmenter = PromptSegmenter(model, cfg)
    warm_volume, warm_liver = _phantom(spec["matrix"], 1 if spec["variant"] in VARIANTS[:2] else 3, seed=1)
    segmenter.segment(warm_volume, Prompt(foreground=(_inside(warm_liver, 0),)), "warm-up")
    if spec["variant"] in VARIANTS[:2]:  # one 512 x 512 slice
        volume, liver = _phantom(spec["matrix"], 8, seed=2)
        z = _inside(liver, 0)[0]
        volume, liver = Volume(volume.array[z:z + 1].copy(), volume.affine, modality="CT"), liver[z:z + 1]
    else:
        volume, liver = _phantom(spec["matrix"], spec["slices"], seed=2)
    first = Prompt(foreground=(_inside(liver, 0),))
    second = Prompt(foreground=(_inside(liver, 1),)) if spec["variant"] == "next_prompt" else first
    if spec["variant"] in ("next_prompt", "propagation_warm"):
        segmenter.segment(volume, first, "image")
    with probe.section():
        result = segmenter.segment(volume, second, "image")
    covered = len(result.slice_scores)
    return {"slices_covered": covered, "liver_slices": int(liver.any(axis=(1, 2)).sum()),
            "dice": round(float(2 * (result.mask & liver).sum() / (result.mask.sum() + liver.sum())), 3),
            "cache": result.metadata["cache"]}


def bench_prompts(runner: IsolatedRunner, settings: BenchSettings, weights: str) -> dict[str, Any]:
    """First vs next prompt on one slice, and propagation through >= 40 slices, cold and warm."""
    matrix = 256 if settings.quick and not settings.cuda else settings.matrix
    slices = 8 if settings.quick and not settings.cuda else 64  # the liver spans ~2/3 of the phantom's slices
    base = {"weights": weights, "device": settings.device, "matrix": matrix, "slices": slices}
    samples = interleaved(runner, {v: (run_prompt, {**base, "variant": v}) for v in VARIANTS}, settings.repeats)
    out: dict[str, Any] = {"matrix": [matrix, matrix], "volume_slices": slices, "variants": {}}
    for v in VARIANTS:
        s = samples[v]
        covered = s[0]["slices_covered"]
        fig = summarise(s, covered, "slices")
        fig.update(slices_covered=covered, liver_slices=s[0]["liver_slices"], dice=s[0]["dice"],
                   cache=s[0]["cache"])
        out["variants"][v] = fig
    first, nxt = out["variants"]["first_prompt"]["median_s"], out["variants"]["next_prompt"]["median_s"]
    out["next_vs_first_speedup"] = round(first / nxt, 1)
    cold, warm = out["variants"]["propagation_cold"], out["variants"]["propagation_warm"]
    out["propagation_per_slice_s"] = {"cold": round(cold["median_s"] / cold["slices_covered"], 4),
                                      "warm": round(warm["median_s"] / warm["slices_covered"], 4)}
    return out
