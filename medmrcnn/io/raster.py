"""PNG / TIFF microscopy and pathology tiles as one-slice volumes (modality "SM").

Grey images keep their dtype (uint8, uint16, float TIFF). RGB(A) becomes one channel for the 1-channel model with
`rgb_to_single` (BT.601 luma by default; alpha ignored). Pixel size comes from TIFF resolution tags in centimetres
or ImageJ micron metadata; otherwise (PNG, DPI-only TIFF) 1 mm pixels are assumed and a warning says so.
Multi-page / multi-plane TIFFs have one plane chosen with `frame=`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medmrcnn.errors import VolumeLoadError
from medmrcnn.io.colour import rgb_to_single
from medmrcnn.io.series import RASTER, SeriesInfo, check_dimensions, one_line
from medmrcnn.volume import Volume, affine_from_geometry

SUFFIXES = (".png", ".tif", ".tiff")
_MICRON_UNITS = {"micron", "um", "\u00b5m", "\\u00B5m", "microns"}


def is_raster(path: Path) -> bool:
    """True for PNG / TIFF names."""
    return path.suffix.lower() in SUFFIXES


def _tiff_pixel_size_mm(tif, page) -> float | None:
    """Pixel size in mm from ImageJ metadata (unit micron) or resolution tags in centimetres; None if unknown."""
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    num, den = tag.value
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    ij = tif.imagej_metadata or {}
    if str(ij.get("unit", "")).lower() in _MICRON_UNITS:
        return 1e-3 / per_unit
    unit = page.tags.get("ResolutionUnit")
    if unit is not None and int(unit.value) == 3:  # centimetre
        return 10.0 / per_unit
    return None  # inch resolution is a print setting (72/300 dpi), not a physical pixel size


def scan_raster(path: Path) -> SeriesInfo:
    """Header-only description of a PNG / TIFF file."""
    if not os.access(path, os.R_OK):
        raise VolumeLoadError(path, "permission denied (cannot read the file)")
    info = SeriesInfo(kind=RASTER, paths=[path], modality="SM", description=path.name, n_files=1)
    pixel_mm = None
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                width, height = im.size
                info.plan = {"mode": im.mode}
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape = series.axes, series.shape
                pixel_mm = _tiff_pixel_size_mm(tif, tif.pages[0])
                n_pages = len(tif.pages)
            plane_axes = 3 if axes.endswith("S") else 2
            height, width = shape[-plane_axes], shape[-plane_axes + 1]
            info.n_volumes = int(np.prod(shape[:-plane_axes], dtype=np.int64))
            info.plan = {"axes": axes, "pages": n_pages}
    except VolumeLoadError:
        raise
    except Exception as e:  # Pillow / tifffile raise many types on corrupt files
        raise VolumeLoadError(path, f"not a readable {path.suffix[1:].upper()} image ({one_line(e)})") \
            from None
    if pixel_mm is None:
        info.warnings.append("pixel size unknown: 1 mm pixels assumed")
    s = pixel_mm or 1.0
    info.shape, info.spacing, info.orientation = (1, int(height), int(width)), (s, s, s), "LPS"
    info.affine = affine_from_geometry((s, s, s), (0.0, 0.0, 0.0))
    try:
        check_dimensions(path, info.shape)
    except VolumeLoadError as e:
        info.error = e.reason
    return info


def load_raster(info: SeriesInfo, frame: int | None = None, rgb: str = "luma") -> Volume:
    """Pixels of a scanned PNG / TIFF as a (1, y, x) Volume; `frame` picks one plane of a multi-plane TIFF."""
    path = info.paths[0]
    metadata: dict[str, object] = {"kind": RASTER}
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode in ("LA", "PA"):
                    im = im.convert("L")
                data = np.asarray(im)
        else:
            import tifffile

            if info.n_volumes > 1 and info.plan["pages"] == info.n_volumes:
                data = tifffile.imread(path, key=frame or 0)
            else:
                data = tifffile.imread(path)
                if info.n_volumes > 1:
                    plane_axes = 3 if info.plan["axes"].endswith("S") else 2
                    data = data.reshape((-1,) + data.shape[-plane_axes:])[frame or 0]
    except Exception as e:
        raise VolumeLoadError(path, f"truncated or corrupt image data ({one_line(e)})") from None
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = rgb_to_single(data, rgb)
        metadata["rgb_conversion"] = rgb
    if data.ndim != 2:
        raise VolumeLoadError(path, f"unsupported image layout {data.shape}: expected grey or RGB(A) pixels")
    if info.n_volumes > 1:
        metadata["frame"] = frame or 0
    return Volume(array=np.ascontiguousarray(data)[None], affine=info.affine.copy(), modality="SM",
                  source=str(path), warnings=list(info.warnings), metadata=metadata)
