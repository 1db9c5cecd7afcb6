"""`SliceWisePredictor`: a volume in, 3D instances out, in the volume's own geometry.

    normalise (intensity preset) -> skip empty slices -> batches of 2D / 2.5D slices -> resample to the network's
    pixel size (on the device) -> Mask R-CNN (+ flips) -> compact per-slice instances on the original grid ->
    link across slices -> instance / class maps -> per-instance measurements
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmrcnn.inference.assemble import assemble_result
from medmrcnn.inference.batching import auto_batch_size
from medmrcnn.inference.config import PredictorConfig
from medmrcnn.inference.detector import run_detector_tta
from medmrcnn.inference.inputs import as_volume
from medmrcnn.inference.postprocess import to_slice_instances
from medmrcnn.inference.result import VolumeResult
from medmrcnn.labels import LabelMap
from medmrcnn.modeling.builder import model_device
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.structures import SliceInstances
from medmrcnn.transforms import normalise_volume, resolve_intensity, slice_with_context
from medmrcnn.transforms.resample import inplane_size, resize_slices
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)


class SliceWisePredictor:
    """Segments every instance in a volume with a 2D Mask R-CNN run slice by slice, then links them in 3D.

    Args:
        model: a torchvision Mask R-CNN as built by `medmrcnn.modeling.build_model`; it is switched to eval mode
            and stays on its device, where every batch is sent.
        model_cfg: the model's config: labels, 2.5D context, training pixel size and intensity preset.
        cfg: predictor settings; None = PredictorConfig() defaults.

    >>> predictor = SliceWisePredictor.from_checkpoint("model.safetensors")  # doctest: +SKIP
    >>> result = predictor.predict(medmrcnn.io.load_volume("ct/"))  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, cfg: PredictorConfig | None = None) -> None:
        self.model = model.eval()
        self.model_cfg = model_cfg
        self.cfg = cfg if cfg is not None else PredictorConfig()
        self.labels = LabelMap.from_names(model_cfg.labels)
        self.device = model_device(model)

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: PredictorConfig | None = None, device: str | torch.device = "auto"
                        ) -> "SliceWisePredictor":
        """Predictor for a medmrcnn .safetensors checkpoint, on `device` ("auto": CUDA when available)."""
        from medmrcnn.modeling import load_model
        from medmrcnn.runtime import resolve_device

        model, model_cfg = load_model(path, device=resolve_device(device))
        return cls(model, model_cfg, cfg)

    def __call__(self, data: Any) -> VolumeResult:
        """Same as `predict`."""
        return self.predict(data)

    def predict(self, data: Any, progress: Callable[[int], None] | None = None) -> VolumeResult:
        """3D instances of a Volume, a one-channel MONAI MetaTensor, or a MONAI dict holding one under cfg.image_key.

        Args:
            data: the image; never modified.
            progress: called with n as n more slices are done (skipped slices included), e.g. to advance a bar.
        Returns:
            a VolumeResult on the input's voxel grid.
        """
        volume = as_volume(data, self.cfg.image_key)
        t0 = time.perf_counter()
        slices, info = self.predict_slices(volume, progress)
        t1 = time.perf_counter()
        result = self.assemble(volume, slices)
        t2 = time.perf_counter()
        result.metadata.update(info)
        result.metadata["seconds"] = {"slices": round(t1 - t0, 3), "linking": round(t2 - t1, 3),
                                      "total": round(t2 - t0, 3)}
        log.info("%d instances in %d slices (%d run) in %.2f s", result.num_instances, volume.shape[0],
                 info["slices_run"], t2 - t0)
        return result

    def predict_slices(self, volume: Volume, progress: Callable[[int], None] | None = None
                       ) -> tuple[list[SliceInstances], dict[str, Any]]:
        """Per-slice instances on the original grid (one SliceInstances per slice, empty where skipped), and a
        dict describing the run (intensity preset, network grid, batch size, slices run)."""
        cfg, mcfg = self.cfg, self.model_cfg
        preset = resolve_intensity(cfg.intensity or mcfg.intensity, volume.modality)
        image = normalise_volume(volume, preset)  # float32 (z, y, x) in [0, 1]: the only full-size copy made
        nz, h, w = image.shape
        todo = np.arange(nz)
        if cfg.skip_empty_slices:
            todo = np.flatnonzero(image.reshape(nz, -1).max(axis=1) > cfg.empty_slice_max)
        _, sy, sx = volume.spacing
        net_size = inplane_size((h, w), (sy, sx), mcfg.pixel_spacing_mm)
        scale_xy = (w / net_size[1], h / net_size[0])
        amp = cfg.amp and self.device.type == "cuda"
        batch_size = cfg.batch_size or auto_batch_size(self.device, net_size, mcfg, amp)
        k = mcfg.context_slices
        slices = [SliceInstances((h, w)) for _ in range(nz)]
        if progress is not None and nz > len(todo):
            progress(nz - len(todo))
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=amp):
            for start in range(0, len(todo), batch_size):
                zs = todo[start:start + batch_size]
                batch = torch.from_numpy(np.stack([slice_with_context(image, int(z), k) for z in zs]))
                if self.device.type == "cuda":
                    batch = batch.pin_memory()
                batch = resize_slices(batch.to(self.device, non_blocking=True), net_size)
                detections = run_detector_tta(self.model, batch, cfg.tta_flips, cfg.tta_iou, cfg.score_threshold)
                for z, det in zip(zs, detections):
                    slices[z] = to_slice_instances(det, (h, w), scale_xy, cfg.score_threshold, cfg.mask_threshold,
                                                   cfg.duplicate_overlap)
                if progress is not None:
                    progress(len(zs))
        info = {
            "intensity": preset, "network_size_yx": list(net_size), "batch_size": batch_size,
            "device": str(self.device), "amp": amp, "slices_total": nz, "slices_run": int(len(todo)),
        }
        return slices, info

    def assemble(self, volume: Volume, slices: list[SliceInstances]) -> VolumeResult:
        """Link per-slice instances into 3D instances and build the label maps and measurements."""
        result = assemble_result(volume, slices, self.labels, self.cfg)
        result.metadata["model"] = self.model_cfg.to_dict()
        return result
