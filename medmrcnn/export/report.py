"""The per-instance table of a result as a JSON report (schema below, docs/outputs.md) and as CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medmrcnn.fileio import atomic_write_text
from medmrcnn.inference.result import VolumeResult

SCHEMA_ID = "medmrcnn.report"
SCHEMA_VERSION = 1

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_VEC3 = {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3}

INSTANCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "class_id", "class_name", "score_max", "score_mean", "voxel_count", "volume_ml",
                 "centroid_mm", "bbox", "slice_range", "longest_diameter_mm"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "class_id": {"type": "integer", "minimum": 1},
        "class_name": {"type": "string", "minLength": 1},
        "score_max": {"type": "number", "minimum": 0, "maximum": 1},
        "score_mean": {"type": "number", "minimum": 0, "maximum": 1},
        "voxel_count": {"type": "integer", "minimum": 1},
        "volume_ml": {"type": "number", "minimum": 0},
        "centroid_mm": _VEC3,
        "bbox": {"type": "array", "items": _INT, "minItems": 6, "maxItems": 6},
        "slice_range": {"type": "array", "items": _INT, "minItems": 2, "maxItems": 2},
        "longest_diameter_mm": {"type": "number", "minimum": 0},
        "wall_thickness_mm": {"type": ["number", "null"], "minimum": 0},
    },
}

REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "medmrcnn instance report",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "schema_version", "medmrcnn_version", "created", "input", "labels", "summary",
                 "instances", "run"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "schema_version": {"const": SCHEMA_VERSION},
        "medmrcnn_version": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "input": {
            "type": "object",
            "additionalProperties": False,
            "required": ["source", "series_uid", "modality", "shape_zyx", "spacing_zyx_mm", "affine_lps",
                         "voxel_volume_ml"],
            "properties": {
                "source": {"type": "string"},
                "series_uid": {"type": "string"},
                "modality": {"type": "string"},
                "shape_zyx": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3,
                              "maxItems": 3},
                "spacing_zyx_mm": _VEC3,
                "affine_lps": {"type": "array", "items": {"type": "array", "items": _NUM, "minItems": 4,
                                                          "maxItems": 4}, "minItems": 4, "maxItems": 4},
                "voxel_volume_ml": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "labels": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
        "summary": {
            "type": "object",
            "additionalProperties": False,
            "required": ["n_instances", "per_class"],
            "properties": {
                "n_instances": _INT,
                "per_class": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["count", "volume_ml"],
                        "properties": {"count": _INT, "volume_ml": {"type": "number", "minimum": 0}},
                    },
                },
            },
        },
        "instances": {"type": "array", "items": INSTANCE_SCHEMA},
        "run": {"type": "object"},
    },
}

CSV_COLUMNS = (
    "id", "class_id", "class_name", "score_max", "score_mean", "voxel_count", "volume_ml",
    "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
    "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
    "slice_first", "slice_last", "longest_diameter_mm", "wall_thickness_mm",
)


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def report_dict(result: VolumeResult) -> dict[str, Any]:
    """The JSON report of `result` as a dict that validates against REPORT_SCHEMA."""
    from medmrcnn import __version__

    vol = result.volume
    per_class = {
        name: {"count": len(recs), "volume_ml": float(sum(r.volume_ml for r in recs))}
        for name in result.labels.names
        for recs in [result.instances_of(name)]
    }
    return _plain({
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "medmrcnn_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": {
            "source": vol.source, "series_uid": vol.series_uid, "modality": vol.modality,
            "shape_zyx": list(vol.shape), "spacing_zyx_mm": list(vol.spacing), "affine_lps": vol.affine,
            "voxel_volume_ml": vol.voxel_volume_ml,
        },
        "labels": result.labels.to_dict(),
        "summary": {"n_instances": result.num_instances, "per_class": per_class},
        "instances": [r.to_dict() for r in result.instances],
        "run": result.metadata,
    })


def write_json_report(result: VolumeResult, path: str | Path) -> Path:
    """Write the JSON report (schema: REPORT_SCHEMA, documented in docs/outputs.md) atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(report_dict(result), indent=2) + "\n")
    return path


def csv_rows(result: VolumeResult) -> list[dict[str, Any]]:
    """One dict per instance with the CSV_COLUMNS keys."""
    rows = []
    for r in result.instances:
        rows.append({
            "id": r.id, "class_id": r.class_id, "class_name": r.class_name,
            "score_max": round(r.score_max, 4), "score_mean": round(r.score_mean, 4),
            "voxel_count": r.voxel_count, "volume_ml": round(r.volume_ml, 4),
            "centroid_x_mm": round(r.centroid_mm[0], 2), "centroid_y_mm": round(r.centroid_mm[1], 2),
            "centroid_z_mm": round(r.centroid_mm[2], 2),
            **{f"bbox_{a}": int(v) for a, v in zip(("z0", "y0", "x0", "z1", "y1", "x1"), r.bbox)},
            "slice_first": r.slice_range[0], "slice_last": r.slice_range[1],
            "longest_diameter_mm": round(r.longest_diameter_mm, 2),
            "wall_thickness_mm": "" if r.wall_thickness_mm is None else round(r.wall_thickness_mm, 2),
        })
    return rows


def write_csv(result: VolumeResult, path: str | Path) -> Path:
    """Write the per-instance table as CSV (header row = CSV_COLUMNS; docs/outputs.md) atomically."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(result))
    atomic_write_text(path, buf.getvalue())
    return path
