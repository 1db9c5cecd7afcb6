"""MONAI interop: `Volume` <-> `MetaTensor` and a `LoadVolumed` dictionary transform for `monai.transforms.Compose`.

MONAI images are channel-first (C, i, j, k) with i = x (column), j = y (row), k = z (slice), and a RAS affine in
`meta["affine"]` (`meta["space"] == "RAS"`). Our arrays are (z, y, x) with an LPS affine (docs/data-contract.md), so:
MetaTensor[0] = array.transpose(2, 1, 0) and affine_RAS = diag(-1, -1, 1, 1) @ affine_LPS. This module is the one
place that converts. DICOM headers (`source_datasets`) do not travel in the meta dict (they would not collate in a
DataLoader); keep the Volume for DICOM-SEG export.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys, SpaceKeys

from medmrcnn.geometry import RAS_TO_LPS
from medmrcnn.errors import DataError
from medmrcnn.io.loading import load_volume
from medmrcnn.volume import Volume



def volume_to_metatensor(volume: Volume) -> MetaTensor:
    """MetaTensor of shape (1, x, y, z) with RAS affine, `spatial_shape`, `filename_or_obj`, modality, series UID."""
    array = np.ascontiguousarray(volume.array.transpose(2, 1, 0))[None]
    affine = RAS_TO_LPS @ volume.affine
    meta = {
        MetaKeys.AFFINE: torch.as_tensor(affine, dtype=torch.float64),
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape[1:]),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan"),  # the channel was added here, as EnsureChannelFirst does
        "filename_or_obj": volume.source,
        "modality": volume.modality,
        "series_uid": volume.series_uid,
    }
    return MetaTensor(torch.from_numpy(array), meta=meta)


def _affine_lps(tensor: MetaTensor, spatial_dims: int) -> np.ndarray:
    affine = tensor.affine.detach().cpu().numpy().astype(np.float64)
    if affine.shape == (3, 3) and spatial_dims == 2:  # 2D MetaTensor: (x, y) affine; add a unit z axis
        full = np.eye(4)
        full[:2, :2], full[:2, 3] = affine[:2, :2], affine[:2, 2]
        affine = full
    if affine.shape != (4, 4):
        raise DataError(f"MetaTensor affine of shape {affine.shape} does not fit {spatial_dims} spatial dims")
    space = str(tensor.meta.get(MetaKeys.SPACE, SpaceKeys.RAS))
    return affine if space == str(SpaceKeys.LPS) else RAS_TO_LPS @ affine


def metatensor_to_volume(tensor: MetaTensor, modality: str | None = None) -> Volume:
    """Volume from a one-channel MetaTensor (1, x, y, z) or (1, x, y) (2D); the affine's space (RAS/LPS) is honoured.

    Args:
        tensor: channel-first MetaTensor with a single channel.
        modality: overrides `meta["modality"]` (default "OT" when absent).
    """
    if not isinstance(tensor, MetaTensor):
        raise DataError(f"expected a monai MetaTensor, got {type(tensor).__name__}")
    if tensor.ndim not in (3, 4) or tensor.shape[0] != 1:
        raise DataError(f"expected a one-channel MetaTensor (1, x, y[, z]); got shape {tuple(tensor.shape)}")
    spatial = tensor.ndim - 1
    array = tensor.as_tensor()[0].detach().cpu().numpy()
    array = (array if spatial == 3 else array[..., None]).transpose(2, 1, 0)
    meta = tensor.meta
    source = meta.get("filename_or_obj", "")
    return Volume(
        array=np.ascontiguousarray(array), affine=_affine_lps(tensor, spatial),
        modality=modality or str(meta.get("modality", "OT") or "OT"),
        source=str(source) if isinstance(source, (str, Path)) else "",
        series_uid=str(meta.get("series_uid", "") or ""),
    )


class LoadVolume(Transform):
    """Array transform: path (or Volume) -> MetaTensor (1, x, y, z), loaded with `medmrcnn.io.load_volume`."""

    def __init__(self, series: str | int | None = None, frame: int | None = None, allow_irregular: bool = False,
                 rgb: str = "luma") -> None:
        self.kwargs: dict[str, Any] = {"frame": frame, "allow_irregular": allow_irregular, "rgb": rgb}
        self.series = series

    def __call__(self, data: str | Path | Volume) -> MetaTensor:
        volume = data if isinstance(data, Volume) else load_volume(data, self.series, **self.kwargs)
        return volume_to_metatensor(volume)


class LoadVolumed(MapTransform):
    """Dictionary twin of `LoadVolume`, a drop-in for `LoadImaged(keys, ensure_channel_first=True)`."""

    def __init__(self, keys: Hashable | Sequence[Hashable], allow_missing_keys: bool = False,
                 series: str | int | None = None, frame: int | None = None, allow_irregular: bool = False,
                 rgb: str = "luma") -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(series=series, frame=frame, allow_irregular=allow_irregular, rgb=rgb)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
