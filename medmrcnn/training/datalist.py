"""MONAI/Decathlon datalist JSON -> annotated volumes.

    {"training":   [{"image": "ct/001.nii.gz", "label": "labels/001.nii.gz"}, ...],
     "validation": [{"image": "dicom/002/", "label": "seg/002.dcm"}, ...]}

Images are anything `medmrcnn.io.load_volume` reads (DICOM folder, NIfTI, NRRD, MHA, PNG/TIFF). Labels are label
maps on the image grid (NIfTI/NRRD/MHA/...) or a DICOM-SEG referencing the image series. Label maps are semantic
(values = classes, instances = per-slice connected components) or instance maps with a class table
(data.label_kind "instance"; an item's own "classes": {"1": "tumour", ...} overrides data.class_table). A
one-class model (cells, nuclei) needs no table: every nonzero id of an instance mask is one object of that class,
and a mask image without a pixel size (a bare TIFF / PNG) takes its microscopy image's grid.
Relative paths are resolved against the datalist's folder; "series" picks a series in a multi-series folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.errors import DataError, MedMRCNNError
from medmrcnn.geometry import check_same_grid
from medmrcnn.labels import LabelMap
from medmrcnn.training.config import DataConfig
from medmrcnn.training.items import AnnotatedVolume
from medmrcnn.training.labelmaps import class_lookup, instance_classes, semantic_to_instances
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)


def read_datalist(path: str | Path) -> dict[str, Any]:
    """The parsed datalist JSON; DataError when missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot read datalist ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a datalist is a JSON object with 'training' / 'validation' lists")
    return data


def _is_dicom_seg(path: Path) -> bool:
    if path.is_dir() or path.suffix.lower() in (".nii", ".gz", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff"):
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except Exception:  # not DICOM at all: let the volume loader report it
        return False
    return str(ds.get("Modality", "")) == "SEG"


def _seg_item(image: Volume, seg_path: Path, labels: LabelMap, cfg: DataConfig, name: str) -> AnnotatedVolume:
    from medmrcnn.dicomseg import read_seg

    seg = read_seg(seg_path, reference=image)
    to_model = {}
    for i, n in enumerate(seg.labels.names, start=1):
        if n in labels.names:
            to_model[i] = labels.id_of(n)
        else:
            log.warning("%s: SEG class %r is not a model label; its voxels are ignored", name, n)
    if cfg.label_kind == "instance":
        classes = {inst: to_model[c] for inst, c in seg.instance_classes.items() if c in to_model}
        instances = seg.instance_map.array.copy()
        instances[~np.isin(instances, list(classes))] = 0
        return AnnotatedVolume(image, instances, classes, name)
    class_map = seg.class_map.array
    lut = np.zeros(int(class_map.max(initial=0)) + 1, dtype=np.uint16)
    for c, m in to_model.items():
        if c < len(lut):
            lut[c] = m
    instances, classes = semantic_to_instances(lut[class_map], {i: i for i in range(1, labels.num_classes)}, name)
    return AnnotatedVolume(image, instances, classes, name, per_slice_instances=True)


def load_item(entry: dict[str, Any], root: Path, labels: LabelMap, cfg: DataConfig) -> AnnotatedVolume:
    """One datalist entry -> AnnotatedVolume; DataError (one line naming the files) for anything broken."""
    if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
        raise DataError(f"{root}: datalist entry {entry!r} needs 'image' and 'label'")
    image_path, label_path = (root / entry[k] for k in ("image", "label"))  # an absolute entry replaces root
    name = f"{image_path} + {label_path.name}"
    from medmrcnn.io import load_volume

    try:
        image = load_volume(image_path, series=entry.get("series"))
        if _is_dicom_seg(label_path):
            return _seg_item(image, label_path, labels, cfg, name)
        label = load_volume(label_path)
    except DataError:
        raise
    except MedMRCNNError as e:
        raise DataError(f"{name}: {e}") from None
    if image.modality == "SM" and label.shape == image.shape and label.metadata.get("kind") == "raster" \
            and any(w.startswith("pixel size unknown") for w in label.warnings):
        label = image.with_array(label.array)  # cell masks usually carry no pixel size: they share the image's
    check_same_grid(label.affine, label.shape, image.affine, image.shape, name)
    values = label.array
    if not np.issubdtype(values.dtype, np.integer):
        if not np.all(np.mod(values, 1) == 0):
            raise DataError(f"{label_path}: label map holds non-integer values (is it an image, not a label map?)")
        values = values.astype(np.int64)
    if cfg.label_kind == "instance":
        table = entry.get("classes") or cfg.class_table
        if table:
            return AnnotatedVolume(image, values, instance_classes(table, labels, name), name)
        if labels.num_classes != 2:  # background + one class
            raise DataError(f"{name}: instance label maps of a {labels.num_classes - 1}-class model need a class "
                            "table (data.class_table or the item's 'classes')")
        # As cell datasets ship them (Cellpose, StarDist, DSB2018): every nonzero id is one object of the only class.
        ids = np.unique(values)
        return AnnotatedVolume(image, values, {int(i): 1 for i in ids if i != 0}, name)
    instances, classes = semantic_to_instances(values, class_lookup(labels, cfg.label_values, name), name)
    return AnnotatedVolume(image, instances, classes, name, per_slice_instances=True)


def load_datalist_items(
    path: str | Path | None, key: str, labels: LabelMap, cfg: DataConfig, required: bool = True
) -> list[AnnotatedVolume]:
    """Every entry of section `key` of the datalist (an empty list when absent and not required)."""
    if path is None:
        raise DataError("data.datalist is not set: give the datalist JSON path in the training config")
    path = Path(path)
    data = read_datalist(path)
    entries = data.get(key)
    if entries is None:
        if required:
            raise DataError(f"{path}: no '{key}' section")
        return []
    if not isinstance(entries, list) or (required and not entries):
        raise DataError(f"{path}: section '{key}' must be a non-empty list of {{image, label}} entries")
    return [load_item(e, path.parent, labels, cfg) for e in entries]
