"""`read_seg`: a DICOM Segmentation (BINARY, FRACTIONAL, LABELMAP) -> class and instance label maps on a grid.

Frames are placed by their own ImagePositionPatient on the reference volume's grid (or, without a reference, on the
grid the frames span), so the result lines up with `medmrcnn.io.load_volume(<referenced series>)` voxel for voxel
whatever order or subset of source images the SEG references.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.coding import Code
from skimage.color import lab2rgb

from medmrcnn.compat import highdicom_supports_labelmap
from medmrcnn.dicomseg.concepts import LabelConfig, load_label_config, normalise_name
from medmrcnn.dicomseg.source import frame_geometry
from medmrcnn.geometry import affine_slice_positions, check_plane_orientation, grid_indices
from medmrcnn.dicomseg.source import source_planes
from medmrcnn.errors import GeometryMismatchError, VolumeLoadError
from medmrcnn.labels import LabelMap
from medmrcnn.volume import Volume, affine_from_geometry

log = logging.getLogger(__name__)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as stored: number, label, coded concept, tracking identifiers, colour; and the class it maps to."""

    number: int
    label: str
    class_name: str
    class_id: int
    category: Code
    type: Code
    modifier: Code | None
    tracking_id: str | None
    tracking_uid: str | None
    colour: tuple[int, int, int] | None
    algorithm_type: str


@dataclass
class ImportedSegmentation:
    """Label maps read from a DICOM-SEG, on the data contract (docs/data-contract.md).

    Attributes:
        class_map: uint8/uint16 (z, y, x) class ids of `labels`, 0 = background, with the grid's affine.
        instance_map: uint16/uint32 (z, y, x) segment numbers (one instance per segment), 0 = none.
        labels: class names in id order; segments with the same coded type (and modifier) share a class.
        instance_classes: segment number -> class id (like `Phantom.gt_classes`).
        segments: every segment's stored description.
        segmentation_type: "BINARY", "FRACTIONAL" or "LABELMAP".
        overlap_voxels: voxels claimed by more than one segment (the highest segment number wins in the maps).
        warnings: notes (overlaps, a different referenced series, frames cut at the grid's edge).
    """

    class_map: Volume
    instance_map: Volume
    labels: LabelMap
    instance_classes: dict[int, int]
    segments: list[SegmentInfo]
    segmentation_type: str
    overlap_voxels: int = 0
    warnings: list[str] = field(default_factory=list)


def _code(item: Any) -> Code:
    """A code sequence item (pydicom Dataset or highdicom CodedConcept) as a pydicom Code."""
    return Code(value=str(item.CodeValue), scheme_designator=str(item.CodingSchemeDesignator),
                meaning=str(item.CodeMeaning))


def _modifier(desc: Any) -> Code | None:
    # Current standard: inside the type item; before 2019 it sat beside it in the segment item.
    for item in (desc.SegmentedPropertyTypeCodeSequence[0], desc):
        if item.get("SegmentedPropertyTypeModifierCodeSequence"):
            return _code(item.SegmentedPropertyTypeModifierCodeSequence[0])
    return None


def _colour(desc: Any) -> tuple[int, int, int] | None:
    value = desc.get("RecommendedDisplayCIELabValue")
    if value is None:
        return None
    lab = np.array([value[0] * 100 / 65535, value[1] * 255 / 65535 - 128, value[2] * 255 / 65535 - 128])
    rgb = lab2rgb(lab.reshape(1, 1, 3)).reshape(3)
    return tuple(int(round(c * 255)) for c in np.clip(rgb, 0, 1))  # type: ignore[return-value]


def _segments(seg: Any, config: LabelConfig) -> list[SegmentInfo]:
    infos: list[SegmentInfo] = []
    class_ids: dict[str, int] = {}
    for desc in seg.SegmentSequence:
        number = int(desc.SegmentNumber)
        if number == 0:
            continue  # the background segment of a LABELMAP SEG
        type_ = _code(desc.SegmentedPropertyTypeCodeSequence[0])
        category = _code(desc.SegmentedPropertyCategoryCodeSequence[0])
        modifier = _modifier(desc)
        name = config.name_for_codes(category, type_, modifier) or normalise_name(
            type_.meaning + (f" {modifier.meaning}" if modifier else ""))
        class_id = class_ids.setdefault(name, len(class_ids) + 1)
        infos.append(SegmentInfo(
            number=number, label=str(desc.SegmentLabel), class_name=name, class_id=class_id, category=category,
            type=type_, modifier=modifier, tracking_id=desc.get("TrackingID"), tracking_uid=desc.get("TrackingUID"),
            colour=_colour(desc), algorithm_type=str(desc.SegmentAlgorithmType),
        ))
    return infos


def _frame_segment_numbers(seg: Any) -> np.ndarray:
    """ReferencedSegmentNumber of each frame (per-frame, or shared when every frame shows one segment)."""
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else {}
    numbers = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        ident = item if "SegmentIdentificationSequence" in item else shared
        numbers.append(int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber))
    return np.asarray(numbers, dtype=np.int64)


def _own_grid(positions: np.ndarray, orientation: np.ndarray, spacing: np.ndarray,
              seg: Any) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and (z, y, x) shape of the grid the frames span (slice step from the SEG, else the frame positions)."""
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    along = positions @ normal
    levels = np.unique(np.round(along, 3))
    measures = seg.SharedFunctionalGroupsSequence[0].get("PixelMeasuresSequence", [{}])[0] if (
        "SharedFunctionalGroupsSequence" in seg) else {}
    step = measures.get("SpacingBetweenSlices") or (np.diff(levels).min() if len(levels) > 1 else None) or (
        measures.get("SliceThickness") or 1.0)
    first = positions[int(np.argmin(along))]
    affine = affine_from_geometry((spacing[1], spacing[0], float(step)), first, np.stack([row, col, normal], axis=1))
    nz = int(round((levels[-1] - levels[0]) / float(step))) + 1
    return affine, (nz, int(seg.Rows), int(seg.Columns))


def _frames(seg: Any, segmentation_type: str, threshold: float) -> np.ndarray:
    """Frame pixels (n, rows, cols): bool masks, or segment numbers for LABELMAP."""
    pixels = np.asarray(seg.pixel_array).reshape(int(seg.get("NumberOfFrames") or 1), int(seg.Rows),
                                                  int(seg.Columns))
    if segmentation_type == "LABELMAP":
        return pixels
    if segmentation_type == "FRACTIONAL":
        return pixels >= threshold * float(seg.MaximumFractionalValue)
    return pixels > 0


def _check_reference(seg: Any, reference: Volume, warnings: list[str], path: Path) -> None:
    for_uid = reference.metadata.get("frame_of_reference_uid") or (
        reference.source_datasets[0].get("FrameOfReferenceUID") if reference.source_datasets else None)
    if for_uid and seg.get("FrameOfReferenceUID") and str(seg.FrameOfReferenceUID) != str(for_uid):
        raise GeometryMismatchError(f"{path}: the SEG is in another frame of reference than the reference volume "
                                    "(different FrameOfReferenceUID); it does not segment this series")
    referenced = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
    if reference.series_uid and referenced and reference.series_uid not in referenced:
        warnings.append("the SEG references another series of the same frame of reference; placed by geometry")


def read_seg(
    path: str | Path,
    reference: Volume | None = None,
    label_config: LabelConfig | str | Path | None = None,
    threshold: float = 0.5,
) -> ImportedSegmentation:
    """Read a DICOM-SEG into class and instance label maps.

    Args:
        path: the SEG file (BINARY or FRACTIONAL; LABELMAP where the installed highdicom reads it, >= 0.24).
        reference: the referenced series as loaded by `medmrcnn.io.load_volume`; the maps get its shape and affine.
            Without it the grid spans the SEG's own frames (first to last plane).
        label_config: maps coded concepts back to medmrcnn class names (default config when None).
        threshold: FRACTIONAL values at or above threshold x MaximumFractionalValue are foreground.
    Raises VolumeLoadError for unreadable / non-SEG files, GeometryMismatchError when frames are off the grid.
    """
    path = Path(path)
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError) as e:
        raise VolumeLoadError(path, f"not a readable DICOM file ({e})") from None
    sop_class = str(header.get("SOPClassUID", ""))
    if sop_class not in (SEG_STORAGE, LABEL_MAP_SEG_STORAGE):
        raise VolumeLoadError(path, f"not a DICOM Segmentation (SOP class {sop_class or 'missing'})")
    if sop_class == LABEL_MAP_SEG_STORAGE and not highdicom_supports_labelmap():
        raise VolumeLoadError(path, f"LABELMAP segmentations need highdicom >= 0.24 (installed {hd.__version__})")
    try:
        seg = hd.seg.segread(path)
    except (ValueError, AttributeError, KeyError) as e:
        raise VolumeLoadError(path, f"invalid DICOM Segmentation ({e})") from None
    config = label_config if isinstance(label_config, LabelConfig) else load_label_config(label_config)
    segmentation_type = str(seg.SegmentationType)
    segments = _segments(seg, config)
    if not segments:
        raise VolumeLoadError(path, "the SEG describes no segments")
    positions, orientation, spacing = frame_geometry(seg)
    warnings: list[str] = []
    if reference is not None:
        _check_reference(seg, reference, warnings, path)
        affine, shape = reference.affine, reference.shape
        # The headers give each slice's true position, so references loaded with irregular spacing still match.
        slices = source_planes(reference).positions if reference.source_datasets else affine_slice_positions(
            affine, shape[0])
    else:
        affine, shape = _own_grid(positions, orientation, spacing, seg)
        slices = affine_slice_positions(affine, shape[0])
    check_plane_orientation(orientation, spacing, affine, str(path))
    zyx = grid_indices(positions, affine, slices, str(path))
    frames = _frames(seg, segmentation_type, threshold)
    numbers = None if segmentation_type == "LABELMAP" else _frame_segment_numbers(seg)  # LABELMAP frames hold numbers
    top = max(s.number for s in segments)
    instance_map = np.zeros(shape, dtype=np.uint16 if top < 1 << 16 else np.uint32)
    overlap = _paste(instance_map, frames, zyx, numbers, warnings)
    if overlap:
        warnings.append(f"{overlap} voxels belong to more than one segment; the highest segment number wins")
    lut = np.zeros(top + 1, dtype=np.uint8 if len(segments) < 256 else np.uint16)
    for s in segments:
        lut[s.number] = s.class_id
    class_map = lut[instance_map]
    names = list(dict.fromkeys(s.class_name for s in segments))
    for w in warnings:
        log.warning("%s: %s", path, w)

    def on_grid(array: np.ndarray) -> Volume:
        return Volume(array=array, affine=affine.copy(), modality="SEG", source=str(path),
                      series_uid=str(seg.SeriesInstanceUID))

    return ImportedSegmentation(
        class_map=on_grid(class_map), instance_map=on_grid(instance_map), labels=LabelMap.from_names(names),
        instance_classes={s.number: s.class_id for s in segments}, segments=segments,
        segmentation_type=segmentation_type, overlap_voxels=overlap, warnings=warnings,
    )


def _paste(out: np.ndarray, frames: np.ndarray, zyx: np.ndarray, numbers: np.ndarray | None,
           warnings: list[str]) -> int:
    """Write frames into `out` at their grid slices/offsets, segment by segment (higher numbers on top).

    Args:
        out: (z, y, x) segment-number map to fill.
        frames: (n, rows, cols) bool masks, or segment numbers when `numbers` is None (LABELMAP).
        zyx: (n, 3) slice and in-plane offset of each frame; numbers: segment number of each frame.
    Returns the number of voxels already claimed by another segment.
    """
    overlap, cut = 0, False
    _, ny, nx = out.shape
    rows, cols = frames.shape[1:]
    groups = [(None, np.arange(len(frames)))] if numbers is None else [
        (n, np.flatnonzero(numbers == n)) for n in np.unique(numbers)]
    for number, idx in groups:
        # One vectorised write per segment and in-plane offset (offsets are all zero in practice).
        for y0, x0 in {tuple(v) for v in zyx[idx, 1:].tolist()}:
            sel = idx[(zyx[idx, 1] == y0) & (zyx[idx, 2] == x0)]
            ys, xs = slice(max(y0, 0), min(y0 + rows, ny)), slice(max(x0, 0), min(x0 + cols, nx))
            cut |= ys.stop - ys.start < rows or xs.stop - xs.start < cols
            if ys.start >= ys.stop or xs.start >= xs.stop:
                continue
            part = frames[sel][:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
            target = out[zyx[sel, 0], ys, xs]
            mask = part != 0
            overlap += int(np.count_nonzero(mask & (target != 0)))
            values = part if number is None else np.asarray(number, dtype=out.dtype)
            out[zyx[sel, 0], ys, xs] = np.where(mask, values, target)
    if cut:
        warnings.append("some frames extend beyond the reference grid and were cut at its edge")
    return overlap
