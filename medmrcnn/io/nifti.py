"""NIfTI-1 / NIfTI-2 (.nii, .nii.gz) via nibabel: RAS-indexed (i, j, k) files <-> LPS (z, y, x) volumes.

Reading transposes the array to (k, j, i) and negates the first two affine rows (RAS -> LPS), see
docs/data-contract.md. nibabel's `img.affine` is the best available affine (sform, else qform, else zooms). Spatial
units other than mm (meter, micron) are converted to mm. Scaling (scl_slope/scl_inter) is applied as nibabel does.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.fileholders import FileHolder

from medmrcnn.errors import VolumeLoadError
from medmrcnn.fileio import atomic_path
from medmrcnn.io.colour import rgb_to_single
from medmrcnn.geometry import RAS_TO_LPS, orientation_code, spacing_zyx
from medmrcnn.io.series import NIFTI, SeriesInfo, check_dimensions, check_spacing, one_line
from medmrcnn.volume import Volume

_UNITS_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}
SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    """True for .nii / .nii.gz names."""
    return path.name.lower().endswith(SUFFIXES)


def _open(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except PermissionError:
        raise VolumeLoadError(path, "permission denied (cannot read the file)") from None
    except FileNotFoundError:
        raise VolumeLoadError(path, "no such file") from None
    except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib/gzip errors on corrupt files
        raise VolumeLoadError(path, f"not a readable NIfTI file ({one_line(e)})") from None
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image subclasses Nifti1Image
        raise VolumeLoadError(path, f"not a NIfTI image ({type(img).__name__})")
    return img


def lps_affine_of(img: nib.Nifti1Image) -> np.ndarray:
    """The data-contract affine (voxel (i, j, k) -> LPS mm) of a NIfTI image, spatial units converted to mm."""
    scale = _UNITS_TO_MM.get(img.header.get_xyzt_units()[0], 1.0)
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, :] *= scale
    return RAS_TO_LPS @ affine


def scan_nifti(path: Path) -> SeriesInfo:
    """Header-only description of a NIfTI file (no voxel data read)."""
    img = _open(path)
    shape = tuple(int(s) for s in img.shape)
    info = SeriesInfo(kind=NIFTI, paths=[path], description=path.name, n_files=1)
    if len(shape) < 2:
        info.error = f"{len(shape)}D image: not an image volume"
        return info
    spatial = (shape + (1,))[:3]
    info.n_volumes = int(np.prod(shape[3:], dtype=np.int64)) if len(shape) > 3 else 1
    info.shape = (spatial[2], spatial[1], spatial[0])
    info.affine = lps_affine_of(img)
    info.orientation = orientation_code(info.affine)
    info.spacing = spacing_zyx(info.affine)
    try:
        check_dimensions(path, info.shape)
        check_spacing(path, info.spacing)
        if abs(np.linalg.det(info.affine[:3, :3])) < 1e-12:
            raise VolumeLoadError(path, "singular affine (zero voxel size or degenerate orientation)")
    except VolumeLoadError as e:
        info.error = e.reason
    info.plan = img
    return info


def load_nifti(info: SeriesInfo, frame: int | None = None, rgb: str = "luma") -> Volume:
    """Voxels of a scanned NIfTI as a Volume; `frame` picks one 3D volume of a 4D+ file."""
    img: nib.Nifti1Image = info.plan
    path = info.paths[0]
    shape = tuple(int(s) for s in img.shape)
    try:
        if len(shape) > 3:
            index = np.unravel_index(frame or 0, shape[3:])
            data = np.asanyarray(img.dataobj[(slice(None),) * 3 + tuple(int(i) for i in index)])
        else:
            data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise VolumeLoadError(path, f"truncated or corrupt NIfTI data ({one_line(e)})") from None
    metadata: dict[str, object] = {"kind": NIFTI, "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1}
    if data.dtype.names:  # RGB24 / RGBA32 structured voxels
        data = rgb_to_single(np.stack([data[c] for c in data.dtype.names], axis=-1), rgb)
        metadata["rgb_conversion"] = rgb
    if data.ndim == 2:
        data = data[:, :, None]
    array = np.ascontiguousarray(data.transpose(2, 1, 0)).astype(data.dtype.newbyteorder("="), copy=False)
    if frame is not None and len(shape) > 3:
        metadata["frame"] = frame
    return Volume(array=array, affine=info.affine.copy(), modality="OT", source=str(path),
                  warnings=list(info.warnings), metadata=metadata)


def save_nifti(volume: Volume, path: Path) -> Path:
    """Write a NIfTI-1 file (gzip for .nii.gz), dtype kept (bool -> uint8), sform and qform (orthogonal grids;
    `medmrcnn.io.save_volume` resamples sheared ones first)."""
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    affine = RAS_TO_LPS @ volume.affine
    img = nib.Nifti1Image(array.transpose(2, 1, 0), affine)
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code="scanner")
    img.set_qform(affine, code="scanner")
    with atomic_path(path) as tmp:
        with gzip.GzipFile(tmp, "wb", compresslevel=1, mtime=0) if path.name.lower().endswith(".gz") else open(
                tmp, "wb") as fobj:
            img.to_file_map({"image": FileHolder(fileobj=fobj)})
    return path
