"""What a predictor accepts: a Volume, a MONAI MetaTensor, or a MONAI dictionary holding either."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medmrcnn.errors import DataError
from medmrcnn.volume import Volume


def as_volume(data: Any, image_key: str = "image") -> Volume:
    """The Volume in `data`: a Volume, a one-channel MetaTensor (as LoadImaged / LoadVolumed give), or a dict
    with one of those under `image_key`. MetaTensors are converted by `medmrcnn.io.monai.metatensor_to_volume`."""
    if isinstance(data, Mapping):
        if image_key not in data:
            raise DataError(f"input dictionary has no {image_key!r} key (keys: {sorted(map(str, data))})")
        data = data[image_key]
    if isinstance(data, Volume):
        return data
    from monai.data import MetaTensor  # here, not at module top: MONAI takes seconds to import

    if isinstance(data, MetaTensor):
        from medmrcnn.io.monai import metatensor_to_volume

        return metatensor_to_volume(data)
    raise DataError(
        f"cannot predict on a {type(data).__name__}: give a medmrcnn Volume, a MONAI MetaTensor "
        "(LoadImaged(ensure_channel_first=True) / LoadVolumed) or a dict holding one"
    )
