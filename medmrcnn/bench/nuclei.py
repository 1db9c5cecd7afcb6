"""Real nuclei: fine-tune on part of an annotated fluorescence image, compare with Otsu + watershed on a held-out part.

Data: the DSB2018 fluorescence image and its hand-made instance mask (512 x 512 px, 126 nuclei) that the `stardist`
wheel ships as package data (stardist/data/images/img2d.tif, mask2d.tif; Caicedo et al., Nature Methods 2019).
Only the files are read (`pip install --no-deps stardist`); stardist itself is never imported.

The split is by region of that one image, stated wherever results are reported: columns 0..255 train (rows 0..383
fit, rows 384..511 validate for early stopping and threshold calibration), columns 256..511 test. Nuclei cut by a
split line are partial objects on both sides, for both methods alike.

    python -m medmrcnn.bench.nuclei OUTDIR [--steps 600] [--epochs 12] [--patience 4] [--init demo|none|CKPT]
                                                                        # writes OUTDIR/nuclei.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.errors import DataError
from medmrcnn.fileio import atomic_write_text
from medmrcnn.training.metrics import CellMatchAccumulator

log = logging.getLogger(__name__)

LR = 0.002  # AdamW peak learning rate of the recipe (docs/microscopy.md: learning-rate range test)

# (rows, columns) of each part of the 512 x 512 image.
SPLIT = {"fit": (slice(0, 384), slice(0, 256)), "val": (slice(384, 512), slice(0, 256)),
         "test": (slice(0, 512), slice(256, 512))}


def stardist_nuclei_2d() -> tuple[np.ndarray, np.ndarray]:
    """(image uint16 (512, 512), instance mask uint16) from the installed stardist wheel's package data."""
    import tifffile

    spec = importlib.util.find_spec("stardist")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the real nuclei image ships in the stardist wheel: pip install --no-deps stardist")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


def split_parts(image: np.ndarray, mask: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fit / val / test crops (image, mask relabelled 1..N) of SPLIT."""
    from skimage.segmentation import relabel_sequential

    return {name: (image[rows, cols], relabel_sequential(mask[rows, cols])[0].astype(np.uint16))
            for name, (rows, cols) in SPLIT.items()}


def write_datalist(parts: dict[str, tuple[np.ndarray, np.ndarray]], folder: Path) -> Path:
    """TIFFs of the parts plus a datalist (training = fit, validation = val, testing = test); returns its path."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    section = {"fit": "training", "val": "validation", "test": "testing"}
    doc: dict[str, list[dict[str, str]]] = {}
    for name, (img, msk) in parts.items():
        tifffile.imwrite(folder / f"{name}.tif", img)
        tifffile.imwrite(folder / f"{name}_masks.tif", msk)
        doc.setdefault(section[name], []).append({"image": f"{name}.tif", "label": f"{name}_masks.tif"})
    atomic_write_text(folder / "datalist.json", json.dumps(doc, indent=2))
    return folder / "datalist.json"


def watershed_nuclei(image: np.ndarray, min_distance: int = 7, sigma: float = 1.0) -> np.ndarray:
    """The classical baseline: Gaussian smoothing, Otsu threshold, holes filled, distance-transform peaks at least
    `min_distance` px apart as markers, watershed of the inverted distance inside the foreground."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    smooth = gaussian(image.astype(np.float64), sigma)
    foreground = ndimage.binary_fill_holes(smooth > threshold_otsu(smooth))
    distance = ndimage.distance_transform_edt(foreground)
    regions, _ = ndimage.label(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=regions, exclude_border=False)
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground).astype(np.uint16)


def object_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """accuracy at IoU 0.5, F1 at 0.5, mean matched IoU at 0.5 and the DSB2018 score of one prediction."""
    acc = CellMatchAccumulator()
    acc.add(gt, pred)
    at50 = acc.scores()[0.5]
    return {"accuracy_50": round(at50["accuracy"], 4), "f1_50": round(at50["f1"], 4),
            "mean_matched_iou_50": round(at50["mean_matched_iou"], 4), "dsb_score": round(acc.dsb_score(), 4),
            "n_true": int(len(np.unique(gt)) - 1), "n_predicted": int(len(np.unique(pred)) - 1)}


def tuned_watershed(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[int, float]:
    """The baseline's marker distance and smoothing chosen on the training parts (fit + val), never on test."""
    grid = [(d, s) for d in (3, 5, 7, 9, 12) for s in (0.5, 1.0, 2.0)]

    def train_score(d: int, s: float) -> float:
        return float(np.mean([object_scores(parts[p][1], watershed_nuclei(parts[p][0], d, s))["dsb_score"]
                              for p in ("fit", "val")]))
    return max(grid, key=lambda ds: train_score(*ds))


def finetune_config(datalist: Path, output: Path, steps: int, *, crop_size: int = 128, seed: int = 0,
                    threads: int | None = None, eval_every: int = 1, epochs: int = 6, init: str | None = "demo",
                    lr: float = LR, patience: int = 0) -> Any:
    """The small-data CPU recipe for one or two annotated images (docs/microscopy.md): a compact ResNet-18 FPN
    whose trunk starts from the bundled demo weights (`init="demo"`; None = from scratch, or a checkpoint path),
    anchors fitted to nuclei, random crops around nuclei with flips / 90-degree turns / small affine and intensity
    changes, AdamW at `lr` (from a learning-rate range test) with a short warm-up and cosine decay over `steps`,
    validation `epochs` times on the validation part by mask AP over IoU 0.5-0.95 (smoother than AP50 on a
    small part, and the COCO counterpart of the DSB2018 score): the best kept, and with `patience` the run stops
    after that many validations without a better one."""
    from medmrcnn.batch.model import DEMO_WEIGHTS
    from medmrcnn.training import TrainConfig

    return TrainConfig.from_dict({
        "init": str(DEMO_WEIGHTS) if init == "demo" else init, "patience": patience,
        "model": {"labels": ["nucleus"], "backbone": "resnet18", "returned_layers": [1, 2, 3], "fpn_channels": 64,
                  "box_representation_size": 256, "mask_head_channels": [64, 64], "detections_per_image": 400,
                  "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_test": 600, "intensity": "percentile",
                  "anchor_sizes": [[8, 12], [16, 24], [32, 48], [64, 96]]},
        "data": {"source": "datalist", "datalist": str(datalist), "label_kind": "instance", "empty_fraction": 0.0},
        "augment": {"crop_size": crop_size, "flip_prob": 0.5, "rot90_prob": 0.5, "affine_prob": 0.3,
                    "intensity_prob": 0.5, "noise_prob": 0.2, "contrast_prob": 0.2},
        "optim": {"lr": lr, "warmup_steps": max(steps // 15, 5), "min_lr_ratio": 0.05},
        "epochs": epochs, "steps_per_epoch": max(steps // epochs, 1), "batch_size": 2, "seed": seed,
        "threads": threads, "device": "cpu", "output": str(output), "log_every": 10, "eval_every": eval_every,
        "best_metric": "mask_AP", "roi_samples_per_image": 128, "rpn_pre_nms_top_n_train": 600,
        "rpn_post_nms_top_n_train": 300,
    })


def run(output: Path, steps: int = 600, calibrate: bool = True, threads: int | None = None, epochs: int = 12,
        init: str | None = "demo", lr: float = LR, patience: int = 4) -> dict[str, Any]:
    """Fine-tune, calibrate on the validation part, and score both methods on the test part; returns the record
    (with the torch threads and the machine's load average before and after, which the training time depends on)."""
    import os
    from medmrcnn.inference import SliceWisePredictor
    from medmrcnn.io import load_volume
    from medmrcnn.training import train
    from medmrcnn.training.calibration import calibrate_thresholds, write_calibrated_checkpoint
    from medmrcnn.training.evaluation import load_eval_items

    image, mask = stardist_nuclei_2d()
    parts = split_parts(image, mask)
    datalist = write_datalist(parts, output / "data")
    d, s = tuned_watershed(parts)
    test_img, test_gt = parts["test"]
    t0 = time.perf_counter()
    baseline = object_scores(test_gt, watershed_nuclei(test_img, d, s))
    baseline["seconds"] = round(time.perf_counter() - t0, 3)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = train(finetune_config(datalist, output / "run", steps, threads=threads, epochs=epochs, init=init, lr=lr,
                                   patience=patience), progress=False)
    train_s = time.perf_counter() - t0
    machine = {"torch_threads": threads, "cpus": os.cpu_count(), "load_average_1_5_15_before": load_before,
               "load_average_1_5_15_after": os.getloadavg()}
    weights = result.best or result.last
    calibration = None
    if calibrate:
        from medmrcnn.modeling import read_checkpoint
        from medmrcnn.training.config import DataConfig

        val = load_eval_items(datalist, read_checkpoint(weights).config, "validation",
                              DataConfig(source="datalist", label_kind="instance"))
        cal = calibrate_thresholds(weights, val, device="cpu")
        weights = write_calibrated_checkpoint(weights, cal, output / "nuclei.calibrated.safetensors",
                                              data=str(datalist))
        calibration = {k: cal[k] for k in ("nms", "score", "mask", "dsb_score")}
    predictor = SliceWisePredictor.from_checkpoint(weights, device="cpu")
    t0 = time.perf_counter()
    predicted = predictor.predict(load_volume(output / "data" / "test.tif"))
    model_scores = object_scores(test_gt, predicted.instance_map[0])
    model_scores["seconds"] = round(time.perf_counter() - t0, 3)
    record = {
        "data": "stardist 0.9.2 wheel: DSB2018 img2d.tif + mask2d.tif; fit rows 0-383 x cols 0-255, "
                "val rows 384-511 x cols 0-255, test cols 256-511",
        "recipe": {"init": init, "lr": lr, "epochs": epochs, "patience": patience}, "machine": machine,
        "steps": result.steps, "stopped_early": result.stopped_early, "train_seconds": round(train_s, 1),
        "best_step": next((m["step"] for m in reversed(result.metrics) if m.get("best")), None), "best_epoch": next(
            (m["epoch"] for m in reversed(result.metrics) if m.get("best")), None),
        "history": [{"epoch": m["epoch"], "step": m["step"], "loss": round(m["train"]["loss"], 4),
                     "val_mask_AP50": round(m.get("val", {}).get("mask_AP50", -1), 4),
                     "val_mask_AP": round(m.get("val", {}).get("mask_AP", -1), 4), "time_s": m["time_s"]}
                    for m in result.metrics],
        "watershed": {"min_distance": d, "sigma": s, **baseline}, "medmrcnn": model_scores,
        "calibration": calibration,
    }
    atomic_write_text(output / "nuclei.json", json.dumps(record, indent=2))
    return record


def main() -> None:
    """Command line: python -m medmrcnn.bench.nuclei OUTDIR [--steps N]."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", type=Path)
    p.add_argument("--steps", type=int, default=600, help="training budget: the schedule spans it")
    p.add_argument("--threads", type=int)
    p.add_argument("--epochs", type=int, default=12, help="validation points (the best one is kept)")
    p.add_argument("--patience", type=int, default=4, help="stop after this many validations without a better one")
    p.add_argument("--init", default="demo", help="'demo' (bundled demo weights' trunk), 'none' or a checkpoint")
    p.add_argument("--lr", type=float, default=LR)
    p.add_argument("--no-calibrate", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    init = None if args.init == "none" else args.init
    print(json.dumps(run(args.output, args.steps, not args.no_calibrate, args.threads, args.epochs, init, args.lr,
                         args.patience), indent=2))


if __name__ == "__main__":
    main()
