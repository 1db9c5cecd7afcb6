"""`MedMRCNNInfer`: a MONAI Label infer task over `medmrcnn.inference.SliceWisePredictor`.

load (medmrcnn.io) -> predict (slice-wise Mask R-CNN, 3D linking) -> label file on the image grid (class or instance
values; NIfTI/NRRD/MHA, or DICOM-SEG through medmrcnn.dicomseg) + a JSON result with the per-instance table; for
microscopy images also the per-cell table in µm ("cells") and the outlines as QuPath GeoJSON ("contours").
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

from lib.datastore import check_served_image, dicom_series_dir
from lib.errors import as_http_errors, not_found
from lib.models import ModelSlot
from lib.settings import LABEL_TYPES, RESULT_FORMATS, PluginSettings
from lib.strategy import image_uncertainty

log = logging.getLogger(__name__)

LABEL_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")
SEG_EXTENSION = ".dcm"
# Label map dtypes a client may ask for (`result_dtype`); None picks the smallest unsigned one that holds the values.
RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "uint32")
# `result_format` "auto": a DICOM-SEG when the client asks for ".dcm", a label volume when it names a label
# extension, else the app's default (--conf result_format; dicom_seg on a DICOMweb datastore).
AUTO = "auto"


def _flag(request: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean request param (JSON true/false, or "true"/"false"/"1"/"0" from form-typed clients)."""
    value = request.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"{key} must be true or false; got {value!r}")


@dataclass(frozen=True)
class InferOptions:
    """What one request asks for: the app's defaults overridden by the request's params (docs/plugin.md).

    The viewers' keys are honoured: `result_extension` picks the file (".nrrd" for 3D Slicer and OHIF, ".dcm" for a
    DICOM-SEG), `result_dtype` the label map's dtype, `result_compress` raw or gzip voxel data (NRRD/MHA; NIfTI by
    its name). `restore_label_idx` is checked but changes nothing: the values are always the label values /info/
    lists for the model, which is what OHIF maps segments by (docs/plugin.md).
    """

    label_type: str
    result_format: str
    extension: str
    dtype: str | None
    compress: bool
    score_threshold: float
    mask_threshold: float
    window: str | None
    series: str | None = None
    allow_irregular: bool = False

    @classmethod
    def from_request(cls, request: dict[str, Any], settings: PluginSettings, dicom_datastore: bool) -> "InferOptions":
        """Options of `request`; ValueError names a bad or conflicting one."""
        extension = request.get("result_extension") or None
        if extension is not None and extension not in (*LABEL_EXTENSIONS, SEG_EXTENSION):
            raise ValueError(f"result_extension must be one of {(*LABEL_EXTENSIONS, SEG_EXTENSION)}; got {extension!r}")
        result_format = str(request.get("result_format") or AUTO)
        if result_format not in (AUTO, *RESULT_FORMATS):
            raise ValueError(f"result_format must be one of {(AUTO, *RESULT_FORMATS)}; got {result_format!r}")
        if result_format == AUTO:
            default_format = settings.result_format or ("dicom_seg" if dicom_datastore else "nifti")
            result_format = {None: default_format, SEG_EXTENSION: "dicom_seg"}.get(extension, "nifti")
        if result_format == "dicom_seg" and extension not in (None, SEG_EXTENSION):
            raise ValueError(f"result_format dicom_seg conflicts with result_extension {extension!r} (a DICOM-SEG is "
                             f"{SEG_EXTENSION}); ask for one of them")
        if result_format == "nifti" and extension == SEG_EXTENSION:
            raise ValueError(f"result_format nifti conflicts with result_extension {SEG_EXTENSION} (a DICOM-SEG)")
        dtype = request.get("result_dtype") or None
        if dtype is not None and dtype not in RESULT_DTYPES:
            raise ValueError(f"result_dtype must be one of {RESULT_DTYPES}; got {dtype!r}")
        _flag(request, "restore_label_idx", True)
        opts = cls(
            label_type=str(request.get("label_type") or settings.label_type),
            result_format=result_format,
            extension=SEG_EXTENSION if result_format == "dicom_seg" else extension or ".nii.gz",
            dtype=dtype,
            compress=_flag(request, "result_compress", False),
            score_threshold=float(request.get("score_threshold", settings.score_threshold)),
            mask_threshold=float(request.get("mask_threshold", settings.mask_threshold)),
            window=request.get("window") or settings.window,
            series=str(request["series"]) if request.get("series") not in (None, "") else None,
            allow_irregular=_flag(request, "allow_irregular", False),
        )
        if opts.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}; got {opts.label_type!r}")
        return opts

    def predictor_config(self) -> Any:
        """The `PredictorConfig` for these options (ValueError for out-of-range thresholds or unknown windows)."""
        from medmrcnn.inference import PredictorConfig

        return PredictorConfig(intensity=self.window, score_threshold=self.score_threshold,
                               mask_threshold=self.mask_threshold)

    def label_dtype(self, values: np.ndarray) -> np.dtype:
        """The dtype to write `values` with: the requested one (ExportError if it cannot hold them) or uint8/uint16."""
        top = int(values.max(initial=0))
        if self.dtype is None:
            return np.dtype(np.uint8 if top < 256 else np.uint16)
        dtype = np.dtype(self.dtype)
        if top > np.iinfo(dtype).max:
            from medmrcnn.errors import ExportError

            raise ExportError(f"result_dtype {self.dtype} cannot hold label value {top}; ask for uint16 or uint32")
        return dtype


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
    save_volume(result.volume.with_array(values.astype(options.label_dtype(values))), path, compress=options.compress)
    return names


def instance_rows(result: Any, options: InferOptions, settings: PluginSettings) -> list[dict[str, Any]]:
    """The per-instance table of `result` for the JSON answer, each row with the label value it has in the file."""
    lut = settings.labels.lut(result.labels)
    rows = [rec.to_dict() for rec in result.instances]
    for row in rows:
        row["label_value"] = int(row["id"]) if options.label_type == "instance" else int(lut[row["class_id"]])
    return rows


class ServedCheckpoint:
    """The InferTask parts every model of the app shares, read from `self.slot`: listed only with a checkpoint, that
    checkpoint served by /model, and /info/ showing its labels (they change after fine-tuning)."""

    slot: ModelSlot
    settings: PluginSettings

    def info(self) -> dict[str, Any]:
        """MONAI Label's model info, with the checkpoint served now and its labels."""
        from medmrcnn.errors import MedMRCNNError

        info = super().info()  # type: ignore[misc]
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

    @staticmethod
    def served_image(request: dict[str, Any]) -> str:
        """request["image"]: a local path MONAI Label resolved from the datastore, an upload or a session (404 else)."""
        image = request.get("image")
        if not isinstance(image, str) or not image or not Path(image).exists():
            raise not_found(f"image {request.get('image')!r} is not in the datastore (upload it or pass a file)")
        check_served_image(image)
        return image


class MedMRCNNInfer(ServedCheckpoint, InferTask):
    """Instance segmentation of a datastore image (or an uploaded file) with a medmrcnn checkpoint.

    Request params (all optional): label_type "class"|"instance", result_format "auto"|"nifti"|"dicom_seg",
    result_extension (.nii.gz, .nii, .nrrd, .mha, .dcm), result_dtype, result_compress, restore_label_idx,
    score_threshold, mask_threshold, window (`InferOptions`), label_prompt (label values to keep, as OHIF's Class
    Prompts send them).
    """

    def __init__(self, slot: ModelSlot, settings: PluginSettings, dimension: int, description: str,
                 dicom_datastore: bool = False) -> None:
        self.slot = slot
        self.settings = settings
        self.dicom_datastore = dicom_datastore
        defaults = {"label_type": settings.label_type, "score_threshold": settings.score_threshold,
                    "mask_threshold": settings.mask_threshold, "window": settings.window or "",
                    # A list: 3D Slicer shows a choice and sends the first (selected) entry with every request.
                    "result_format": [AUTO, *RESULT_FORMATS]}
        super().__init__(type=InferType.SEGMENTATION, labels=None, dimension=dimension, description=description,
                         config=defaults)

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """Segment request["image"] (a local path: MONAI Label resolves datastore ids); return (label file, JSON)."""
        from medmrcnn.io import load_volume

        t0 = time.perf_counter()
        image = self.served_image(request)
        with as_http_errors(f"{self.slot.name} options", options=True):
            options = InferOptions.from_request(request, self.settings, self.dicom_datastore)
            predictor_cfg = options.predictor_config()
            prompt = request.get("label_prompt")
            chosen = self.settings.labels.class_ids_of(prompt, self.slot.load().labels) if prompt else []
        with as_http_errors(f"{self.slot.name} infer on {Path(image).name}"):
            # A DICOM-SEG must reference the DICOM instances: segment the series itself, not a NIfTI copy of it.
            series = dicom_series_dir(image) if options.result_format == "dicom_seg" else None
            volume = load_volume(series or image, options.series, allow_irregular=options.allow_irregular)
            t_load = time.perf_counter()
            loaded = self.slot.load()
            from medmrcnn.inference import SliceWisePredictor

            result = SliceWisePredictor(loaded.model, loaded.config, predictor_cfg).predict(volume)
            if chosen:  # OHIF's Class Prompts: just the chosen classes
                result = result.with_classes(chosen)
            t_infer = time.perf_counter()
            out, names = self._write(result, options)
        t_write = time.perf_counter()
        instances = instance_rows(result, options, self.settings)
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
        if volume.modality == "SM":  # microscopy: what a cell tool returns beside the label image
            from medmrcnn.export.celltable import cell_rows
            from medmrcnn.export.outlines import geojson_dict

            body["cells"] = cell_rows(result)
            body["contours"] = geojson_dict(result)
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
