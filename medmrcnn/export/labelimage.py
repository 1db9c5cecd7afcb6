"""Label images for microscopy and single slices: ImageJ / OME TIFF (2D or z-stacks, µm pixel size) or PNG (2D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmrcnn.errors import ExportError
from medmrcnn.fileio import atomic_path
from medmrcnn.inference.result import VolumeResult

MAP_KINDS = ("class", "instance")


def write_label_image(result: VolumeResult, path: str | Path, what: str = "instance") -> Path:
    """Write the instance (default) or class map as .tif/.tiff (2D or a z-stack) or .png (2D); 0 = background.

    TIFF keeps the map's dtype. uint8/uint16 maps are ImageJ hyperstacks (axes ZYX / YX, unit micron, pixel size in
    the resolution tags, z step as `spacing`), which Fiji opens calibrated; uint32 maps (more than 65535 cells),
    which ImageJ cannot hold, are OME-TIFF with PhysicalSizeX/Y/Z in µm. PNG holds up to 16 bits and one slice.
    """
    import tifffile
    from PIL import Image

    path = Path(path)
    if what not in MAP_KINDS:
        raise ExportError(f"{path}: what must be one of {MAP_KINDS}; got {what!r}")
    array = (result.class_map if what == "class" else result.instance_map)
    sz, sy, sx = (s * 1000.0 for s in result.volume.spacing)  # µm
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        stack = array.shape[0] > 1
        data = array if stack else array[0]
        with atomic_path(path) as tmp:
            if data.dtype.itemsize <= 2:
                metadata = {"axes": "ZYX" if stack else "YX", "unit": "um"} | ({"spacing": sz} if stack else {})
                tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / sx, 1.0 / sy), metadata=metadata,
                                 compression="zlib", photometric="minisblack")
            else:
                metadata = {"axes": "ZYX" if stack else "YX", "PhysicalSizeX": sx, "PhysicalSizeY": sy,
                            "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}
                if stack:
                    metadata |= {"PhysicalSizeZ": sz, "PhysicalSizeZUnit": "µm"}
                tifffile.imwrite(tmp, data, ome=True, metadata=metadata, compression="zlib",
                                 photometric="minisblack")
        return path
    if suffix == ".png":
        if array.shape[0] != 1:
            raise ExportError(f"{path}: a PNG label image holds one slice; this result has {array.shape[0]} "
                              "(write .tif for z-stacks)")
        if array.dtype.itemsize > 2:
            raise ExportError(f"{path}: {int(array.max())} labels do not fit a 16-bit PNG; write .tif instead")
        with atomic_path(path) as tmp:
            Image.fromarray(array[0]).save(tmp, format="PNG")
        return path
    raise ExportError(f"{path}: unsupported label image format; use .tif, .tiff or .png")
