"""`SliceWisePredictor`: a volume in, 3D instances out, in the volume's own geometry.

    axial layout (non-axial stacks permuted, never resampled) -> normalise (intensity preset) -> skip empty slices -> batches of 2D / 2.5D slices -> resample to the network's
    pixel size (on the device) -> Mask R-CNN (+ flips) -> compact per-slice instances on the original grid ->
    link across slices -> instance / class maps -> per-instance measurements -> back on the input's grid
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medmrcnn.errors import DataError
from medmrcnn.geometry import Reorientation, orientation_code, reorientation_to
from medmrcnn.inference.assemble import assemble_result
from medmrcnn.inference.batching import auto_batch_size
from medmrcnn.inference.config import PredictorConfig, calibrated_config
from medmrcnn.inference.detector import RawDetections, run_detector_tta
from medmrcnn.inference.inputs import as_volume
from medmrcnn.inference.postprocess import to_slice_instances
from medmrcnn.inference.result import VolumeResult
from medmrcnn.labels import LabelMap
from medmrcnn.modeling.builder import model_device
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.structures import SliceInstances
from medmrcnn.transforms import check_intensity_fit, normalise_volume, resolve_intensity, slice_with_context
from medmrcnn.transforms.resample import inplane_size, resize_slices
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)


def axial_layout(volume: Volume) -> tuple[Volume, Reorientation | None]:
    """The volume with axial slices along its first axis, as the network was trained (non-axial stacks: sagittal or
    coronal acquisitions, NIfTI stored LIA, PIL, ...), and the reorientation used; (volume, None) when its slices
    already are axial or it is a single 2D image. The voxels are only permuted / flipped, never resampled."""
    code = orientation_code(volume.affine)
    if code[2] in "SI" or volume.shape[0] == 1:
        return volume, None
    try:
        turn = reorientation_to(volume.affine, "LPS")
    except ValueError:  # an oblique grid with no axis closest to S: its slices are the nearest to axial there are
        return volume, None
    array = np.ascontiguousarray(turn.apply(volume.array))
    work = Volume(array=array, affine=turn.affine(volume.affine, volume.shape), modality=volume.modality,
                  source=volume.source, series_uid=volume.series_uid, warnings=list(volume.warnings),
                  metadata=dict(volume.metadata))
    log.info("%s: %s slices segmented as axial slices (%s)", volume.source or "image", code,
             orientation_code(work.affine))
    return work, turn


def back_on_input_grid(result: VolumeResult, volume: Volume, turn: Reorientation) -> VolumeResult:
    """A result computed on `axial_layout(volume)` moved back onto `volume`'s own grid (label maps permuted back,
    bounding boxes and slice ranges in the input's indices; centroids in mm and in-plane diameters unchanged)."""
    instance_map = np.ascontiguousarray(turn.undo(result.instance_map))
    class_map = np.ascontiguousarray(turn.undo(result.class_map))
    boxes = ndimage.find_objects(instance_map)
    records = []
    for record in result.instances:
        box = boxes[record.id - 1]
        records.append(replace(record, bbox=tuple(b.start for b in box) + tuple(b.stop for b in box),
                               slice_range=(box[0].start, box[0].stop - 1)))
    return VolumeResult(volume, instance_map, class_map, records, result.labels, dict(result.metadata))


# Beyond this many pixels per network slice (4096 x 4096) one slice's feature maps alone take many GB: a model pixel
# size far below the image's (or a huge image) is a configuration error, refused before any allocation.
MAX_NETWORK_PIXELS = 4096 * 4096


def check_network_size(volume: Volume, net_size: tuple[int, int], model_mm: float | None) -> None:
    """DataError when resampling a slice to the model's pixel size would give an absurd network input."""
    if net_size[0] * net_size[1] <= MAX_NETWORK_PIXELS:
        return
    _, sy, sx = volume.spacing
    raise DataError(
        f"{volume.source or 'image'}: slices of {volume.shape[1]}x{volume.shape[2]} pixels of {sy:.4g}x{sx:.4g} mm "
        f"would be resampled to {net_size[0]}x{net_size[1]} for the model's {model_mm} mm pixels (limit "
        f"{MAX_NETWORK_PIXELS} pixels per slice); check the image's pixel spacing or use a model trained at a "
        "coarser pixel size"
    )


def warn_detection_cap(volume: Volume, count: int, unit: str, cap: int) -> None:
    """Log that `count` slices (or tiles) returned the model's maximum of `cap` detections, so objects were lost."""
    if count:
        log.warning("%s: %d %s(s) reached the model's limit of %d detections per image, so some objects were not "
                    "found; segment in smaller tiles (medmrcnn infer --tile-size, PredictorConfig.tile_size)",
                    volume.source or "image", count, unit, cap)


CROWDED_FRACTION = 0.25  # a pass whose busiest slice keeps this fraction of the detection limit is crowded


def crowded(info: dict[str, Any], detections_per_image: int) -> bool:
    """Whether a pass (predict_slices' info) found more objects than one pass of the network finds reliably: its
    detection limit was reached above the score threshold, or a slice kept a quarter of that limit (proposals run
    short: on dense nuclei, 768 px tiles found 13 % fewer than 384 px tiles; docs/microscopy.md)."""
    return bool(info["slices_at_detection_cap"]) or (
        info["most_objects_on_a_slice"] >= CROWDED_FRACTION * detections_per_image)


class SliceWisePredictor:
    """Segments every instance in a volume with a 2D Mask R-CNN run slice by slice, then links them in 3D.

    Args:
        model: a torchvision Mask R-CNN as built by `medmrcnn.modeling.build_model`; it is switched to eval mode
            and stays on its device, where every batch is sent.
        model_cfg: the model's config: labels, 2.5D context, training pixel size and intensity preset.
        cfg: predictor settings; None = the defaults with the thresholds calibrated into the checkpoint, if any
            (`calibrated_config`).

    >>> predictor = SliceWisePredictor.from_checkpoint("model.safetensors")  # doctest: +SKIP
    >>> result = predictor.predict(medmrcnn.io.load_volume("ct/"))  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, model_cfg: ModelConfig, cfg: PredictorConfig | None = None) -> None:
        self.model = model.eval()
        self.model_cfg = model_cfg
        self.cfg = cfg if cfg is not None else calibrated_config(model_cfg.extra.get("thresholds"))
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
            a VolumeResult on the input's voxel grid. Non-axial stacks are segmented as axial slices
            (`axial_layout`) and the result put back on the input's grid.
        """
        volume = as_volume(data, self.cfg.image_key)
        if self.cfg.tile_size is not None and max(volume.shape[1:]) > self.cfg.tile_size:
            from medmrcnn.inference.tiling import predict_tiled

            return predict_tiled(self, volume, tile=self.cfg.tile_size, overlap=self.cfg.tile_overlap)
        t0 = time.perf_counter()
        work, turn = axial_layout(volume)
        slices, info = self.predict_slices(work, progress)
        half = max(volume.shape[1:]) // 2
        if (turn is None and self.cfg.tile_size is not None and half > 2 * self.cfg.tile_overlap
                and crowded(info, self.model_cfg.detections_per_image)):
            # Dense cells: more objects than one pass finds reliably, so smaller tiles (tiling.predict_tiled).
            from medmrcnn.inference.tiling import predict_tiled

            return predict_tiled(self, volume, tile=half, overlap=self.cfg.tile_overlap)
        t1 = time.perf_counter()
        result = self.assemble(work, slices)
        if turn is not None:
            result = back_on_input_grid(result, volume, turn)
            info["reoriented"] = f"{orientation_code(volume.affine)} -> {orientation_code(work.affine)}"
        t2 = time.perf_counter()
        result.metadata.update(info)
        warn_detection_cap(volume, info["slices_at_detection_cap"], "slice", self.model_cfg.detections_per_image)
        result.metadata["seconds"] = {"slices": round(t1 - t0, 3), "linking": round(t2 - t1, 3),
                                      "total": round(t2 - t0, 3)}
        log.info("%d instances in %d slices (%d run) in %.2f s", result.num_instances, volume.shape[0],
                 info["slices_run"], t2 - t0)
        return result

    def predict_slices(self, volume: Volume, progress: Callable[[int], None] | None = None, check_fit: bool = True
                       ) -> tuple[list[SliceInstances], dict[str, Any]]:
        """Per-slice instances on the original grid (one SliceInstances per slice, empty where skipped), and a
        dict describing the run (intensity preset, network grid, batch size, slices run, slices that returned the
        model's maximum number of detections). `check_fit`: see detect_slices."""
        cfg = self.cfg
        _, h, w = volume.shape
        slices = [SliceInstances((h, w)) for _ in range(volume.shape[0])]
        per_class = {self.labels.id_of(n): (cfg.class_score_thresholds.get(n, cfg.score_threshold),
                                            cfg.class_mask_thresholds.get(n, cfg.mask_threshold))
                     for n in {**cfg.class_score_thresholds, **cfg.class_mask_thresholds} if n in self.labels.names}
        info: dict[str, Any] = {}
        keep_from = min([cfg.score_threshold, *cfg.class_score_thresholds.values()])
        capped = 0  # slices where the network returned as many detections as it may, all of them above the
        # score threshold: objects that would have been kept were cut off
        for z, det, scale_xy in self.detect_slices(volume, progress, info, refine_min_score=keep_from,
                                                      check_fit=check_fit):
            capped += len(det) >= self.model_cfg.detections_per_image and float(det.scores.min()) >= keep_from
            slices[z] = to_slice_instances(det, (h, w), scale_xy, cfg.score_threshold, cfg.mask_threshold,
                                           cfg.duplicate_overlap, per_class)
        info["slices_at_detection_cap"] = capped
        info["most_objects_on_a_slice"] = max((len(s) for s in slices), default=0)
        return slices, info

    def detect_slices(self, volume: Volume, progress: Callable[[int], None] | None = None,
                      info: dict[str, Any] | None = None, refine_min_score: float = 0.0, check_fit: bool = True
                      ) -> Iterator[tuple[int, RawDetections, tuple[float, float]]]:
        """The network's raw detections per slice run, as (z, detections on the network grid, original pixels per
        network pixel along x and y), in z order; skipped slices are left out. `info` is filled with the run's
        description (intensity preset, network grid, batch size, slices run) before the first slice. With mask
        refinement, only detections scoring at least `refine_min_score` are refined (the rest keep coarse masks).
        `check_fit`: check the image against the model's intensity preset (tiles skip it: the whole image was)."""
        cfg, mcfg = self.cfg, self.model_cfg
        _, sy, sx = volume.spacing
        net_size = inplane_size(volume.shape[1:], (sy, sx), mcfg.pixel_spacing_mm)
        check_network_size(volume, net_size, mcfg.pixel_spacing_mm)
        fit_warnings = (check_intensity_fit(cfg.intensity or mcfg.intensity, volume, explicit=cfg.intensity is not None)
                        if check_fit else [])
        for w in fit_warnings:
            log.warning("%s: %s", volume.source or "image", w)
        preset = resolve_intensity(cfg.intensity or mcfg.intensity, volume.modality)
        image = normalise_volume(volume, preset)  # float32 (z, y, x) in [0, 1]: the only full-size copy made
        nz, h, w = image.shape
        todo = np.arange(nz)
        if cfg.skip_empty_slices:
            todo = np.flatnonzero(image.reshape(nz, -1).max(axis=1) > cfg.empty_slice_max)
        scale_xy = (w / net_size[1], h / net_size[0])
        amp = cfg.amp and self.device.type == "cuda"
        batch_size = cfg.batch_size or auto_batch_size(self.device, net_size, mcfg, amp)
        k = mcfg.context_slices
        if info is not None:
            info.update({
                "intensity": preset, "intensity_warnings": fit_warnings, "network_size_yx": list(net_size),
                "batch_size": batch_size, "device": str(self.device), "amp": amp, "slices_total": nz,
                "slices_run": int(len(todo)),
            })
        if progress is not None and nz > len(todo):
            progress(nz - len(todo))
        for start in range(0, len(todo), batch_size):
            zs = todo[start:start + batch_size]
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=amp):
                batch = torch.from_numpy(np.stack([slice_with_context(image, int(z), k) for z in zs]))
                if self.device.type == "cuda":
                    batch = batch.pin_memory()
                batch = resize_slices(batch.to(self.device, non_blocking=True), net_size)
                detections = run_detector_tta(self.model, batch, cfg.tta_flips, cfg.tta_iou, refine_min_score)
            for z, det in zip(zs, detections):
                yield int(z), det, scale_xy
            if progress is not None:
                progress(len(zs))

    def assemble(self, volume: Volume, slices: list[SliceInstances]) -> VolumeResult:
        """Link per-slice instances into 3D instances and build the label maps and measurements."""
        result = assemble_result(volume, slices, self.labels, self.cfg)
        result.metadata["model"] = self.model_cfg.to_dict()
        return result
