"""Cell outlines for Fiji (ImageJ ROI zip, via roifile) and QuPath (GeoJSON FeatureCollection).

Outlines are traced per instance per slice with marching squares (skimage.measure.find_contours at 0.5 on the
mask) and written in pixel coordinates with (0, 0) at the top-left corner of the first pixel, the convention both
Fiji and QuPath use: a pixel centre is (x + 0.5, y + 0.5). An instance in several pieces on one slice keeps its
largest piece's outline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medmrcnn.errors import ExportError
from medmrcnn.fileio import atomic_path
from medmrcnn.inference.result import VolumeResult


def trace_outline(mask: np.ndarray) -> np.ndarray:
    """float64[K, 2] closed outline (x, y) in corner-origin pixel coordinates of a (y, x) bool mask's largest piece.

    The first point is not repeated at the end; an empty mask gives an empty (0, 2) array.
    """
    from skimage.measure import find_contours

    if not mask.any():
        return np.zeros((0, 2))
    padded = np.pad(mask, 1).astype(np.float32)
    contours = find_contours(padded, 0.5)
    longest = max(contours, key=len)
    yx = longest[:-1] if np.allclose(longest[0], longest[-1]) else longest
    return yx[:, ::-1] - 1.0 + 0.5  # undo the padding; corner-origin pixel coordinates


def iter_outlines(result: VolumeResult) -> Iterator[tuple[int, int, np.ndarray]]:
    """(instance id, slice z, outline (x, y) float[K, 2]) for every instance on every slice it covers, in id order."""
    imap = result.instance_map
    for k, box in enumerate(ndimage.find_objects(imap), start=1):
        if box is None:
            continue
        z0, (ys, xs) = box[0].start, box[1:]
        for dz, plane in enumerate(imap[box] == k):
            if plane.any():
                outline = trace_outline(plane)
                if len(outline) >= 3:
                    yield k, z0 + dz, outline + np.array([xs.start, ys.start], dtype=np.float64)


def write_imagej_rois(result: VolumeResult, path: str | Path) -> Path:
    """Write every cell outline as a sub-pixel polygon ROI into an ImageJ / Fiji ROI zip (ROI Manager > Open).

    ROIs are named "cell-<id>" ("cell-<id>-z<z>" in a stack, with the slice as the ROI position).
    """
    import roifile

    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ExportError(f"{path}: an ImageJ ROI set is a .zip file")
    stack = result.instance_map.shape[0] > 1
    rois = []
    for k, z, outline in iter_outlines(result):
        name = f"cell-{k}-z{z}" if stack else f"cell-{k}"
        roi = roifile.ImagejRoi.frompoints(outline, name=name, position=z if stack else None)
        roi.roitype = roifile.ROI_TYPE.POLYGON
        rois.append(roi)
    with atomic_path(path) as tmp:
        tmp.unlink()  # roiwrite appends to an existing zip
        if rois:
            roifile.roiwrite(tmp, rois)
        else:  # an empty but valid zip: nothing was found
            import zipfile

            zipfile.ZipFile(tmp, "w").close()
    return path


def geojson_features(result: VolumeResult) -> Iterator[dict[str, Any]]:
    """QuPath-style GeoJSON features, one "detection" Polygon per cell (per slice in a stack), in id order.

    Properties: objectType "detection", classification {name}, and measurements (id, score, slice).
    """
    records = {r.id: r for r in result.instances}
    for k, z, outline in iter_outlines(result):
        ring = np.vstack([outline, outline[:1]]).round(3).tolist()
        rec = records.get(k)
        props: dict[str, Any] = {"objectType": "detection", "name": f"cell-{k}",
                                 "measurements": {"id": k, "score": round(rec.score_max, 4) if rec else None}}
        if rec is not None:
            props["classification"] = {"name": rec.class_name}
        if result.instance_map.shape[0] > 1:
            props["measurements"]["z"] = z
        yield {"type": "Feature", "id": f"cell-{k}-z{z}", "geometry": {"type": "Polygon", "coordinates": [ring]},
               "properties": props}


def geojson_dict(result: VolumeResult) -> dict[str, Any]:
    """The QuPath-style GeoJSON FeatureCollection of `geojson_features` as one dict (for a server's response)."""
    return {"type": "FeatureCollection", "features": list(geojson_features(result))}


def write_geojson(result: VolumeResult, path: str | Path) -> Path:
    """Write the cell outlines as a GeoJSON FeatureCollection for QuPath (File > Import objects), atomically.

    Features are written one at a time: tens of thousands of cells (a whole-slide image) never sit in memory as
    one document."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write('{"type": "FeatureCollection", "features": [')
        for n, feature in enumerate(geojson_features(result)):
            f.write((", " if n else "") + json.dumps(feature))
        f.write("]}\n")
    return path
