"""One entry point for every input: `scan` (headers only), `load_volume`, `load_volumes`, `save_volume`.

A path is a DICOM file, a folder (searched recursively: DICOM files of any name plus NIfTI / NRRD / MHA / MHD / PNG /
TIFF files), or one image file. Inputs are only read, never written; outputs are written atomically.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medmrcnn.errors import ExportError, VolumeLoadError
from medmrcnn.geometry import is_sheared, resample_to_orthogonal, resample_to_regular
from medmrcnn.io import itk, nifti, raster
from medmrcnn.io.colour import RGB_MODES
from medmrcnn.io.dicom_scan import group_series, read_headers
from medmrcnn.io.series import DICOM_MULTIFRAME, DICOM_SERIES, ITK, NIFTI, RASTER, SeriesInfo
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)

_SCANNERS = ((nifti.is_nifti, nifti.scan_nifti), (itk.is_itk, itk.scan_itk), (raster.is_raster, raster.scan_raster))
KNOWN_SUFFIXES = nifti.SUFFIXES + itk.SUFFIXES + raster.SUFFIXES


def _walk(folder: Path) -> list[Path]:
    """Every regular file under `folder`, sorted, skipping hidden files and folders (.DS_Store, .git, ...)."""
    found = []
    for root, dirs, files in os.walk(folder, onerror=_raise_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return found


def _raise_walk_error(e: OSError) -> None:
    if isinstance(e, PermissionError):
        raise VolumeLoadError(e.filename, "permission denied (cannot list the folder)")
    raise VolumeLoadError(e.filename, f"cannot list the folder ({e.strerror})")


def _scan_other(path: Path) -> SeriesInfo:
    for matches, scan_file in _SCANNERS:
        if matches(path):
            return scan_file(path)
    raise AssertionError(path)  # callers only pass names with a known suffix


def _order_key(info: SeriesInfo) -> tuple:
    is_dicom = info.kind.startswith("dicom")
    return (not is_dicom, info.number if info.number is not None else 1 << 31, info.series_uid, str(info.paths[0]))


def scan(path: str | Path) -> list[SeriesInfo]:
    """Describe every series under `path` from headers only (no pixel decoding).

    Returns:
        SeriesInfo entries ordered by DICOM SeriesNumber, then other files by path; non-image DICOM objects
        (SEG, SR, RTSTRUCT, PR, ...) are included with kind "dicom-non-image". Raises VolumeLoadError when nothing
        usable is found, or for unreadable / corrupt files.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeLoadError(path, "no such file or folder")
    if not os.access(path, os.R_OK):
        raise VolumeLoadError(path, "permission denied (cannot read)")
    if path.is_file():
        if path.name.lower().endswith(KNOWN_SUFFIXES):
            return [_scan_other(path)]
        if path.stat().st_size == 0:
            raise VolumeLoadError(path, "empty file (0 bytes)")
        files, _ = read_headers([path])
        if not files:
            raise VolumeLoadError(path, "not a DICOM file (no DICM preamble) and not a supported image format "
                                        f"({', '.join(KNOWN_SUFFIXES)})")
        return group_series(files)
    candidates = _walk(path)
    if not candidates:
        raise VolumeLoadError(path, "empty folder (no files)")
    others = [p for p in candidates if p.name.lower().endswith(KNOWN_SUFFIXES)]
    dicom_candidates = [p for p in candidates if not p.name.lower().endswith(KNOWN_SUFFIXES)]
    files, skipped = read_headers(dicom_candidates)
    infos = group_series(files) + [_scan_other(p) for p in others]
    if skipped:
        log.info("%s: skipped %d files that are not DICOM (e.g. %s)", path, len(skipped), skipped[0].name)
    if not infos:
        raise VolumeLoadError(path, f"no DICOM or image files found ({len(skipped)} other files skipped, e.g. "
                                    f"{skipped[0].name})")
    return sorted(infos, key=_order_key)


def _listing(images: list[SeriesInfo]) -> str:
    return "; ".join(f"[{i}] {info.summary()}" for i, info in enumerate(images))


def select_series(path: str | Path, infos: list[SeriesInfo], series: str | int | None) -> SeriesInfo:
    """The image series chosen by index (among image series) or SeriesInstanceUID; errors list the choices."""
    images = [i for i in infos if i.is_image]
    if not images:
        notes = "; ".join(f"{i.source.name}: {i.warnings[0]}" for i in infos if i.warnings)
        raise VolumeLoadError(path, f"no image series found ({notes})")
    if series is None:
        if len(images) == 1:
            return images[0]
        raise VolumeLoadError(path, f"{len(images)} image series found; choose one with series=<index or "
                                    f"SeriesInstanceUID>: {_listing(images)}")
    if isinstance(series, str) and series.isdigit():  # "2" from a command line is an index; UIDs contain dots
        series = int(series)
    if isinstance(series, int) and not isinstance(series, bool):
        if 0 <= series < len(images):
            return images[series]
        raise VolumeLoadError(path, f"series index {series} out of range ({len(images)} image series: "
                                    f"{_listing(images)})")
    matches = [i for i in images if i.series_uid == str(series)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise VolumeLoadError(path, f"no image series with SeriesInstanceUID {series} ({_listing(images)})")
    raise VolumeLoadError(path, f"SeriesInstanceUID {series} names {len(matches)} image objects; choose by index "
                                f"({_listing(images)})")


def read_series(info: SeriesInfo, frame: int | None = None, allow_irregular: bool = False,
                rgb: str = "luma", channel: int | None = None) -> Volume:
    """Decode one scanned series into a Volume (raises VolumeLoadError with the reason it cannot be loaded).

    `channel` picks the channel of a multi-channel PNG / TIFF (see medmrcnn.io.raster); other kinds ignore it.
    """
    if rgb not in RGB_MODES:
        raise ValueError(f"rgb must be one of {RGB_MODES}; got {rgb!r}")
    if not info.is_image:
        raise VolumeLoadError(info.source, info.warnings[0] if info.warnings else "not an image")
    if info.error:
        raise VolumeLoadError(info.source, info.error)
    if info.irregular and not allow_irregular:
        raise VolumeLoadError(info.source, f"{info.irregular}; load with allow_irregular=True (CLI: "
                                           "--allow-irregular) to accept it (outputs keep each slice's position)")
    if info.n_volumes > 1:
        if frame is None:
            raise VolumeLoadError(info.source, f"{info.n_volumes} volumes in one file (4D / multi-plane); choose one "
                                               f"with frame=<0..{info.n_volumes - 1}>; it is never squashed")
        if not 0 <= frame < info.n_volumes:
            raise VolumeLoadError(info.source, f"frame {frame} out of range (0..{info.n_volumes - 1})")
    elif frame not in (None, 0):
        raise VolumeLoadError(info.source, f"frame {frame} requested but the image holds a single volume")
    if info.kind in (DICOM_SERIES, DICOM_MULTIFRAME):
        from medmrcnn.io.dicom_pixels import read_dicom_volume

        volume = read_dicom_volume(info, rgb=rgb)
    elif info.kind == NIFTI:
        volume = nifti.load_nifti(info, frame=frame, rgb=rgb)
    elif info.kind == ITK:
        volume = itk.load_itk(info, frame=frame, rgb=rgb)
    elif info.kind == RASTER:
        volume = raster.load_raster(info, frame=frame, rgb=rgb, channel=channel)
    else:
        raise VolumeLoadError(info.source, f"unknown series kind {info.kind!r}")
    replace_non_finite(volume)
    for w in volume.warnings:
        log.warning("%s: %s", info.source, w)
    return volume


def replace_non_finite(volume: Volume) -> None:
    """Replace NaN / +-inf voxels (common after registration or resampling) by the smallest finite value, in place,
    with a warning saying how many; VolumeLoadError when no voxel is finite. Integer volumes are left alone."""
    array = volume.array
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if not count:
        return
    if count == array.size:
        raise VolumeLoadError(volume.source, "no finite voxel value (all NaN / inf)")
    fill = float(array[~bad].min())
    if not array.flags.writeable:
        volume.array = array = array.copy()
    array[bad] = fill
    volume.warnings.append(f"{count} NaN / inf voxels ({100 * count / array.size:.2g}%) replaced by the smallest "
                           f"finite value {fill:.6g}")


def load_volume(
    path: str | Path,
    series: str | int | None = None,
    *,
    frame: int | None = None,
    allow_irregular: bool = False,
    rgb: str = "luma",
    channel: int | None = None,
) -> Volume:
    """Load one image volume on the data contract (array (z, y, x), LPS affine, CT in HU).

    Args:
        path: DICOM file or folder (recursive), NIfTI (.nii/.nii.gz, NIfTI-1/2), NRRD, MHA/MHD, PNG or TIFF.
        series: which image series when several are found: index (order of `scan`, image series only; a string
            of digits counts as an index) or SeriesInstanceUID. Without it, several series raise an error that
            lists them.
        frame: which 3D volume of a 4D file (or plane of a multi-plane TIFF); 4D data is never squashed.
        allow_irregular: accept DICOM stacks with missing slices / non-uniform spacing (warning; the volume holds the
            acquired slices with a mean step, `metadata["slice_positions"]` their true positions, used by `save_volume`).
        rgb: how RGB becomes one channel: "luma" (BT.601), "r", "g" or "b".
        channel: which channel of a multi-channel microscopy image (TIFF C axis, or an RGB sample) is segmented.
    Returns:
        Volume; for DICOM `source_datasets` holds the headers (no pixel data) in slice order.
    """
    infos = scan(path)
    return read_series(select_series(path, infos, series), frame=frame, allow_irregular=allow_irregular, rgb=rgb,
                       channel=channel)


def load_volumes(
    path: str | Path, *, strict: bool = False, allow_irregular: bool = False, rgb: str = "luma"
) -> list[Volume]:
    """Load every image series under `path` (batch mode), in `scan` order.

    Series that headers already show cannot be loaded (mixed orientations as in localizers, duplicate positions,
    4D without a frame, irregular spacing unless allowed) are skipped with a logged warning, or raise when `strict`.
    Errors found while decoding pixels (truncated or corrupt files) always raise.
    """
    volumes = []
    for info in scan(path):
        if not info.is_image:
            continue
        problem = info.error or (None if allow_irregular else info.irregular) or (
            f"{info.n_volumes} volumes in one file" if info.n_volumes > 1 else None)
        if problem and not strict:
            log.warning("%s: skipped series %s: %s", info.source, info.series_uid or info.paths[0].name, problem)
            continue
        volumes.append(read_series(info, allow_irregular=allow_irregular, rgb=rgb))
    return volumes


def save_volume(volume: Volume, path: str | Path, *, labels: bool | None = None, compress: bool = False) -> Path:
    """Write `volume` by suffix: .nii / .nii.gz (NIfTI-1, RAS), .nrrd / .nhdr, .mha / .mhd; atomic, dtype kept.

    Geometry follows docs/data-contract.md. Slices of an irregular stack (`metadata["slice_positions"]`, set when
    loaded with allow_irregular) are first placed at their true positions on a regular grid
    (`medmrcnn.geometry.resample_to_regular`, missing slices empty). A sheared grid (gantry tilt), which ITK-based
    readers (SimpleITK, Slicer, ITK-SNAP) refuse, is then resampled onto the orthogonal grid of
    `medmrcnn.geometry.orthogonal_grid`: each slice stays in its plane, shifted within it, so every voxel keeps its
    physical position. `labels` (default: integer or bool dtype) moves voxels by nearest neighbour (no new values),
    otherwise linearly. `compress` gzips NRRD / MetaImage voxel data (NIfTI is compressed by its name, .nii.gz).
    """
    path = Path(path)
    is_labels = volume.array.dtype.kind in "biu" if labels is None else labels
    positions = volume.metadata.get("slice_positions")
    if positions is not None and len(positions) == volume.shape[0]:  # an irregular stack: true slice positions
        fill = 0 if is_labels or volume.array.size == 0 else volume.array.min()
        array, affine = resample_to_regular(volume.array, volume.affine, np.asarray(positions), fill=fill)
        metadata = {k: v for k, v in volume.metadata.items() if k != "slice_positions"}
        volume = Volume(array=array, affine=affine, modality=volume.modality, source=volume.source,
                        series_uid=volume.series_uid, metadata=metadata)
    if is_sheared(volume.affine):
        array, affine = resample_to_orthogonal(volume.array, volume.affine, labels=is_labels)
        volume = Volume(array=array, affine=affine, modality=volume.modality, source=volume.source,
                        series_uid=volume.series_uid, metadata=dict(volume.metadata))
    if nifti.is_nifti(path):
        return nifti.save_nifti(volume, path)
    if itk.is_itk(path):
        return itk.save_itk(volume, path, compress=compress)
    raise ExportError(f"{path}: unsupported output format; use .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd")
