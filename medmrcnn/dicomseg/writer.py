"""`write_seg`: a class or instance label map on a DICOM reference series -> one DICOM Segmentation file (highdicom)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from skimage.color import rgb2lab

from medmrcnn import __version__
from medmrcnn.compat import highdicom_supports_labelmap, write_dicom
from medmrcnn.dicomseg.concepts import LabelConfig, load_label_config
from medmrcnn.geometry import check_same_grid
from medmrcnn.dicomseg.segments import (
    SegmentPlan, SegmentSpec, class_segments, connected_instances, instance_segments,
)
from medmrcnn.dicomseg.source import source_images
from medmrcnn.errors import ExportError, LabelConfigError
from medmrcnn.fileio import atomic_path
from medmrcnn.labels import LabelMap
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)

SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
# ContentDescription per SegmentAlgorithmType: a prediction, a prediction a person edited, or a person's drawing.
ALGORITHM_TYPES = {
    "AUTOMATIC": "Automatic segmentation by medmrcnn",
    "SEMIAUTOMATIC": "Segmentation by medmrcnn, edited by a person",
    "MANUAL": "Manual segmentation, converted by medmrcnn",
}
ALGORITHM_NAME = "medmrcnn"
CONTENT_LABEL = "MEDMRCNN"


def display_cielab(rgb: tuple[int, int, int]) -> list[int]:
    """sRGB 0-255 -> DICOM RecommendedDisplayCIELabValue (L*, a*, b* scaled to 0-65535; D65, as highdicom does)."""
    lab = rgb2lab(np.asarray(rgb, dtype=np.float64).reshape(1, 1, 3) / 255.0).reshape(3)
    scaled = [lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255, (lab[2] + 128) * 65535 / 255]
    return [int(np.clip(round(v), 0, 65535)) for v in scaled]


def _coded(code: Any) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme_designator, meaning=code.meaning)


def segment_description(spec: SegmentSpec, algorithm_type: str,
                        algorithm: hd.AlgorithmIdentificationSequence | None) -> hd.seg.SegmentDescription:
    """The SegmentSequence item of one segment: codes, algorithm, colour and tracking identifiers."""
    concept = spec.concept
    desc = hd.seg.SegmentDescription(
        segment_number=spec.number,
        segment_label=spec.label[:64],
        segmented_property_category=_coded(concept.category),
        segmented_property_type=_coded(concept.type),
        algorithm_type=algorithm_type,
        algorithm_identification=algorithm,
        tracking_id=spec.tracking_id[:64] if spec.tracking_id else None,
        tracking_uid=hd.UID() if spec.tracking_id else None,
    )
    if concept.modifier is not None:  # e.g. Left / Right: nested in the type item, as the standard places it
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [_coded(concept.modifier)]
    # Set directly rather than through highdicom's display_color, which highdicom 0.22 does not have.
    desc.RecommendedDisplayCIELabValue = display_cielab(concept.colour)
    if spec.description:
        desc.SegmentDescription = spec.description[:64]
    return desc


def _label_array(labelmap: Any, reference: Volume) -> np.ndarray:
    """The (z, y, x) integer array of a label map given as a Volume (geometry checked) or an array (shape checked)."""
    if isinstance(labelmap, Volume):
        what = f"label map {labelmap.source}" if labelmap.source else "label map"
        check_same_grid(labelmap.affine, labelmap.shape, reference.affine, reference.shape, what)
        array = labelmap.array
    else:
        array = np.asarray(labelmap)
        if array.ndim == 2:
            array = array[None]
        # A bare array has no geometry of its own: only its size can be checked (against the reference grid).
        check_same_grid(reference.affine, array.shape, reference.affine, reference.shape, "label map")
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if array.dtype.kind == "f":
        # NIfTI label maps are often stored as float; accept them only when every value is a whole number.
        if not np.array_equal(array, np.rint(array)) or array.min() < 0 or array.max() > np.iinfo(np.uint16).max:
            raise LabelConfigError("label map holds non-integer or negative values; expected 0 (background) and "
                                   "class ids 1..N")
        return array.astype(np.uint16 if array.max() > 255 else np.uint8)
    return array


def _is_result(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("class_map", "instance_map", "instances", "labels"))


def _plan(result_or_labelmap: Any, reference: Volume, labels: LabelMap | None, per_instance: bool,
          config: LabelConfig) -> SegmentPlan:
    if _is_result(result_or_labelmap):
        result = result_or_labelmap
        if getattr(result, "volume", None) is not None:
            check_same_grid(result.volume.affine, result.volume.shape, reference.affine, reference.shape,
                            "prediction")
        labels = labels or result.labels
        if not per_instance:
            return class_segments(_label_array(result.class_map, reference), labels, config)
        records = list(result.instances)
        return instance_segments(
            _label_array(result.instance_map, reference),
            {int(r.id): r.class_name for r in records}, labels.names, config,
            {int(r.id): f"medmrcnn instance {r.id}, max score {r.score_max:.2f}" for r in records
             if getattr(r, "score_max", None) is not None},
        )
    if labels is None:
        raise LabelConfigError("a bare label map needs class names for its values: pass labels=LabelMap "
                               '(CLI: --labels LABELS.json with {"liver": 1, ...})')
    class_map = _label_array(result_or_labelmap, reference)
    if not per_instance:
        return class_segments(class_map, labels, config)
    instance_map, classes = connected_instances(class_map, labels)
    return instance_segments(instance_map, classes, labels.names, config)


def write_seg(
    result_or_labelmap: Any,
    reference: Volume,
    path: str | Path,
    labels: LabelMap | None = None,
    per_instance: bool = False,
    label_config: LabelConfig | str | Path | None = None,
    *,
    segmentation_type: str = "BINARY",
    algorithm_type: str = "AUTOMATIC",
    series_description: str = "medmrcnn segmentation",
    series_number: int | None = None,
) -> Path:
    """Write a DICOM Segmentation of `reference` (a DICOM Volume from `medmrcnn.io.load_volume`) atomically.

    Args:
        result_or_labelmap: a `VolumeResult` (class_map / instance_map / instances / labels), or a class label map
            (z, y, x) as a Volume on the reference grid or an array of the reference's shape (0 = background).
        reference: the series the label map was computed on; its `source_datasets` are referenced.
        path: output .dcm file.
        labels: class names of the label values (default: the result's labels; required for bare label maps).
        per_instance: one segment per instance (label and TrackingID "<class> <id>", a new TrackingUID each)
            instead of one per class; a bare class map is split into 3D connected components.
        label_config: LabelConfig, or a JSON file merged over the shipped defaults (None: defaults only).
        segmentation_type: "BINARY" (default; what viewers display) or "LABELMAP" (highdicom >= 0.24).
        algorithm_type: "AUTOMATIC" (a medmrcnn prediction), "SEMIAUTOMATIC" (a prediction a person edited, e.g. a
            MONAI Label final label) or "MANUAL" (a person's annotation; then no algorithm is named).
        series_description: SeriesDescription of the new series.
        series_number: SeriesNumber (default: the reference's + 1000, so it sorts next to its source).
    Returns:
        `path`. Raises ExportError for an empty segmentation (nothing is written: an empty SEG is invalid),
        LabelConfigError for classes without a coded concept, GeometryMismatchError for a label map off the grid.
    """
    path = Path(path)
    segmentation_type = segmentation_type.upper()
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ExportError(f"{path}: segmentation type {segmentation_type!r} is not one of {SEGMENTATION_TYPES}")
    if segmentation_type == "LABELMAP" and not highdicom_supports_labelmap():
        raise ExportError(f"{path}: LABELMAP segmentations need highdicom >= 0.24 (installed {hd.__version__}); "
                          "use BINARY")
    algorithm_type = algorithm_type.upper()
    if algorithm_type not in ALGORITHM_TYPES:
        raise ExportError(f"{path}: algorithm type {algorithm_type!r} is not one of {tuple(ALGORITHM_TYPES)}")
    config = label_config if isinstance(label_config, LabelConfig) else load_label_config(label_config)
    plan = _plan(result_or_labelmap, reference, labels, per_instance, config)
    if not plan.segments:
        raise ExportError(f"{path}: not written: the segmentation is empty (no foreground voxel), and a DICOM-SEG "
                          "must hold at least one non-empty segment")
    sources, pixels = source_images(reference, plan.array)
    algorithm = None if algorithm_type == "MANUAL" else hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version=__version__,
    )
    if series_number is None:
        series_number = 1000 + int(sources[0].get("SeriesNumber") or 0)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=segmentation_type,
            segment_descriptions=[segment_description(s, algorithm_type, algorithm) for s in plan.segments],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medmrcnn",
            manufacturer_model_name="medmrcnn slice-wise Mask R-CNN",
            software_versions=__version__,
            device_serial_number="0",
            content_label=CONTENT_LABEL,
            content_description=ALGORITHM_TYPES[algorithm_type],
            omit_empty_frames=True,
        )
    except ValueError as e:
        raise ExportError(f"{path}: highdicom rejected the segmentation: {e}") from e
    seg.SeriesDescription = series_description[:64]
    # highdicom >= 0.24 copies the source's acquisition equipment (institution, station, address) into
    # ContributingEquipmentSequence; beyond the patient/study modules nothing is taken from the source header.
    if "ContributingEquipmentSequence" in seg:
        del seg.ContributingEquipmentSequence
    with atomic_path(path) as tmp:
        write_dicom(seg, tmp)
    log.info("wrote DICOM-SEG %s: %s, %d segments, %d frames", path, segmentation_type, len(plan.segments),
             int(seg.NumberOfFrames))
    return path
