"""NRRD / MetaImage (.nrrd, .nhdr, .mha, .mhd) via SimpleITK, whose conventions are the data contract's.

`sitk.GetArrayFromImage` is our (z, y, x) array and Direction * Spacing / Origin is our LPS affine; SimpleITK
converts NRRD "space" fields (RAS, ...) to LPS itself. 2D files become one-slice volumes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medmrcnn.errors import ExportError, VolumeLoadError
from medmrcnn.io.colour import rgb_to_single
from medmrcnn.geometry import orientation_code, spacing_zyx
from medmrcnn.io.series import ITK, SeriesInfo, check_dimensions, check_spacing
from medmrcnn.volume import Volume

SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_IMAGE_IO = {".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO", ".mha": "MetaImageIO", ".mhd": "MetaImageIO"}


def is_itk(path: Path) -> bool:
    """True for NRRD / MetaImage names."""
    return path.suffix.lower() in SUFFIXES


def _reader(path: Path) -> sitk.ImageFileReader:
    if not os.access(path, os.R_OK):
        raise VolumeLoadError(path, "permission denied (cannot read the file)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_IMAGE_IO[path.suffix.lower()])
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise VolumeLoadError(path, f"not a readable {path.suffix[1:].upper()} file ({_itk_reason(e)})") from None
    return reader


def _itk_reason(e: RuntimeError) -> str:
    """The informative last line of an ITK exception text."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def _affine(size_dim: int, spacing: tuple, origin: tuple, direction: tuple) -> np.ndarray:
    """3D LPS affine from ITK geometry of dimension 2, 3 or 4 (the 4th axis ignored)."""
    d = np.array(direction, dtype=np.float64).reshape(size_dim, size_dim)
    n = min(size_dim, 3)
    affine = np.eye(4)
    affine[:n, :n] = d[:n, :n] * np.asarray(spacing[:n], dtype=np.float64)[None, :]
    affine[:n, 3] = origin[:n]
    return affine


def scan_itk(path: Path) -> SeriesInfo:
    """Header-only description of an NRRD / MetaImage file."""
    reader = _reader(path)
    dim = reader.GetDimension()
    size = reader.GetSize()
    info = SeriesInfo(kind=ITK, paths=[path], description=path.name, n_files=1)
    if dim not in (2, 3, 4):
        info.error = f"{dim}D image: only 2D, 3D or 4D (one volume chosen with frame=) are supported"
        return info
    comps = reader.GetNumberOfComponents()
    if comps not in (1, 3, 4):
        info.error = f"{comps} components per voxel: only scalar or RGB(A) images are supported"
    info.n_volumes = int(size[3]) if dim == 4 else 1
    info.shape = (int(size[2]) if dim >= 3 else 1, int(size[1]), int(size[0]))
    info.affine = _affine(dim, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    info.orientation = orientation_code(info.affine)
    info.spacing = spacing_zyx(info.affine)
    try:
        check_dimensions(path, info.shape)
        check_spacing(path, info.spacing)
    except VolumeLoadError as e:
        info.error = e.reason
    info.plan = reader
    return info


def load_itk(info: SeriesInfo, frame: int | None = None, rgb: str = "luma") -> Volume:
    """Voxels of a scanned NRRD / MetaImage file as a Volume; `frame` picks one volume of a 4D file."""
    reader: sitk.ImageFileReader = info.plan
    path = info.paths[0]
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise VolumeLoadError(path, f"truncated or corrupt image data ({_itk_reason(e)})") from None
    array = sitk.GetArrayViewFromImage(image)  # (t,) z, y, x (, components)
    metadata: dict[str, object] = {"kind": ITK}
    if image.GetDimension() == 4:
        array = array[frame or 0]
        if frame is not None:
            metadata["frame"] = frame
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = rgb_to_single(array, rgb)
        metadata["rgb_conversion"] = rgb
    array = np.array(array)  # own the memory: the view dies with `image`
    return Volume(array=array, affine=info.affine.copy(), modality="OT", source=str(path),
                  warnings=list(info.warnings), metadata=metadata)


def save_itk(volume: Volume, path: Path, compress: bool = False) -> Path:
    """Write NRRD / MetaImage, dtype kept (bool -> uint8), geometry = Direction*Spacing / Origin of the affine;
    `compress` gzips the voxel data (NRRD encoding gzip, MetaImage zlib), else it is raw.

    ITK picks file layout from the name (.mhd writes a .raw beside it), so the files are written under their final
    names in a temporary folder beside `path` and renamed into place (atomic per file; the header last).
    """
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in volume.spacing_xyz])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection([float(v) for v in volume.direction.ravel()])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        writer = sitk.ImageFileWriter()
        writer.SetImageIO(_IMAGE_IO[path.suffix.lower()])
        writer.SetFileName(str(tmp_dir / path.name))
        writer.SetUseCompression(compress)
        writer.Execute(image)
        written = sorted(tmp_dir.iterdir(), key=lambda p: p.name == path.name)  # data file(s) first, header last
        for f in written:
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(f, path.parent / f.name)
    except RuntimeError as e:
        raise ExportError(f"{path}: cannot write image ({_itk_reason(e)})") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
