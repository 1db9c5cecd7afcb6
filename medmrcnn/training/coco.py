"""COCO instance annotations (polygons or RLE) for 2D images -> annotated one-slice volumes.

Categories are matched to the model's labels by name (others are skipped with a log line). Crowd regions
(iscrowd = 1) are not instances and are left out. Where instance masks overlap, the later annotation wins the
shared pixels (an instance id map holds one id per pixel). Masks are decoded with faster-coco-eval's mask utils.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import faster_coco_eval.core.mask as mask_utils
import numpy as np

from medmrcnn.errors import DataError, MedMRCNNError
from medmrcnn.labels import LabelMap
from medmrcnn.training.items import AnnotatedVolume

log = logging.getLogger(__name__)


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Bool (H, W) mask of a COCO segmentation: polygon list, uncompressed RLE or compressed RLE."""
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


def load_coco_items(
    path: str | Path | None, labels: LabelMap, image_root: str | Path | None = None
) -> list[AnnotatedVolume]:
    """One AnnotatedVolume per COCO image; DataError naming the file for anything inconsistent."""
    if path is None:
        raise DataError("data.coco_train is not set: give the COCO annotation JSON in the training config")
    path = Path(path)
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read COCO file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not all(k in coco for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: a COCO file needs 'images', 'annotations' and 'categories'")
    root = Path(image_root) if image_root else path.parent
    cat_to_class = {}
    for cat in coco["categories"]:
        if cat["name"] in labels.names:
            cat_to_class[cat["id"]] = labels.id_of(cat["name"])
        else:
            log.info("%s: category %r is not a model label; skipped", path.name, cat["name"])
    if not cat_to_class:
        raise DataError(f"{path}: no category name matches the model labels {list(labels.names)}")
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    from medmrcnn.io import load_volume

    items = []
    for img in coco["images"]:
        file = root / img["file_name"]
        try:
            volume = load_volume(file)
        except MedMRCNNError as e:
            raise DataError(f"{path}: image {img['file_name']}: {e}") from None
        h, w = volume.shape[1:]
        if (img.get("height", h), img.get("width", w)) != (h, w):
            raise DataError(
                f"{path}: image {img['file_name']} is {h}x{w} but the COCO file says {img['height']}x{img['width']}"
            )
        instances = np.zeros((h, w), dtype=np.uint32)
        classes: dict[int, int] = {}
        for ann in sorted(by_image.get(img["id"], []), key=lambda a: a["id"]):
            if ann.get("iscrowd", 0) or ann["category_id"] not in cat_to_class:
                continue
            try:
                mask = annotation_mask(ann["segmentation"], h, w)
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path}: annotation {ann.get('id')} has an unreadable segmentation ({e})") from None
            if mask.shape != (h, w):
                raise DataError(f"{path}: annotation {ann.get('id')} mask is {mask.shape}, image is {(h, w)}")
            inst = len(classes) + 1
            instances[mask] = inst
            classes[inst] = cat_to_class[ann["category_id"]]
        items.append(AnnotatedVolume(volume, instances[None], classes, str(file)))
    return items
