"""The data and weights every benchmark shares, generated once per run into a work folder (never downloaded).

    one abdominal CT phantom (series_slices x matrix x matrix) -> a DICOM series, its 5-structure label map,
    and its central slices as the inference volumes; an R50-FPN checkpoint with seeded random weights (no trained
    R50 weights exist offline); the demo checkpoint (the bundled trained weights, or the demo architecture with
    seeded random weights where they are not installed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.bench.measure import BenchmarkError, Probe
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)

PHANTOM_SEED = 90210
# Pixel size of a typical 512 abdominal CT (36 cm field of view); slices ~300 mm of body whatever their number.
PIXEL_MM = 0.7
BODY_MM = 300.0
# Liver, two kidneys and two tumours: the five segments of the DICOM-SEG benchmark.
SEG_LABELS = ("liver", "kidney_right", "kidney_left", "tumour", "lesion")
CT_CLASSES = ("liver", "kidney", "tumour")
R50_SEED = 0


def save_npz(volume: Volume, path: Path) -> Path:
    """Store a volume's voxels, affine and modality (what the predictor needs) in one .npz file."""
    np.savez(path, array=volume.array, affine=volume.affine, modality=np.array(volume.modality))
    return path


def load_npz(path: str | Path) -> Volume:
    """The volume `save_npz` stored."""
    with np.load(path) as f:
        return Volume(f["array"], f["affine"], modality=str(f["modality"]))


def r50_config() -> ModelConfig:
    """ResNet-50-FPN Mask R-CNN at native resolution with the phantom's classes and the demo's CT window."""
    return ModelConfig(labels=CT_CLASSES, backbone="resnet50", intensity="ct:soft_tissue")


def demo_config_file() -> Path:
    """configs/demo.yaml of a source checkout (the demo model's architecture and training recipe)."""
    return Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def demo_weights(override: str | None = None) -> tuple[Path | None, ModelConfig]:
    """(the demo checkpoint, or None when not installed; the demo model's config). `override` replaces the
    bundled checkpoint (e.g. your own fine-tuned model)."""
    from medmrcnn.batch.model import DEMO_WEIGHTS
    from medmrcnn.modeling import read_checkpoint

    if override is not None:
        return Path(override), read_checkpoint(override).config
    if DEMO_WEIGHTS.is_file():
        return DEMO_WEIGHTS, read_checkpoint(DEMO_WEIGHTS).config
    if demo_config_file().is_file():
        from medmrcnn.training import load_train_config

        return None, load_train_config(demo_config_file()).model
    raise BenchmarkError(f"{DEMO_WEIGHTS}: demo weights not installed and no configs/demo.yaml to build the demo model")


def _random_checkpoint(cfg: ModelConfig, seed: int, path: Path) -> Path:
    import torch

    from medmrcnn.modeling import build_model, save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(cfg).eval(), cfg, extra={"weights": f"random, seed {seed}"})


def _central(volume: Volume, n: int) -> Volume:
    """The n central slices of a volume (geometry shifted so each slice keeps its position)."""
    z0 = max(0, (volume.shape[0] - n) // 2)
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ np.array([0.0, 0.0, z0]) + volume.affine[:3, 3]
    return Volume(volume.array[z0:z0 + n].copy(), affine, modality=volume.modality)


def _five_structure_phantom(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> tuple[Any, list[int]]:
    """A phantom in which liver, both kidneys and both tumours are visible (small tumours can fall between thick
    slices, so a few seeds are tried in a fixed order); returns it and its instance ids."""
    from medmrcnn.synthetic import make_ct_phantom

    for seed in range(PHANTOM_SEED, PHANTOM_SEED + 20):
        ph = make_ct_phantom(shape=shape, spacing=spacing, n_tumours=2, tumour_diameter_mm=(20.0, 40.0), seed=seed)
        present = sorted(int(i) for i in np.unique(ph.gt_instances) if i)
        if len(present) == len(SEG_LABELS):
            return ph, present
    raise BenchmarkError(f"no phantom of shape {shape} shows {len(SEG_LABELS)} structures")


def _warm_page_cache(folder: Path) -> None:
    """Read every file once, so that no loader pays for the first, cold read from disk."""
    for p in sorted(folder.iterdir()):
        p.read_bytes()


def prepare(spec: dict[str, Any], probe: Probe) -> dict[str, Any]:
    """Child task: write the shared fixtures into spec["workdir"] and return their paths and descriptions."""
    from medmrcnn.synthetic.dicom_series import write_dicom_series

    work = Path(spec["workdir"])
    n, m = spec["series_slices"], spec["matrix"]
    out: dict[str, Any] = {}
    with probe.section():
        spacing = (max(1.0, BODY_MM / n), PIXEL_MM * 512 / m, PIXEL_MM * 512 / m)
        ph, present = _five_structure_phantom((n, m, m), spacing)
        series = work / "ct_series"
        write_dicom_series(ph.volume, series, series_description="medmrcnn bench phantom")
        _warm_page_cache(series)
        labelmap = work / "seg_labelmap.npy"
        lut = np.zeros(int(ph.gt_instances.max()) + 1, dtype=np.uint8)
        lut[present] = np.arange(1, len(present) + 1)
        np.save(labelmap, lut[ph.gt_instances])
        out["series"] = {"path": str(series), "shape": list(ph.volume.shape), "spacing_mm": list(spacing)}
        out["seg_labelmap"] = str(labelmap)
        for name, slices in (("r50", spec["r50_slices"]), ("demo", spec["demo_slices"])):
            vol = _central(ph.volume, slices)
            out[f"{name}_volume"] = str(save_npz(vol, work / f"{name}_volume.npz"))
        out["r50_weights"] = str(_random_checkpoint(r50_config(), R50_SEED, work / "r50_random.safetensors"))
        out["r50_weights_kind"], out["r50_trained"] = f"random (seed {R50_SEED})", False
        path, demo_cfg = demo_weights(spec.get("demo_weights"))
        if path is None:
            log.warning("demo weights not installed: the demo model is measured with random weights")
            path = _random_checkpoint(demo_cfg, R50_SEED, work / "demo_random.safetensors")
            out["demo_weights_kind"] = f"random (seed {R50_SEED}); the trained demo weights are not installed"
            out["demo_trained"] = False
        else:
            from medmrcnn.batch.model import file_sha256

            out["demo_weights_kind"] = f"trained ({path.name}, sha256 {file_sha256(path)[:12]})"
            out["demo_trained"] = True
        out["demo_weights"] = str(path)
    return out
