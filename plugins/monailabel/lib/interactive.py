"""`InteractiveInfer`: box- and click-prompted segmentation (model `medmrcnn_interactive`) for Slicer and OHIF.

Typed "deepgrow", so 3D Slicer's MONAILabel module lists it under "SmartEdit / Deepgrow" (positive / negative points and
the ROI box) and OHIF's MONAI Label panel under "Point Prompts". Params, exactly as those clients send them
(docs/plugin.md, "Interactive segmentation"):

    foreground: [[i, j, k], ...]   voxel indices of the image as the viewer loaded it: i column, j row, k slice
    background: [[i, j, k], ...]
    roi: [i0, i1, j0, j1, k0, k1]  Slicer's ROI box, both ends inclusive, each pair in the order Slicer's RAS -> IJK
                                   conversion gives for this image (descending along axes that run against RAS)
    label: "kidney"                the segment's name: the object gets this class (Slicer sends it; OHIF does not)
    label_prompt: [2, ...]         label values (as OHIF's Class Prompts send them): the object may only be of these
    slice: k                       sent by Slicer for 2D models only (its clicks are already on that slice)

The result is a label file on the image grid holding just the object, with its class's label value, and the JSON row of
its measurements (volume, longest diameter, slice range, score).
"""

from __future__ import annotations

import logging
import numbers
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.errors import as_http_errors
from lib.infer import InferOptions, MedMRCNNInfer, ServedCheckpoint, instance_rows
from lib.models import LoadedModel, ModelSlot
from lib.settings import PluginSettings

log = logging.getLogger(__name__)

FEATURE_CACHE_BYTES = 1 << 30  # slice features kept between prompts (about 180 slices of 512 x 512 with the demo model)


def _voxel(value: Any, where: str) -> list[int]:
    """[i, j, k] of a click; ValueError unless it is three numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        raise ValueError(f"{where} must be three numbers [i, j, k]; got {value!r}")
    return [int(round(float(v))) for v in value]


def _points(params: dict[str, Any], key: str) -> list[list[int]]:
    value = params.get(key) or []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key} must be a list of [i, j, k] clicks; got {value!r}")
    return [_voxel(p, f"{key} click {n + 1}") for n, p in enumerate(value)]


def slicer_roi_descending(affine: np.ndarray) -> list[bool | None]:
    """Per index axis (i, j, k): True when Slicer's ROI pair comes high-to-low for an image with this LPS affine,
    False when low-to-high, None when the axis is oblique (either order can occur).

    Slicer converts the ROI's RAS min and max corners to IJK; along an index axis whose direction runs against RAS
    the min corner has the larger index.
    """
    ras_to_ijk = np.linalg.inv(np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3])
    out: list[bool | None] = []
    for row in ras_to_ijk:
        big = np.abs(row) > 1e-6 * np.abs(row).max()
        signs = set(np.sign(row[big]))
        out.append(None if len(signs) > 1 else bool(signs == {-1.0}))
    return out


def _roi_box(value: Any, affine: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """Slicer's [i0, i1, j0, j1, k0, k1] (inclusive) -> (z0, y0, x0, z1, y1, x1) end exclusive; ValueError if bad."""
    if not isinstance(value, (list, tuple)) or len(value) != 6 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) for v in value):
        raise ValueError(f"roi must be six numbers [i0, i1, j0, j1, k0, k1]; got {value!r}")
    v = [int(round(float(x))) for x in value]
    lo, hi = [], []
    for axis, desc in zip("ijk", slicer_roi_descending(affine)):
        a, b = v["ijk".index(axis) * 2: "ijk".index(axis) * 2 + 2]
        if desc is not None and a != b and (a > b) != desc:
            order = "high to low" if desc else "low to high"
            raise ValueError(f"roi {v} is inverted along {axis}: for this image Slicer sends {axis} {order}")
        lo.append(min(a, b))
        hi.append(max(a, b) + 1)
    return lo[2], lo[1], lo[0], hi[2], hi[1], hi[0]


class InteractiveInfer(ServedCheckpoint, InferTask):
    """Prompted segmentation with the checkpoint of a served model (its fine-tuned one once training published it).

    Volumes (z > 1) use `volume_slot`; single 2D images use `image_slot` when it has a checkpoint (cells), else
    `volume_slot`. Backbone features of the slices in use are kept between prompts (bounded, per checkpoint).
    """

    def __init__(self, volume_slot: ModelSlot, image_slot: ModelSlot, settings: PluginSettings,
                 dicom_datastore: bool = False) -> None:
        from medmrcnn.inference.prompt_heads import FeatureCache

        self.slot = volume_slot  # ServedCheckpoint: listed, served and labelled as the volume model
        self.image_slot = image_slot
        self.settings = settings
        self.dicom_datastore = dicom_datastore
        self.cache = FeatureCache(FEATURE_CACHE_BYTES)
        self._lock = threading.Lock()
        self._volume: tuple[tuple, Any] | None = None  # the last image loaded: (key, Volume)
        self._segmenters: dict[tuple, Any] = {}
        super().__init__(type=InferType.DEEPGROW, labels=None, dimension=3,
                         description="Box / click prompts: the object under a click or inside a box (3D or 2D)",
                         config={"mask_threshold": settings.mask_threshold})

    def _load(self, image: str, series_dir: str | None, options: InferOptions) -> tuple[tuple, Any]:
        """(image key, Volume) read as the automatic models read it; the last image is kept, so consecutive
        prompts do not read it again."""
        from medmrcnn.io import load_volume

        path = Path(series_dir or image)
        st = path.stat()
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size, options.series, options.allow_irregular)
        with self._lock:
            if self._volume is not None and self._volume[0] == key:
                return self._volume
        volume = load_volume(path, options.series, allow_irregular=options.allow_irregular)
        with self._lock:
            self._volume = (key, volume)
        return key, volume

    def _segmenter(self, loaded: LoadedModel, options: InferOptions, mask_threshold: float) -> Any:
        """The PromptSegmenter for this checkpoint and these settings (kept: it holds the normalised image)."""
        from medmrcnn.inference.prompts import PromptConfig, PromptSegmenter

        model_key = (str(loaded.checkpoint), loaded.stamp)
        key = (model_key, options.window, mask_threshold)
        with self._lock:
            if key not in self._segmenters:
                self._segmenters = {k: v for k, v in self._segmenters.items() if k[0] == model_key}
                cfg = PromptConfig(mask_threshold=mask_threshold, intensity=options.window)
                self._segmenters[key] = PromptSegmenter(loaded.model, loaded.config, cfg, self.cache, model_key)
            return self._segmenters[key]

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Segment the object the request's prompt points at; return (label file, JSON)."""
        from lib.datastore import dicom_series_dir

        t0 = time.perf_counter()
        image = self.served_image(request)
        with as_http_errors("medmrcnn_interactive options", options=True):
            options = InferOptions.from_request(request, self.settings, self.dicom_datastore)
            mask_threshold = float(request.get("mask_threshold", self.settings.mask_threshold))
        with as_http_errors(f"medmrcnn_interactive on {Path(image).name}"):
            series = dicom_series_dir(image) if options.result_format == "dicom_seg" else None
            key, volume = self._load(image, series, options)
            slot = self.image_slot if volume.is_2d and self.image_slot.is_available() else self.slot
            loaded = slot.load()
        t_load = time.perf_counter()
        with as_http_errors("medmrcnn_interactive prompt", options=True):
            prompt = self.prompt_of(request, volume, loaded)
            segmenter = self._segmenter(loaded, options, mask_threshold)
        with as_http_errors(f"medmrcnn_interactive on {Path(image).name}", options=True):
            found = segmenter.segment(volume, prompt, key)
        t_infer = time.perf_counter()
        with as_http_errors(f"medmrcnn_interactive on {Path(image).name}"):
            result = found.to_volume_result(loaded.labels)
            out, names = self._write(result, options)
        t_write = time.perf_counter()
        rows = instance_rows(result, options, self.settings)
        body = {
            "model": "medmrcnn_interactive",
            "served_by": slot.name,
            "checkpoint": {"path": str(loaded.checkpoint), "fine_tuned": loaded.checkpoint == slot.published},
            "label_type": options.label_type,
            "result_format": options.result_format,
            "label_names": {n: v for n, v in names.items()
                            if options.label_type == "instance" or (rows and n == rows[0]["class_name"])},
            "instances": rows,
            "prompt": {"foreground_zyx": [list(p) for p in prompt.foreground],
                       "background_zyx": [list(p) for p in prompt.background],
                       "box_zyx": list(prompt.box) if prompt.box else None,
                       "classes": [loaded.labels.name_of(c) for c in prompt.class_ids]},
            "mode": found.metadata["mode"],
            "cache": found.metadata["cache"],
            "image": {"shape": list(volume.shape), "spacing_mm": list(volume.spacing), "modality": volume.modality},
            "latencies": {"pre": round(t_load - t0, 3), "infer": round(t_infer - t_load, 3),
                          "write": round(t_write - t_infer, 3), "total": round(t_write - t0, 3)},
        }
        log.info("medmrcnn_interactive: %s %s -> %s in %.2f s (features: %d cached, %d computed)",
                 Path(image).name, found.metadata["mode"], rows[0]["class_name"] if rows else "nothing",
                 t_write - t0, found.metadata["cache"]["hits"], found.metadata["cache"]["misses"])
        return (str(out) if out else None), body

    def prompt_of(self, request: dict[str, Any], volume: Any, loaded: LoadedModel) -> Any:
        """The library `Prompt` of a request's params (see module docstring); ValueError names a bad one."""
        from medmrcnn.inference.prompts import Prompt

        output = self.settings.labels.for_model(loaded.labels)  # {name: value the viewer sees}
        classes: list[int] = []
        label = request.get("label")
        if label not in (None, ""):
            if not isinstance(label, str) or label not in output:
                raise ValueError(f"label {label!r} is not one of this model's labels {sorted(output)}")
            classes.append(loaded.labels.id_of(label))
        prompted = self.settings.labels.class_ids_of(request.get("label_prompt") or [], loaded.labels)
        if not classes:  # Slicer's segment name wins over the panel's class list
            classes = prompted
        if request.get("slice") is not None:
            _voxel([0, 0, request["slice"]], "slice")
        zyx = [(k, j, i) for i, j, k in _points(request, "foreground")]
        bg = [(k, j, i) for i, j, k in _points(request, "background")]
        box = _roi_box(request["roi"], volume.affine) if request.get("roi") else None
        return Prompt(foreground=tuple(zyx), background=tuple(bg), box=box, class_ids=tuple(dict.fromkeys(classes)))

    # Written exactly as the automatic models write theirs (same formats, same temporary-file handling).
    _write = MedMRCNNInfer._write
