"""PNG / TIFF / OME-TIFF / ImageJ-TIFF microscopy and pathology images as volumes (modality "SM").

A TIFF's axes decide the volume (tifffile's axis letters): Z (or an unnamed Q / I stack axis) becomes the volume's
z, so a Z x Y x X stack is one 3D volume; T and any other axis are frames (`frame=` picks one, never squashed);
C is channels (`channel=` picks the one segmented, like Cellpose's --chan; default 0 with a warning when there
are several). RGB(A) samples become one channel with `rgb_to_single` (BT.601 luma by default; alpha ignored)
unless `channel=` names one. Every channel of the chosen frame is kept in `Volume.metadata["channels"]`
(C, z, y, x) for per-channel measurements.

Pixel size comes from OME-XML PhysicalSize{X,Y,Z} (+ units), ImageJ metadata (unit and z `spacing`) with the
resolution tags, or resolution tags in centimetres; otherwise (PNG, DPI-only TIFF) 1 mm pixels are assumed and a
warning says so. Sizes are stored in mm like every Volume; `metadata["pixel_size_um"]` holds (z, y, x) in µm.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.errors import VolumeLoadError
from medmrcnn.io.colour import rgb_to_single
from medmrcnn.io.series import RASTER, SeriesInfo, check_dimensions, one_line
from medmrcnn.volume import Volume, affine_from_geometry

SUFFIXES = (".png", ".tif", ".tiff")
# Unit name -> millimetres (ImageJ writes "micron" or an escaped mu; OME uses the symbol).
_UNIT_MM = {"micron": 1e-3, "microns": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "\\u00b5m": 1e-3, "\u03bcm": 1e-3,
            "nm": 1e-6, "nanometer": 1e-6, "mm": 1.0, "millimeter": 1.0, "cm": 10.0, "m": 1e3}
_Z_AXES = "ZQI"  # Q / I: an unnamed stack of planes (plain multi-page TIFF), read as z


def is_raster(path: Path) -> bool:
    """True for PNG / TIFF names."""
    return path.suffix.lower() in SUFFIXES


def _unit_mm(unit: object) -> float | None:
    return _UNIT_MM.get(str(unit).strip().lower())


def _ome_pixel_size_mm(tif: Any) -> tuple[float | None, float | None, float | None]:
    """(z, y, x) pixel size in mm from OME-XML Pixels attributes; None where absent."""
    try:
        pixels = ET.fromstring(tif.ome_metadata).find(".//{*}Pixels")
    except ET.ParseError:
        return None, None, None
    if pixels is None:
        return None, None, None
    out = []
    for axis in "ZYX":
        value, unit = pixels.get(f"PhysicalSize{axis}"), _unit_mm(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        out.append(float(value) * unit if value is not None and unit is not None and float(value) > 0 else None)
    return out[0], out[1], out[2]


def _tiff_pixel_size_mm(tif: Any, page: Any) -> tuple[float | None, float | None, float | None]:
    """(z, y, x) pixel size in mm from OME-XML, ImageJ metadata or centimetre resolution tags; None if unknown."""
    if tif.is_ome and tif.ome_metadata:
        z, y, x = _ome_pixel_size_mm(tif)
        if x is not None:
            return z, y if y is not None else x, x
    ij = tif.imagej_metadata or {}
    unit = _unit_mm(ij.get("unit", "")) if ij else None
    spacing = ij.get("spacing")
    z = float(spacing) * unit if unit is not None and spacing else None
    size = []
    for name in ("YResolution", "XResolution"):
        tag = page.tags.get(name)
        num, den = tag.value if tag is not None else (0, 0)
        per_unit = num / den if num and den else None
        if per_unit is None:
            size.append(None)
        elif unit is not None:
            size.append(unit / per_unit)
        elif (u := page.tags.get("ResolutionUnit")) is not None and int(u.value) == 3:  # centimetre
            size.append(10.0 / per_unit)
        else:
            size.append(None)  # inch resolution is a print setting (72/300 dpi), not a physical pixel size
    y, x = size
    if x is None:
        return z, None, None
    return z, y if y is not None else x, x


def _layout(axes: str, shape: tuple[int, ...], rgb_photometric: bool) -> dict[str, Any]:
    """How tifffile's axes map onto (frames, channels, z, y, x[, samples]); raises ValueError when they cannot."""
    if "Y" not in axes or "X" not in axes or axes.index("Y") > axes.index("X"):
        raise ValueError(f"axes {axes!r} have no Y x X plane")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} repeat a letter")
    sizes = dict(zip(axes, shape))
    rgb = "S" in axes and rgb_photometric and sizes["S"] in (3, 4)
    z_axis = next((a for a in _Z_AXES if a in axes), None)
    channel_axes = "C" + ("" if rgb else "S")
    frame_axes = "".join(a for a in axes if a not in "YX" and a != z_axis and a not in channel_axes and a != "S")
    n_channels = int(np.prod([sizes[a] for a in channel_axes if a in axes], dtype=np.int64))
    return {
        "axes": axes, "rgb": bool(rgb), "z_axis": z_axis, "frame_axes": frame_axes,
        "channel_axes": "".join(a for a in channel_axes if a in axes), "n_channels": n_channels,
        "n_frames": int(np.prod([sizes[a] for a in frame_axes], dtype=np.int64)),
        "nz": int(sizes[z_axis]) if z_axis else 1, "height": int(sizes["Y"]), "width": int(sizes["X"]),
    }


def _canonical(data: np.ndarray, layout: dict[str, Any]) -> np.ndarray:
    """(frames, channels, z, y, x[, samples]) view of the array tifffile returned in `layout["axes"]` order."""
    axes = layout["axes"]
    order = [axes.index(a) for a in layout["frame_axes"]] + [axes.index(a) for a in layout["channel_axes"]]
    order += [axes.index(layout["z_axis"])] if layout["z_axis"] else []
    order += [axes.index("Y"), axes.index("X")] + ([axes.index("S")] if layout["rgb"] else [])
    data = np.transpose(data, order)
    plane = (layout["height"], layout["width"]) + ((data.shape[-1],) if layout["rgb"] else ())
    return data.reshape((layout["n_frames"], layout["n_channels"], layout["nz"]) + plane)


def scan_raster(path: Path) -> SeriesInfo:
    """Header-only description of a PNG / TIFF file."""
    if not os.access(path, os.R_OK):
        raise VolumeLoadError(path, "permission denied (cannot read the file)")
    info = SeriesInfo(kind=RASTER, paths=[path], modality="SM", description=path.name, n_files=1)
    z_mm = y_mm = x_mm = None
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                width, height = im.size
                layout = {"png": True, "mode": im.mode, "nz": 1, "n_frames": 1, "n_channels": 1}
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                page = tif.pages[0]
                rgb_photometric = int(getattr(page, "photometric", 1)) == 2
                layout = _layout(series.axes, tuple(series.shape), rgb_photometric)
                z_mm, y_mm, x_mm = _tiff_pixel_size_mm(tif, page)
            height, width = layout["height"], layout["width"]
            info.n_volumes = layout["n_frames"]
    except VolumeLoadError:
        raise
    except Exception as e:  # Pillow / tifffile raise many types on corrupt files
        raise VolumeLoadError(path, f"not a readable {path.suffix[1:].upper()} image ({one_line(e)})") \
            from None
    if x_mm is None:
        info.warnings.append("pixel size unknown: 1 mm pixels assumed")
    x_mm = x_mm or 1.0
    y_mm = y_mm or x_mm
    if layout["nz"] > 1 and z_mm is None:
        info.warnings.append("z step unknown: taken equal to the pixel width (isotropic voxels)")
    z_mm = z_mm or x_mm
    if layout["n_channels"] > 1:
        info.warnings.append(f"{layout['n_channels']} channels: channel 0 is segmented unless another is chosen "
                             "(channel=, CLI --channel)")
    info.plan = layout
    info.shape = (layout["nz"], int(height), int(width))
    info.spacing, info.orientation = (z_mm, y_mm, x_mm), "LPS"
    info.affine = affine_from_geometry((x_mm, y_mm, z_mm), (0.0, 0.0, 0.0))
    try:
        check_dimensions(path, info.shape)
    except VolumeLoadError as e:
        info.error = e.reason
    return info


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("LA", "PA"):
            im = im.convert("L")
        data = np.asarray(im)
    return data.reshape((1, 1, 1) + data.shape)  # (frames, channels, z, y, x[, samples])


def load_raster(info: SeriesInfo, frame: int | None = None, rgb: str = "luma", channel: int | None = None
                ) -> Volume:
    """Pixels of a scanned PNG / TIFF as a (z, y, x) Volume.

    Args:
        info: what `scan_raster` found.
        frame: which frame (T or other non-spatial axis) of a hyperstack.
        rgb: how RGB samples become one channel ("luma", "r", "g", "b") when `channel` is None.
        channel: index of the channel (C axis, or RGB sample) to segment; None = 0 (or luma for RGB).
    """
    path = info.paths[0]
    layout = info.plan
    metadata: dict[str, Any] = {"kind": RASTER}
    try:
        if layout.get("png"):
            data = _read_png(path)
            is_rgb = data.ndim == 6 and data.shape[-1] in (3, 4)
        else:
            import tifffile

            data = _canonical(tifffile.imread(path), layout)
            is_rgb = layout["rgb"]
    except Exception as e:
        raise VolumeLoadError(path, f"truncated or corrupt image data ({one_line(e)})") from None
    if data.dtype == bool:
        data = data.astype(np.uint8)
    stack = data[frame or 0]  # (channels, z, y, x[, samples])
    if is_rgb:
        stack = np.moveaxis(stack[0][..., :3], -1, 0)  # the RGB samples are the channels
    n_channels = stack.shape[0]
    if channel is not None and not 0 <= channel < n_channels:
        raise VolumeLoadError(path, f"channel {channel} out of range: the image has {n_channels} channel(s) "
                                    f"(0..{n_channels - 1})")
    if is_rgb and channel is None:
        array = rgb_to_single(np.moveaxis(stack, 0, -1), rgb)
        metadata["rgb_conversion"] = rgb
    else:
        array = stack[channel or 0]
    if array.ndim != 3:
        raise VolumeLoadError(path, f"unsupported image layout {data.shape}: expected grey or RGB(A) pixels")
    if n_channels > 1:
        metadata["channels"] = np.ascontiguousarray(stack)
        metadata["channel"] = channel
    if info.n_volumes > 1:
        metadata["frame"] = frame or 0
    if layout.get("axes"):
        metadata["axes"] = layout["axes"]
    metadata["pixel_size_um"] = [round(s * 1000.0, 9) for s in info.spacing]
    warnings = [w for w in info.warnings if channel is None or "channels:" not in w]
    return Volume(array=np.ascontiguousarray(array), affine=info.affine.copy(), modality="SM",
                  source=str(path), warnings=warnings, metadata=metadata)
