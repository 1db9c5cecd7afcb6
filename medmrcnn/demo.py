"""The one-command demo: a synthetic CT study as a DICOM series, segmented with the bundled demo weights through the
batch code path of `medmrcnn infer`, and what was found compared with the phantom's exact truth.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.batch import BatchEvents, BatchOptions, BatchSummary, load_predictor, run_batch
from medmrcnn.batch.outputs import FILES
from medmrcnn.errors import ExportError, GeometryMismatchError, VolumeLoadError
from medmrcnn.fileio import atomic_write_text
from medmrcnn.io import save_volume
from medmrcnn.synthetic import Phantom, make_ct_phantom

log = logging.getLogger(__name__)

# A phantom no training run has seen (configs/demo.yaml trains on seeds 1000-1041).
DEMO_SEED = 424242
DEMO_SHAPE = (64, 512, 512)
DEMO_SPACING = (2.5, 0.7, 0.7)
DEMO_FORMATS = ("nifti", "seg", "json", "png")
SYNTHETIC_MANUFACTURER = "medmrcnn synthetic"  # what medmrcnn.synthetic.dicom_series writes
INPUT_DIR, TRUTH, RESULTS_DIR, REPORT = "ct_phantom_dicom", "ct_phantom_truth.nii.gz", "results", "demo_report.json"


@dataclass
class Finding:
    """One true structure of the phantom and how well it was found.

    Attributes:
        structure: "liver", "kidney 1", "tumour 2", ... (truth instances numbered per class).
        class_name: its class.
        truth_ml: its true volume in mL.
        found_ml: volume of the best-matching predicted instance of the same class (0 when none).
        dice: Dice between the true instance and that predicted instance (0 when none).
    """

    structure: str
    class_name: str
    truth_ml: float
    found_ml: float
    dice: float


@dataclass
class DemoResult:
    """Where the demo wrote what, and what it found.

    Attributes:
        dicom_dir: the synthetic CT series (input).
        truth: the phantom's true class label map (NIfTI on the series' grid), to compare in a viewer.
        study_dir: the study's output folder (DICOM-SEG, NIfTI, JSON report, overlay PNG).
        outputs: the files written into `study_dir`.
        findings: one per true structure.
        instances: predicted / true instance count per class.
        summary: the batch summary (one study).
        seconds: wall time of the whole demo.
        report: the demo's own JSON report (this comparison).
    """

    dicom_dir: Path
    truth: Path
    study_dir: Path
    outputs: list[Path]
    findings: list[Finding]
    instances: dict[str, tuple[int, int]]
    summary: BatchSummary
    seconds: float
    report: Path


def demo_phantom() -> Phantom:
    """The demo's abdominal CT phantom: 64 slices of 512 x 512, 2.5 mm slices, 0.7 mm pixels, fixed seed."""
    return make_ct_phantom(shape=DEMO_SHAPE, spacing=DEMO_SPACING, seed=DEMO_SEED)


def _made_by_the_demo(folder: Path) -> bool:
    """True when `folder` holds only DICOM files from medmrcnn's synthetic series writer (safe to replace)."""
    import pydicom

    entries = list(folder.iterdir())
    try:
        return bool(entries) and all(
            p.is_file() and pydicom.dcmread(p, stop_before_pixels=True, specific_tags=["Manufacturer"]).get(
                "Manufacturer") == SYNTHETIC_MANUFACTURER for p in entries)
    except (OSError, pydicom.errors.InvalidDicomError):
        return False


def _write_input(phantom: Phantom, folder: Path) -> None:
    """Write the phantom as a DICOM series into `folder` in one rename; reuse an identical one from an earlier run,
    replace one an older medmrcnn wrote, never touch anything else."""
    from medmrcnn.io import load_volume
    from medmrcnn.synthetic.dicom_series import write_dicom_series

    if folder.exists():
        try:
            if np.array_equal(load_volume(folder).array, phantom.volume.array):
                return
        except VolumeLoadError:
            pass
        if not _made_by_the_demo(folder):
            raise ExportError(f"{folder}: exists and is not the demo's phantom series; choose another output folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    old = folder.parent / f"{tmp.name}-old"
    try:
        write_dicom_series(phantom.volume, tmp, series_description="Synthetic abdominal CT")
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _read_prediction(study_dir: Path, phantom: Phantom) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (instance map, class map) read back from the written NIfTI files, checked to be on the truth grid."""
    from medmrcnn.io import load_volume

    labels_name, instances_name = FILES["nifti"]
    classes, instances = load_volume(study_dir / labels_name), load_volume(study_dir / instances_name)
    truth = phantom.volume
    for v in (classes, instances):
        if v.shape != truth.shape or not np.allclose(v.affine, truth.affine, atol=1e-3):
            raise GeometryMismatchError(f"{v.source}: not on the phantom's grid ({v.shape} vs {truth.shape})")
    return instances.array.astype(np.int64), classes.array.astype(np.int64)


def compare_with_truth(phantom: Phantom, pred_instances: np.ndarray, pred_classes: np.ndarray
                       ) -> tuple[list[Finding], dict[str, tuple[int, int]]]:
    """Per true instance: the same-class predicted instance overlapping it most, its volume and the Dice.

    Args:
        phantom: the truth.
        pred_instances, pred_classes: predicted instance ids and class ids, (z, y, x) on the phantom grid.
    Returns:
        (findings in truth order, {class: (predicted instances, true instances)}).
    """
    voxel_ml = phantom.volume.voxel_volume_ml
    gt = phantom.gt_instances.astype(np.int64)
    # Class of each predicted instance: its majority class id.
    pred_ids = [int(i) for i in np.unique(pred_instances) if i]
    pred_class = {i: int(np.bincount(pred_classes[pred_instances == i]).argmax()) for i in pred_ids}
    pairs = np.stack([gt.ravel(), pred_instances.ravel()])
    shared, counts = np.unique(pairs[:, (pairs[0] > 0) & (pairs[1] > 0)], axis=1, return_counts=True)
    overlap = {(int(g), int(p)): int(n) for (g, p), n in zip(shared.T, counts, strict=True)}
    gt_size = np.bincount(gt.ravel())
    pred_size = np.bincount(pred_instances.ravel())
    findings, numbering = [], {}
    for g, cls in sorted(phantom.gt_classes.items()):
        if g >= len(gt_size) or gt_size[g] == 0:
            continue
        name = phantom.labels.name_of(cls)
        numbering[name] = numbering.get(name, 0) + 1
        candidates = [(n, p) for (gg, p), n in overlap.items() if gg == g and pred_class.get(p) == cls]
        dice, found_ml = 0.0, 0.0
        if candidates:
            n, p = max(candidates)
            dice = 2.0 * n / (gt_size[g] + pred_size[p])
            found_ml = pred_size[p] * voxel_ml
        findings.append(Finding(f"{name} {numbering[name]}", name, round(gt_size[g] * voxel_ml, 2),
                                round(found_ml, 2), round(dice, 3)))
    for f in findings:  # "liver 1" reads oddly when there is only one liver
        if numbering[f.class_name] == 1:
            f.structure = f.class_name
    instances = {name: (sum(phantom.labels.name_of(c) == name for c in pred_class.values()),
                        numbering.get(name, 0)) for name in phantom.labels.names}
    return findings, instances


def run_demo(
    output: str | Path = "out/demo",
    *,
    weights: str | Path | None = None,
    device: str = "auto",
    events: BatchEvents | None = None,
) -> DemoResult:
    """Write the demo phantom as DICOM, segment it like `medmrcnn infer`, compare with the truth.

    Args:
        output: folder for the input series, the results and the demo report (created if needed).
        weights: checkpoint (default: the bundled demo weights).
        device: "auto", "cpu", "cuda" or "cuda:N".
        events: progress hooks (see `medmrcnn.batch.BatchEvents`).
    Returns:
        DemoResult. Raises ExportError when the study could not be segmented.
    """
    start = time.perf_counter()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    phantom = demo_phantom()
    dicom_dir = output / INPUT_DIR
    _write_input(phantom, dicom_dir)
    truth = save_volume(phantom.volume.with_array(phantom.class_map()), output / TRUTH)
    predictor, settings = load_predictor(weights, device=device)
    results = output / RESULTS_DIR
    options = BatchOptions(results, DEMO_FORMATS, overwrite=True, settings={**settings, "formats": list(DEMO_FORMATS)})
    summary = run_batch([dicom_dir], predictor, options, class_names=predictor.model_cfg.labels, events=events)
    outcome = summary.outcomes[0]
    if outcome.status != "ok":
        raise ExportError(f"{dicom_dir}: the demo study was not segmented: {outcome.reason}")
    study_dir = results / outcome.name
    findings, instances = compare_with_truth(phantom, *_read_prediction(study_dir, phantom))
    report = output / REPORT
    seconds = time.perf_counter() - start
    doc: dict[str, Any] = {
        "phantom": {"shape": list(DEMO_SHAPE), "spacing_mm": list(DEMO_SPACING), "seed": DEMO_SEED},
        "weights": settings["weights"], "seconds": round(seconds, 1),
        "instances": {k: {"found": f, "truth": t} for k, (f, t) in instances.items()},
        "findings": [asdict(f) for f in findings],
    }
    atomic_write_text(report, json.dumps(doc, indent=2) + "\n")
    outputs = [study_dir / name for name in outcome.outputs]
    return DemoResult(dicom_dir, truth, study_dir, outputs, findings, instances, summary, seconds, report)
