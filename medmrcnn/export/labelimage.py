"""Label images for 2D inputs (microscopy, single slices): 16/32-bit TIFF or 8/16-bit PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmrcnn.errors import ExportError
from medmrcnn.fileio import atomic_path
from medmrcnn.inference.result import VolumeResult

MAP_KINDS = ("class", "instance")


def write_label_image(result: VolumeResult, path: str | Path, what: str = "instance") -> Path:
    """Write the instance (default) or class map of a one-slice result as .tif/.tiff or .png (0 = background).

    TIFF keeps the map's dtype (uint8/16/32) and records the pixel size (ResolutionUnit centimetre); PNG holds
    up to 16 bits, so more than 65535 instances need TIFF.
    """
    import tifffile
    from PIL import Image

    path = Path(path)
    if what not in MAP_KINDS:
        raise ExportError(f"{path}: what must be one of {MAP_KINDS}; got {what!r}")
    array = (result.class_map if what == "class" else result.instance_map)
    if array.shape[0] != 1:
        raise ExportError(f"{path}: a label image holds one slice; this result has {array.shape[0]} "
                          "(write NIfTI for volumes)")
    array = array[0]
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        _, sy, sx = result.volume.spacing
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, array, compression="zlib", resolution=(10.0 / sx, 10.0 / sy),
                             resolutionunit="CENTIMETER", photometric="minisblack")
        return path
    if suffix == ".png":
        if array.dtype.itemsize > 2:
            raise ExportError(f"{path}: {int(array.max())} labels do not fit a 16-bit PNG; write .tif instead")
        with atomic_path(path) as tmp:
            Image.fromarray(array.astype(np.uint16) if array.dtype.itemsize == 2 else array).save(tmp, format="PNG")
        return path
    raise ExportError(f"{path}: unsupported label image format; use .tif, .tiff or .png")
