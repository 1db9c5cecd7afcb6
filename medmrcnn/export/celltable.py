"""Per-cell table for microscopy results in microns: area (2D) or volume (3D), centroid, mean intensity per channel.

Columns (CSV, one row per cell, in id order): id, class_name, score, pixels, area_um2 (2D) or volume_um3 (3D),
centroid_x_um / centroid_y_um (/ centroid_z_um), centroid_x_px / centroid_y_px (/ centroid_z_px, pixel-centre
indices), bbox_* (voxel indices, end exclusive), then mean_intensity_ch<c> for every channel of the input (the
raw values as read: one column for a grey image, one per channel of a multi-channel or RGB image).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.fileio import atomic_write_text
from medmrcnn.inference.result import VolumeResult


def _channels(result: VolumeResult) -> np.ndarray:
    """(C, z, y, x) intensities: every channel the loader kept, else the segmented image itself."""
    channels = result.volume.metadata.get("channels")
    if channels is not None and tuple(np.shape(channels)[1:]) == result.volume.shape:
        return np.asarray(channels)
    return result.volume.array[None]


def cell_rows(result: VolumeResult) -> list[dict[str, Any]]:
    """One dict per cell (keys as the module docstring lists), sizes in µm (volume spacing mm x 1000)."""
    imap = result.instance_map
    if not result.instances:
        return []
    sz, sy, sx = (s * 1000.0 for s in result.volume.spacing)
    is_3d = imap.shape[0] > 1
    channels = _channels(result)
    # Per cell, inside its own bounding box: no temporary as large as the image (whole-slide images).
    counts, centroids, means = [], [], []
    for rec in result.instances:
        z0, y0, x0, z1, y1, x1 = rec.bbox
        mine = imap[z0:z1, y0:y1, x0:x1] == rec.id
        where = np.nonzero(mine)
        counts.append(len(where[0]))
        centroids.append([float(np.mean(w)) + o for w, o in zip(where, (z0, y0, x0))])
        means.append([float(np.mean(ch[z0:z1, y0:y1, x0:x1][mine], dtype=np.float64)) for ch in channels])
    means = np.array(means).T
    rows = []
    for i, rec in enumerate(result.instances):
        cz, cy, cx = centroids[i]
        row: dict[str, Any] = {"id": rec.id, "class_name": rec.class_name, "score": round(rec.score_max, 4),
                               "pixels": int(counts[i])}
        if is_3d:
            row["volume_um3"] = round(float(counts[i]) * sz * sy * sx, 4)
        else:
            row["area_um2"] = round(float(counts[i]) * sy * sx, 4)
        row.update({"centroid_x_um": round(cx * sx, 4), "centroid_y_um": round(cy * sy, 4)})
        if is_3d:
            row["centroid_z_um"] = round(cz * sz, 4)
        row.update({"centroid_x_px": round(cx, 3), "centroid_y_px": round(cy, 3)})
        if is_3d:
            row["centroid_z_px"] = round(cz, 3)
        z0, y0, x0, z1, y1, x1 = rec.bbox
        row.update({"bbox_x0": x0, "bbox_y0": y0, "bbox_x1": x1, "bbox_y1": y1})
        if is_3d:
            row.update({"bbox_z0": z0, "bbox_z1": z1})
        row.update({f"mean_intensity_ch{c}": round(float(m[i]), 4) for c, m in enumerate(means)})
        rows.append(row)
    return rows


def write_cell_table(result: VolumeResult, path: str | Path) -> Path:
    """Write the per-cell table as CSV atomically (header only when no cell was found)."""
    path = Path(path)
    rows = cell_rows(result)
    columns = list(rows[0]) if rows else ["id", "class_name", "score", "pixels",
                                          "volume_um3" if result.instance_map.shape[0] > 1 else "area_um2"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return path
