"""PNG montage for a human reader: the slices with the most findings, each instance coloured, outlined and labelled.

Slices are shown as stored (row 0 at the top, column 0 on the left: for an axial LPS series that is the
radiological view, patient right on the image left), stretched so pixels keep their physical aspect ratio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from medmrcnn.errors import ExportError
from medmrcnn.fileio import atomic_path
from medmrcnn.inference.result import VolumeResult
from medmrcnn.transforms import parse_ct_window, percentile_normalise, resolve_intensity, window

# Distinct, colour-blind-aware hues (Okabe-Ito, then Tableau) cycled by instance id.
PALETTE = np.array([
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0), (204, 121, 167),
    (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207),
], dtype=np.uint8)
TILE_HEIGHT = 320
FILL_ALPHA = 0.35
MAX_LEGEND = 40  # cells can number hundreds: the tables hold them all, the picture lists the first ones


def instance_colour(instance_id: int) -> tuple[int, int, int]:
    """RGB colour of an instance id (the same id always gets the same colour)."""
    return tuple(int(c) for c in PALETTE[(instance_id - 1) % len(PALETTE)])  # type: ignore[return-value]


def slices_with_most_findings(result: VolumeResult, n: int) -> list[int]:
    """Up to n slice indices, most instances first (then most labelled voxels), returned in z order.

    Without findings: n slices spread evenly through the volume.
    """
    nz = result.volume.shape[0]
    counts = np.zeros(nz, dtype=np.int64)
    for r in result.instances:
        counts[r.slice_range[0]:r.slice_range[1] + 1] += 1
    candidates = np.flatnonzero(counts)
    if not len(candidates):
        return sorted({int(round(v)) for v in np.linspace(0, nz - 1, min(n, nz))})
    area = np.array([np.count_nonzero(result.instance_map[z]) for z in candidates])
    order = np.lexsort((candidates, -area, -counts[candidates]))  # last key sorts first
    return sorted(int(candidates[i]) for i in order[:n])


def display_stride(shape_yx: tuple[int, int]) -> int:
    """Pixel step that still leaves at least twice the tile's height: a whole-slide image (8000 x 8000 px) is
    subsampled before any float copy, so the montage's memory does not grow with the image."""
    return max(1, min(shape_yx) // (2 * TILE_HEIGHT))


def _display_slices(result: VolumeResult, zs: list[int]) -> np.ndarray:
    """float32 (len(zs), y, x) in [0, 1], subsampled by `display_stride`: the intensity preset the prediction used,
    else the modality default."""
    vol = result.volume
    preset = resolve_intensity(str(result.metadata.get("intensity", "auto")), vol.modality)
    step = display_stride(vol.shape[1:])
    stack = vol.array[zs, ::step, ::step]
    if preset == "percentile":
        return percentile_normalise(stack)
    return window(stack, *parse_ct_window(preset))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _tile(result: VolumeResult, z: int, grey: np.ndarray) -> Image.Image:
    """One annotated slice: translucent fill, solid outline and an "id class" tag per instance (tags only up to
    MAX_LEGEND instances: beyond that they would cover the picture; the tables list every cell)."""
    step = display_stride(result.volume.shape[1:])
    labels = result.instance_map[z, ::step, ::step]
    _, sy, sx = result.volume.spacing
    h, w = labels.shape
    scale = TILE_HEIGHT / h
    size = (max(1, round(w * scale * sx / sy)), TILE_HEIGHT)
    img = Image.fromarray((grey * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR).convert("RGB")
    lab = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(size, Image.Resampling.NEAREST))
    rgb = np.asarray(img).astype(np.float32)
    ids = [int(i) for i in np.unique(lab) if i]
    colours = np.zeros((int(lab.max(initial=0)) + 1, 3), dtype=np.float32)
    for i in ids:
        colours[i] = instance_colour(i)
    fg = lab > 0
    rgb[fg] = (1 - FILL_ALPHA) * rgb[fg] + FILL_ALPHA * colours[lab[fg]]
    edge = fg & (ndimage.grey_erosion(lab, size=3) != ndimage.grey_dilation(lab, size=3))
    rgb[edge] = colours[lab[edge]]
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    font = _font(13)
    names = {r.id: r.class_name for r in result.instances}
    placed: list[tuple[int, int, int, int]] = []
    for i in ids if len(ids) <= MAX_LEGEND else []:
        ys, xs = np.nonzero(lab == i)
        text = f"{i} {names.get(i, '')}".strip()
        x, y = int(xs.min()), max(int(ys.min()) - 16, 0)
        box = draw.textbbox((x, y), text, font=font)
        while any(_overlap(box, other) for other in placed):  # nested objects: stack tags instead of hiding them
            y = max(box[3] for other in placed if _overlap(box, other)) + 1
            box = draw.textbbox((x, y), text, font=font)
        placed.append(box)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((x, y), text, fill=instance_colour(i), font=font)
    draw.text((4, 4), f"slice {z}  ({len(ids)} finding{'s' if len(ids) != 1 else ''})", fill=(255, 255, 255),
              font=_font(14))
    return img


def write_overlay_png(result: VolumeResult, path: str | Path, n_slices: int = 6, columns: int = 3) -> Path:
    """Write a montage of the `n_slices` slices with the most findings (z order), with a legend of the instances.

    Each instance has one colour across tiles and its "id class" tag; the legend lists id, class, volume (mL)
    and longest axial diameter (mm).
    """
    path = Path(path)
    if n_slices < 1 or columns < 1:
        raise ExportError(f"{path}: n_slices and columns must be >= 1")
    zs = slices_with_most_findings(result, n_slices)
    grey = _display_slices(result, zs)
    tiles = [_tile(result, z, g) for z, g in zip(zs, grey)]
    tw, th = max(t.width for t in tiles), TILE_HEIGHT
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    line = 18
    listed = result.instances[:MAX_LEGEND]
    legend = [f"{r.id:>3}  {r.class_name:<12} {r.volume_ml:9.2f} mL  {r.longest_diameter_mm:7.1f} mm  "
              f"slices {r.slice_range[0]}-{r.slice_range[1]}" for r in listed] or ["no findings"]
    if len(result.instances) > MAX_LEGEND:
        legend.append(f"... and {len(result.instances) - MAX_LEGEND} more (see the JSON / CSV report)")
    legend_cols = max(1, (cols * tw) // 380)
    legend_rows = -(-len(legend) // legend_cols)
    canvas = Image.new("RGB", (cols * tw, rows * th + 8 + legend_rows * line), (16, 16, 16))
    for k, tile in enumerate(tiles):
        canvas.paste(tile, ((k % cols) * tw, (k // cols) * th))
    draw = ImageDraw.Draw(canvas)
    font = _font(13)
    for k, text in enumerate(legend):
        x, y = (k // legend_rows) * 380 + 6, rows * th + 4 + (k % legend_rows) * line
        colour = instance_colour(listed[k].id) if k < len(listed) else (200, 200, 200)
        draw.text((x, y), text, fill=colour, font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
