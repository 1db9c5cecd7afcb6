"""MONAI plumbing: the predictor as an `Inferer` and as a dictionary transform, results as label MetaTensors.

Label MetaTensors are channel-first (1, x, y, z) with the input's RAS affine (via `medmrcnn.io.monai`), so MONAI's
`SaveImage(d)` and `Invertd` treat them like any other segmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.data.utils import collate_meta_tensor
from monai.inferers import Inferer
from monai.transforms import MapTransform

from medmrcnn.errors import DataError
from medmrcnn.inference.predictor import SliceWisePredictor
from medmrcnn.inference.result import VolumeResult
from medmrcnn.io.monai import volume_to_metatensor

MAP_KINDS = ("class", "instance")


def result_to_metatensor(result: VolumeResult, what: str = "class") -> MetaTensor:
    """The class or instance map of `result` as a MetaTensor (1, x, y, z) on the input's geometry."""
    if what not in MAP_KINDS:
        raise ValueError(f"what must be one of {MAP_KINDS}; got {what!r}")
    array = result.class_map if what == "class" else result.instance_map
    return volume_to_metatensor(result.volume.with_array(array))


class SliceWiseInferer(Inferer):
    """A MONAI `Inferer`: image MetaTensor in, label MetaTensor out, by `SliceWisePredictor`.

    Accepts one image (1, x, y, z) or a batch (B, 1, x, y, z) from a DataLoader and returns the class (or
    instance) map in the same layout. `network` is accepted for MONAI's call signature; the predictor already
    holds its model, so only None or that same model are allowed.

    Args:
        predictor: the predictor to run.
        what: "class" or "instance" map.
    """

    def __init__(self, predictor: SliceWisePredictor, what: str = "class") -> None:
        if what not in MAP_KINDS:
            raise ValueError(f"what must be one of {MAP_KINDS}; got {what!r}")
        self.predictor = predictor
        self.what = what

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any] | None = None, *args: Any,
                 **kwargs: Any) -> MetaTensor:
        if network is not None and network is not self.predictor.model:
            raise ValueError("SliceWiseInferer runs its predictor's own model; pass network=None")
        if not isinstance(inputs, MetaTensor):
            raise DataError("SliceWiseInferer needs a MetaTensor (its affine places the result in the patient)")
        if inputs.ndim == 5:
            # Indexing a batched MetaTensor gives each item with its own meta dict.
            outs = [result_to_metatensor(self.predictor.predict(inputs[b]), self.what) for b in range(inputs.shape[0])]
            return collate_meta_tensor(outs)  # a batch again, each item keeping its own affine
        return result_to_metatensor(self.predictor.predict(inputs), self.what)


class SliceWisePredictd(MapTransform):
    """Dictionary transform: d[key] (a MetaTensor, e.g. from LoadImaged) -> d[label_key] label MetaTensor and
    d[result_key] the full VolumeResult (per-instance table, both maps) for writers further down the chain.

    Args:
        keys: the one image key.
        predictor: the predictor to run.
        what: "class" or "instance" map in d[label_key].
        label_key, result_key: where the outputs go.
    """

    def __init__(self, keys: Hashable, predictor: SliceWisePredictor, what: str = "class", label_key: str = "pred",
                 result_key: str = "pred_result", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SliceWisePredictd takes one image key; got {self.keys}")
        if what not in MAP_KINDS:
            raise ValueError(f"what must be one of {MAP_KINDS}; got {what!r}")
        self.predictor, self.what = predictor, what
        self.label_key, self.result_key = label_key, result_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            result = self.predictor.predict(d[key])
            d[self.label_key] = result_to_metatensor(result, self.what)
            d[self.result_key] = result
        return d
