"""`BenchSettings`: how big and how often each benchmark runs (full or --quick, CPU or CUDA)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

BENCHMARKS = ("inference_r50", "inference_demo", "training", "dicom_load", "seg_export", "end_to_end", "portable",
              "flops", "cells", "mask_refinement", "prompts")


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BenchSettings:
    """Sizes and repeats of one benchmark run.

    Attributes:
        device: "cpu" or "cuda[:N]".
        quick: the small run (< 3 min on two CPU cores) that `tests/bench` exercises.
        threads: torch CPU threads of every measured process (the same for baselines and medmrcnn).
        repeats: interleaved repeats of every timed pair (figures are medians over them).
        warmup: run each pipeline once on a slice before its timed run (first-call allocations, kernel choice).
        matrix: in-plane size of every phantom slice (x = y), in pixels.
        r50_slices, demo_slices: slices of the inference volumes for the ResNet-50-FPN and the demo model.
        series_slices: slices of the DICOM series used for loading, DICOM-SEG export and end to end.
        train_steps: optimiser steps per training measurement (the first is warm-up, the rest are timed).
        train_batch: slices per training step.
        train_volumes, train_volume_slices: generated training phantoms and the slices of each.
        end_to_end_repeats: the end-to-end run is long; it is repeated this often.
        timeout_s: a single measurement running longer than this fails.
        only: the benchmarks to run (default: all of BENCHMARKS).
        demo_weights: checkpoint measured as the small model (None: the bundled demo weights).
        cells_weights: nuclei checkpoint of the cells benchmark (None: its architecture, randomly initialised).
    """

    device: str = "cpu"
    quick: bool = False
    threads: int = field(default_factory=available_cpus)
    repeats: int = 3
    warmup: bool = True
    matrix: int = 512
    r50_slices: int = 4
    demo_slices: int = 16
    series_slices: int = 300
    train_steps: int = 6
    train_batch: int = 4
    train_volumes: int = 2
    train_volume_slices: int = 10
    end_to_end_repeats: int = 2
    timeout_s: float = 3600.0
    only: tuple[str, ...] = BENCHMARKS
    demo_weights: str | None = None
    cells_weights: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.only) - set(BENCHMARKS)
        if unknown:
            raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
        if self.repeats < 1 or self.train_steps < 2 or self.threads < 1:
            raise ValueError("repeats and threads must be >= 1 and train_steps >= 2 (one warm-up step)")

    @property
    def cuda(self) -> bool:
        """True when measuring on a CUDA device."""
        return self.device.startswith("cuda")

    @classmethod
    def for_run(cls, device: str = "cpu", quick: bool = False, threads: int | None = None,
                only: tuple[str, ...] | None = None, demo_weights: str | None = None,
                cells_weights: str | None = None) -> BenchSettings:
        """The standard sizes for a device: full or quick, CPU or CUDA (a GPU affords far bigger volumes)."""
        kw: dict[str, Any] = {"device": device, "quick": quick, "only": tuple(only or BENCHMARKS),
                              "demo_weights": demo_weights, "cells_weights": cells_weights}
        if threads is not None:
            kw["threads"] = threads
        cuda = device.startswith("cuda")
        if quick:
            kw.update(repeats=1, warmup=False, r50_slices=4 if cuda else 1, demo_slices=8 if cuda else 3,
                      series_slices=16, train_steps=2, train_batch=1, train_volumes=1, train_volume_slices=4,
                      end_to_end_repeats=1, timeout_s=600.0)
        elif cuda:
            kw.update(repeats=5, r50_slices=64, demo_slices=128, train_steps=30, train_batch=8, train_volumes=4,
                      train_volume_slices=24, end_to_end_repeats=3)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        d = asdict(self)
        d["only"] = list(self.only)
        return d
