"""Metrics: COCO AP (faster-coco-eval) on slices, volumetric Dice per class, lesion-wise detection in 3D,
Dice and boundary F1 of one mask pair.

Slice predictions follow the model's output contract: boxes xyxy px, labels 1..N, scores, masks bool (N, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence

import faster_coco_eval.core.mask as mask_utils
import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


def _rle(masks: np.ndarray) -> list[dict]:
    """COCO RLEs (counts as str) of bool masks (N, H, W)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]]).tolist()


def coco_metrics(
    gts: Sequence[dict[str, torch.Tensor]], preds: Sequence[dict[str, np.ndarray]], num_classes: int,
    max_dets: int = 100,
) -> dict[str, float]:
    """COCO AP/AP50/AP75 for boxes and masks over slices (one COCO image per slice).

    Args:
        gts: per slice the training target (boxes, labels, masks UInt8[N, H, W]).
        preds: per slice boxes (N, 4) xyxy, labels (N,), scores (N,), masks bool (N, H, W).
        num_classes: foreground classes (ids 1..num_classes).
        max_dets: detections per slice considered (COCO's largest maxDets).
    Returns:
        {"bbox_AP", "bbox_AP50", "bbox_AP75", "mask_AP", "mask_AP50", "mask_AP75"}; -1 where no ground truth exists.
    """
    images, anns, dets = [], [], []
    for img_id, (gt, pr) in enumerate(zip(gts, preds), start=1):
        h, w = gt["masks"].shape[-2:]
        images.append({"id": img_id, "height": int(h), "width": int(w)})
        gmasks = gt["masks"].numpy().astype(bool)
        for box, lab, rle, area in zip(_xywh(gt["boxes"].numpy()), gt["labels"].tolist(), _rle(gmasks), gmasks.sum((1, 2))):
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": int(lab), "bbox": box,
                         "segmentation": rle, "area": float(area), "iscrowd": 0})
        for box, lab, score, rle in zip(_xywh(pr["boxes"]), pr["labels"].tolist(), pr["scores"].tolist(), _rle(pr["masks"])):
            dets.append({"image_id": img_id, "category_id": int(lab), "bbox": box, "score": float(score),
                         "segmentation": rle})
    out = {f"{t}_{m}": -1.0 for t in ("bbox", "mask") for m in ("AP", "AP50", "AP75")}
    if not anns:
        return out
    gt_coco = COCO({"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)]})
    if not dets:
        return {k: 0.0 for k in out}
    dt_coco = gt_coco.loadRes(dets)
    for iou_type, prefix in (("bbox", "bbox"), ("segm", "mask")):
        ev = COCOeval_faster(gt_coco, dt_coco, iou_type, print_function=lambda *a, **k: None)
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        out[f"{prefix}_AP"], out[f"{prefix}_AP50"], out[f"{prefix}_AP75"] = (float(v) for v in ev.stats[:3])
    return out


def paint_class_map(pred: dict[str, np.ndarray], shape: tuple[int, int], score_threshold: float = 0.5) -> np.ndarray:
    """uint8 (H, W) class map of one slice's detections above `score_threshold`; higher scores painted last win."""
    out = np.zeros(shape, dtype=np.uint8)
    keep = np.flatnonzero(pred["scores"] >= score_threshold)
    for i in keep[np.argsort(pred["scores"][keep])]:
        out[pred["masks"][i]] = pred["labels"][i]
    return out


class DiceAccumulator:
    """Volumetric Dice per class: intersections and sizes summed over voxels of every volume added."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.inter = np.zeros(num_classes + 1, dtype=np.int64)
        self.pred = np.zeros(num_classes + 1, dtype=np.int64)
        self.gt = np.zeros(num_classes + 1, dtype=np.int64)

    def add(self, pred_classes: np.ndarray, gt_classes: np.ndarray) -> None:
        """Add class maps (any shape, same for both; 0 = background)."""
        n = self.num_classes + 1
        self.pred += np.bincount(pred_classes.ravel(), minlength=n)[:n]
        self.gt += np.bincount(gt_classes.ravel(), minlength=n)[:n]
        same = pred_classes == gt_classes
        self.inter += np.bincount(gt_classes[same].ravel(), minlength=n)[:n]

    def dice(self) -> dict[int, float]:
        """class id -> Dice; classes absent from both prediction and truth are left out."""
        return {c: float(2 * self.inter[c] / (self.pred[c] + self.gt[c]))
                for c in range(1, self.num_classes + 1) if self.pred[c] + self.gt[c]}


def instance_overlaps(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise voxel overlaps of two instance maps of the same shape.

    Returns (gt_ids[G], pred_ids[P], inter[G, P] voxel counts, (gt_sizes[G], pred_sizes[P])); 0 is not an id.
    """
    g_ids, g_inv = np.unique(gt, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    joint = np.bincount(g_inv.ravel() * len(p_ids) + p_inv.ravel(), minlength=len(g_ids) * len(p_ids))
    inter = joint.reshape(len(g_ids), len(p_ids))
    g_keep, p_keep = g_ids != 0, p_ids != 0
    return g_ids[g_keep], p_ids[p_keep], inter[np.ix_(g_keep, p_keep)], (inter.sum(1)[g_keep], inter.sum(0)[p_keep])


def match_instances(
    gt: np.ndarray, gt_classes: dict[int, int], pred: np.ndarray, pred_classes: dict[int, int], min_dice: float = 0.1
) -> list[dict]:
    """One-to-one matching of 3D instances of the same class by Dice (Hungarian, scipy).

    Returns one row per ground-truth and per unmatched predicted instance:
    {"class_id", "gt_id" (or None), "pred_id" (or None), "dice", "gt_voxels", "pred_voxels"}.
    A pair counts as matched when its Dice >= min_dice.
    """
    g_ids, p_ids, inter, (g_sz, p_sz) = instance_overlaps(gt, pred)
    rows: list[dict] = []
    classes = sorted({gt_classes.get(int(g), 0) for g in g_ids} | {pred_classes.get(int(p), 0) for p in p_ids} - {0})
    for c in classes:
        gi = [i for i, g in enumerate(g_ids) if gt_classes.get(int(g)) == c]
        pi = [j for j, p in enumerate(p_ids) if pred_classes.get(int(p)) == c]
        dice = np.zeros((len(gi), len(pi)))
        if gi and pi:
            dice = 2 * inter[np.ix_(gi, pi)] / np.maximum(g_sz[gi][:, None] + p_sz[pi][None, :], 1)
        matched_g, matched_p = {}, set()
        if gi and pi:
            for r, k in zip(*linear_sum_assignment(-dice)):
                if dice[r, k] >= min_dice:
                    matched_g[r] = k
                    matched_p.add(k)
        for r, i in enumerate(gi):
            k = matched_g.get(r)
            rows.append({"class_id": c, "gt_id": int(g_ids[i]), "pred_id": None if k is None else int(p_ids[pi[k]]),
                         "dice": 0.0 if k is None else float(dice[r, k]), "gt_voxels": int(g_sz[i]),
                         "pred_voxels": 0 if k is None else int(p_sz[pi[k]])})
        for k, j in enumerate(pi):
            if k not in matched_p:
                rows.append({"class_id": c, "gt_id": None, "pred_id": int(p_ids[j]), "dice": 0.0, "gt_voxels": 0,
                             "pred_voxels": int(p_sz[j])})
    return rows


def lesion_summary(rows_per_volume: Sequence[list[dict]], num_classes: int) -> dict[int, dict[str, float]]:
    """Per class: lesion-wise sensitivity, false positives per volume and mean Dice of detected lesions."""
    out = {}
    n_vol = max(len(rows_per_volume), 1)
    for c in range(1, num_classes + 1):
        rows = [r for v in rows_per_volume for r in v if r["class_id"] == c]
        gt_rows = [r for r in rows if r["gt_id"] is not None]
        hits = [r for r in gt_rows if r["pred_id"] is not None]
        fps = [r for r in rows if r["gt_id"] is None]
        if not rows:
            continue
        out[c] = {
            "n_gt": len(gt_rows),
            "sensitivity": len(hits) / len(gt_rows) if gt_rows else float("nan"),
            "fp_per_volume": len(fps) / n_vol,
            "mean_dice_detected": float(np.mean([r["dice"] for r in hits])) if hits else 0.0,
        }
    return out


# IoU thresholds of the cell-segmentation field (StarDist, Cellpose, DSB2018); the DSB2018 score averages 0.5..0.95.
CELL_IOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def match_cells(gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = CELL_IOU_THRESHOLDS
                ) -> dict[float, dict[str, float]]:
    """Match the objects of two instance maps (any shape, 0 = background) at each IoU threshold.

    A pair matches when its IoU >= t under the one-to-one matching that maximises the summed IoU (Hungarian, as
    StarDist's `matching`; above t = 0.5 it is unique). Returns per threshold {"tp", "fp", "fn", "iou_sum"}
    (iou_sum: summed IoU of the matched pairs), to be summed over images by CellMatchAccumulator.
    """
    _, _, inter, (g_sz, p_sz) = instance_overlaps(gt, pred)
    iou = inter / np.maximum(g_sz[:, None] + p_sz[None, :] - inter, 1)
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
    matched = iou[rows, cols]
    out = {}
    for t in thresholds:
        hits = matched[matched >= t]
        out[float(t)] = {"tp": float(len(hits)), "fp": float(len(p_sz) - len(hits)),
                         "fn": float(len(g_sz) - len(hits)), "iou_sum": float(hits.sum())}
    return out


class CellMatchAccumulator:
    """Object-level scores of the cell field summed over images: precision, recall, accuracy, F1, mean matched IoU.

    accuracy = TP / (TP + FP + FN), which DSB2018 and StarDist call "average precision" at one IoU threshold;
    `dsb_score` is its mean over IoU 0.5..0.95.
    """

    def __init__(self, thresholds: Sequence[float] = CELL_IOU_THRESHOLDS) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.counts = {t: {"tp": 0.0, "fp": 0.0, "fn": 0.0, "iou_sum": 0.0} for t in self.thresholds}

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image's (or volume's) ground-truth and predicted instance maps."""
        for t, c in match_cells(gt, pred, self.thresholds).items():
            for k, v in c.items():
                self.counts[t][k] += v

    def scores(self) -> dict[float, dict[str, float]]:
        """Per threshold: tp, fp, fn, precision, recall, accuracy, f1, mean_matched_iou (0 where undefined)."""
        out = {}
        for t, c in self.counts.items():
            tp, fp, fn = c["tp"], c["fp"], c["fn"]
            out[t] = {"tp": int(tp), "fp": int(fp), "fn": int(fn),
                      "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
                      "accuracy": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
                      "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                      "mean_matched_iou": c["iou_sum"] / tp if tp else 0.0}
        return out

    def dsb_score(self) -> float:
        """Mean accuracy over the thresholds (the DSB2018 score for the default 0.5..0.95)."""
        s = self.scores()
        return float(np.mean([s[t]["accuracy"] for t in self.thresholds]))


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice overlap of two bool masks of the same shape (1.0 when both are empty)."""
    total = int(gt.sum()) + int(pred.sum())
    return 1.0 if total == 0 else 2.0 * int((gt & pred).sum()) / total


def boundary_f1(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0) -> float:
    """Boundary F1 of two bool masks (2D or 3D, axes as `spacing` in mm): the harmonic mean of the fraction of
    predicted boundary pixels within `tolerance_mm` of the true boundary and of true boundary pixels within it of
    the predicted one. Boundaries are the masks' pixels with a background neighbour, holes included, so a
    ring's inner edge counts as much as its outer edge. 1.0 when both are empty, 0.0 when one is.
    """
    edge_gt, edge_pred = gt & ~ndimage.binary_erosion(gt), pred & ~ndimage.binary_erosion(pred)
    if not edge_gt.any() or not edge_pred.any():
        return float(edge_gt.any() == edge_pred.any())
    to_gt = ndimage.distance_transform_edt(~edge_gt, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~edge_pred, sampling=spacing)
    precision = float((to_gt[edge_pred] <= tolerance_mm).mean())
    recall = float((to_pred[edge_gt] <= tolerance_mm).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
