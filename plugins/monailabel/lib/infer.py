"""`MedMRCNNInfer`: a MONAI Label infer task over `medmrcnn.inference.SliceWisePredictor`.

load (medmrcnn.io) -> predict (slice-wise Mask R-CNN, 3D linking) -> label file on the image grid (class or instance
values; NIfTI/NRRD/MHA, or DICOM-SEG through medmrcnn.dicomseg) + a JSON result with the per-instance table.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.datastore import dicom_series_dir
from lib.errors import as_http_errors, not_found
from lib.models import ModelSlot
from lib.settings import LABEL_TYPES, RESULT_FORMATS, PluginSettings
from lib.strategy import image_uncertainty

log = logging.getLogger(__name__)

LABEL_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


@dataclass(frozen=True)
class InferOptions:
    """What one request asks for: the app's defaults overridden by the request's params (docs/plugin.md)."""

    label_type: str
    result_format: str
    extension: str
    score_threshold: float
    mask_threshold: float
    window: str | None

    @classmethod
    def from_request(cls, request: dict[str, Any], settings: PluginSettings, dicom_datastore: bool) -> "InferOptions":
        """Options of `request`; ValueError names a bad one."""
        extension = str(request.get("result_extension") or ".nii.gz")
        default_format = settings.result_format or ("dicom_seg" if dicom_datastore else "nifti")
        result_format = str(request.get("result_format") or ("dicom_seg" if extension == ".dcm" else default_format))
        opts = cls(
            label_type=str(request.get("label_type") or settings.label_type),
            result_format=result_format,
            extension=".dcm" if result_format == "dicom_seg" else extension,
            score_threshold=float(request.get("score_threshold", settings.score_threshold)),
            mask_threshold=float(request.get("mask_threshold", settings.mask_threshold)),
            window=request.get("window") or settings.window,
        )
        if opts.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}; got {opts.label_type!r}")
        if opts.result_format not in RESULT_FORMATS:
            raise ValueError(f"result_format must be one of {RESULT_FORMATS}; got {opts.result_format!r}")
        if opts.result_format == "nifti" and opts.extension not in LABEL_EXTENSIONS:
            raise ValueError(f"result_extension must be one of {LABEL_EXTENSIONS} or .dcm; got {opts.extension!r}")
        return opts

    def predictor_config(self) -> Any:
        """The `PredictorConfig` for these options (ValueError for out-of-range thresholds or unknown windows)."""
        from medmrcnn.inference import PredictorConfig

        return PredictorConfig(intensity=self.window, score_threshold=self.score_threshold,
                               mask_threshold=self.mask_threshold)


def write_label(result: Any, options: InferOptions, settings: PluginSettings, path: Path) -> dict[str, int]:
    """Write the label file of `result` to `path`; return its label names -> values (what viewers name segments by)."""
    from medmrcnn.io import save_volume

    returned = settings.labels.for_model(result.labels)
    if options.result_format == "dicom_seg":
        from medmrcnn.dicomseg import write_seg

        write_seg(result, result.volume, path, per_instance=options.label_type == "instance",
                  label_config=settings.label_config)
        return returned
    if options.label_type == "class":
        values = settings.labels.lut(result.labels)[result.class_map]
        names = returned
    else:
        kept = {rec.id for rec in result.instances if rec.class_name in returned}
        values = np.where(np.isin(result.instance_map, list(kept)), result.instance_map, 0)
        names = {f"{rec.class_name} {rec.id}": int(rec.id) for rec in result.instances if rec.id in kept}
    dtype = np.uint8 if int(values.max(initial=0)) < 256 else np.uint16
    save_volume(result.volume.with_array(values.astype(dtype)), path)
    return names


class MedMRCNNInfer(InferTask):
    """Instance segmentation of a datastore image (or an uploaded file) with a medmrcnn checkpoint.

    Request params (all optional): label_type "class"|"instance", result_format "nifti"|"dicom_seg",
    result_extension (.nii.gz, .nii, .nrrd, .mha, .dcm), score_threshold, mask_threshold, window, label_prompt
    (label values to keep, as OHIF's Class Prompts send them).
    """

    def __init__(self, slot: ModelSlot, settings: PluginSettings, dimension: int, description: str,
                 dicom_datastore: bool = False) -> None:
        self.slot = slot
        self.settings = settings
        self.dicom_datastore = dicom_datastore
        defaults = {"label_type": settings.label_type, "score_threshold": settings.score_threshold,
                    "mask_threshold": settings.mask_threshold, "window": settings.window or "",
                    "result_format": settings.result_format or ("dicom_seg" if dicom_datastore else "nifti")}
        super().__init__(type=InferType.SEGMENTATION, labels=None, dimension=dimension, description=description,
                         config=defaults)

    def info(self) -> dict[str, Any]:
        """MONAI Label's model info, with the labels of the checkpoint served now (they change after fine-tuning)."""
        from medmrcnn.errors import MedMRCNNError

        info = super().info()
        if self.slot.is_available():
            info["checkpoint"] = str(self.slot.current_checkpoint())
            try:
                info["labels"] = self.settings.labels.for_model(self.slot.load().labels)
            except MedMRCNNError as e:  # a broken checkpoint must not take /info/ down with it
                log.error("%s: %s", self.slot.name, e)
                info["error"] = str(e)
        return info

    def is_valid(self) -> bool:
        """Listed by the server only when a checkpoint exists."""
        return self.slot.is_available()

    def get_path(self, validate: bool = True) -> str | None:
        """The checkpoint file (MONAI Label's /model endpoint serves it with its checksum)."""
        path = self.slot.current_checkpoint()
        return str(path) if path else None

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Segment request["image"] (a local path: MONAI Label resolves datastore ids); return (label file, JSON)."""
        from medmrcnn.io import load_volume

        t0 = time.perf_counter()
        image = request.get("image")
        if not isinstance(image, str) or not image or not Path(image).exists():
            raise not_found(f"image {request.get('image')!r} is not in the datastore (upload it or pass a file)")
        with as_http_errors(f"{self.slot.name} options", options=True):
            options = InferOptions.from_request(request, self.settings, self.dicom_datastore)
            predictor_cfg = options.predictor_config()
            prompt = request.get("label_prompt")
            chosen = self.settings.labels.class_ids_of(prompt, self.slot.load().labels) if prompt else []
        with as_http_errors(f"{self.slot.name} infer on {Path(image).name}"):
            # A DICOM-SEG must reference the DICOM instances: segment the series itself, not a NIfTI copy of it.
            series = dicom_series_dir(image) if options.result_format == "dicom_seg" else None
            volume = load_volume(series or image)
            t_load = time.perf_counter()
            loaded = self.slot.load()
            from medmrcnn.inference import SliceWisePredictor

            result = SliceWisePredictor(loaded.model, loaded.config, predictor_cfg).predict(volume)
            if chosen:  # OHIF's Class Prompts: just the chosen classes
                result = result.with_classes(chosen)
            t_infer = time.perf_counter()
            out, names = self._write(result, options)
        t_write = time.perf_counter()
        lut = self.settings.labels.lut(result.labels)
        instances = [rec.to_dict() for rec in result.instances]
        for rec in instances:
            rec["label_value"] = int(rec["id"]) if options.label_type == "instance" else int(lut[rec["class_id"]])
        body = {
            "model": self.slot.name,
            "checkpoint": {"path": str(loaded.checkpoint), "fine_tuned": loaded.checkpoint == self.slot.published},
            "label_type": options.label_type,
            "result_format": options.result_format,
            "label_names": names,
            "instances": instances,
            "uncertainty": image_uncertainty(result),
            "image": {"shape": list(volume.shape), "spacing_mm": list(volume.spacing), "modality": volume.modality},
            "predictor": predictor_cfg.to_dict(),
            "latencies": {"pre": round(t_load - t0, 3), "infer": round(t_infer - t_load, 3),
                          "write": round(t_write - t_infer, 3), "total": round(t_write - t0, 3)},
        }
        log.info("%s: %s -> %d instances in %.2f s", self.slot.name, Path(image).name, len(instances), t_write - t0)
        return (str(out) if out else None), body

    def _write(self, result: Any, options: InferOptions) -> tuple[Path | None, dict[str, int]]:
        """The label file in a fresh temporary file (the server deletes it once sent) and its label names.

        An empty prediction has no DICOM-SEG (the standard needs a segment): then only the JSON is returned.
        """
        from medmrcnn.errors import ExportError

        out = Path(tempfile.NamedTemporaryFile(prefix="medmrcnn-", suffix=options.extension, delete=False).name)
        try:
            return out, write_label(result, options, self.settings, out)
        except ExportError:
            out.unlink(missing_ok=True)
            if options.result_format == "dicom_seg" and not result.instances:
                return None, {}
            raise
        except BaseException:
            out.unlink(missing_ok=True)
            raise
