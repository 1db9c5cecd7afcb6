"""Label maps -> instances: semantic maps split into per-slice connected components, instance maps with a class table."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from medmrcnn.errors import DataError
from medmrcnn.labels import LabelMap

# In-plane 8-connectivity only: components never join across slices (instances are per slice for a 2D model).
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = True


def class_lookup(labels: LabelMap, label_values: Mapping[int, str] | None, source: str) -> dict[int, int]:
    """Label-map value -> class id of `labels`: `label_values` {value: name} or the identity on 1..N."""
    if label_values is None:
        return {i: i for i in range(1, labels.num_classes)}
    out = {}
    for value, name in label_values.items():
        if name not in labels.names:
            raise DataError(
                f"{source}: label_values maps {value} to {name!r}, which is not a model label {list(labels.names)}"
            )
        out[int(value)] = labels.id_of(name)
    return out


def semantic_to_instances(
    class_map: np.ndarray, lookup: Mapping[int, int], source: str
) -> tuple[np.ndarray, dict[int, int]]:
    """Split a semantic (z, y, x) label map into per-slice connected components (8-connected in-plane).

    Returns (uint32 instance map, instance id -> class id). Values other than 0 missing from `lookup` raise DataError.
    """
    values = np.unique(class_map)
    unknown = sorted(int(v) for v in values if v != 0 and int(v) not in lookup)
    if unknown:
        raise DataError(f"{source}: label values {unknown[:8]} are not in the label map (known: {sorted(lookup)})")
    instances = np.zeros(class_map.shape, dtype=np.uint32)
    classes: dict[int, int] = {}
    offset = 0
    for value in values:
        if value == 0:
            continue
        comp, n = ndimage.label(class_map == value, structure=_IN_PLANE)
        inside = comp > 0
        instances[inside] = comp[inside] + offset
        classes.update({offset + i: lookup[int(value)] for i in range(1, n + 1)})
        offset += n
    return instances, classes


def instance_classes(
    table: Mapping[int | str, str], labels: LabelMap, source: str
) -> dict[int, int]:
    """Instance id -> class id from a class table {instance id: class name} (JSON keys may be strings)."""
    out = {}
    for inst, name in table.items():
        if name not in labels.names:
            raise DataError(
                f"{source}: class table names {name!r} for instance {inst}, not a model label {list(labels.names)}"
            )
        out[int(inst)] = labels.id_of(name)
    return out
