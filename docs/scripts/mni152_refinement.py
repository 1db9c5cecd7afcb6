"""Fine-tune the demo model on a real brain MR (the MNI152 2009 T1 template that nilearn's wheel ships), with grey
and white matter as two classes, with or without mask refinement; print Dice and boundary F1 per class as JSON.

    pip install nilearn   # only for its data files; nothing is downloaded at run time
    python docs/scripts/mni152_refinement.py none --steps 200 > none.json
    python docs/scripts/mni152_refinement.py pointrend --steps 200 > pointrend.json

Axial slices 56-124 of the 1 mm template: even slices train, every fourth odd slice is held out (neighbouring
slices of one brain: a check that the head can draw the ribbon, not a generalisation study). Grey matter is where
its probability is >= 0.5 and above white matter's; white matter likewise. Each class on a slice is one instance
(the ribbon of a slice is one object in a box around the whole brain: the case the 28 x 28 head cannot draw).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medmrcnn.batch.model import DEMO_WEIGHTS
from medmrcnn.inference.detector import run_detector
from medmrcnn.inference.postprocess import to_slice_instances
from medmrcnn.modeling import build_model, read_checkpoint
from medmrcnn.training import instances_to_target
from medmrcnn.training.metrics import boundary_f1, dice
from medmrcnn.transforms import percentile_normalise

LABELS = ("grey_matter", "white_matter")


def nilearn_data() -> Path:
    """nilearn/datasets/data of the installed nilearn (its wheel ships the MNI152 2009 template and tissue maps)."""
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data"


def load_slices(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) T1 intensities and a class map 0/1 (grey)/2 (white) of the 1 mm template, axial slices."""
    read = lambda k: np.asarray(nib.load(data / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz").dataobj,  # noqa: E731
                                dtype=np.float32).transpose(2, 1, 0)[:, ::-1]  # (x, y, z) RAS -> (z, y, x), anterior up
    t1, gm, wm = read("t1"), read("gm"), read("wm")
    classes = np.zeros(t1.shape, dtype=np.uint8)
    classes[(gm >= 128) & (gm > wm)] = 1
    classes[(wm >= 128) & (wm >= gm)] = 2
    return t1, classes


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("refinement", choices=("none", "pointrend"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--data", type=Path, default=None, help="nilearn/datasets/data (default: the installed nilearn)")
    args = p.parse_args()
    t1, classes = load_slices(args.data or nilearn_data())
    train_z, test_z = list(range(56, 125, 2)), list(range(57, 124, 4))
    image = {z: torch.from_numpy(percentile_normalise(t1[z]))[None] for z in train_z + test_z}

    torch.manual_seed(0)
    demo = read_checkpoint(DEMO_WEIGHTS)
    cfg = replace(demo.config, labels=LABELS, mask_refinement=args.refinement, pixel_spacing_mm=None,
                  intensity="percentile")
    model = build_model(cfg)
    own = model.state_dict()
    fits = {k: v for k, v in demo.state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fits, strict=False)  # the CT demo's trunk; class heads and the point head start fresh
    model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=5e-4)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    for step in range(args.steps):
        z = int(rng.choice(train_z))
        img, lab = image[z], classes[z]
        if step % 2:
            img, lab = img.flip(-1), np.ascontiguousarray(lab[:, ::-1])
        loss = sum(model([img], [instances_to_target(lab, {1: 1, 2: 2})]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - start
    model.eval()
    scores: dict[str, list[tuple[float, float]]] = {n: [] for n in LABELS}
    with torch.inference_mode():
        for z in test_z:
            found = to_slice_instances(run_detector(model, image[z][None], 0.5)[0], classes[z].shape)
            for cid, name in enumerate(LABELS, start=1):
                truth, pred = classes[z] == cid, np.zeros(classes[z].shape, dtype=bool)
                for k in range(len(found)):
                    if found.labels[k] == cid:
                        x0, y0, x1, y1 = found.boxes[k]
                        pred[y0:y1, x0:x1] |= found.masks[k]
                scores[name].append((dice(truth, pred), boundary_f1(truth, pred, (1.0, 1.0), 1.0)))
    out = {"refinement": args.refinement, "steps": args.steps, "train_s": round(train_s, 1),
           "train_slices": len(train_z), "test_slices": len(test_z),
           "per_class": {n: {"dice": round(float(np.mean([s[0] for s in v])), 3),
                             "boundary_f1_1mm": round(float(np.mean([s[1] for s in v])), 3)}
                         for n, v in scores.items()}}
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
