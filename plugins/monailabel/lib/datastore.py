"""Datastores that check what clients upload with medmrcnn's readers, and DICOMweb labels written by our exporter.

A corrupt or unsupported upload is refused with HTTP 422 and one line naming the reason, so it never reaches
inference or training; the server keeps serving.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from lib.errors import as_http_errors, not_found
from lib.settings import OutputLabels

log = logging.getLogger(__name__)

# The label values a saved label may hold, looked up when it arrives (they change after fine-tuning).
KnownValues = Callable[[], set[int]]
# The classes of the served volume model (DICOM-SEG segments are named after them).
ModelLabels = Callable[[], Any]
# Folders of this app's datastores (local folder, DICOMweb cache), registered as they are made.
_DATASTORE_ROOTS: list[Path] = []


def _register_root(path: str) -> None:
    root = Path(path).resolve()
    if root not in _DATASTORE_ROOTS:
        _DATASTORE_ROOTS.append(root)


def check_served_image(image: str) -> None:
    """HTTP 404 unless `image` is a file of this app's datastore, a file MONAI Label wrote for an upload (a temporary
    `tmp*` file) or a session image: a request never makes the server read an arbitrary path of its own."""
    from monailabel.config import settings

    path = Path(image).resolve()
    sessions = Path(settings.MONAI_LABEL_SESSION_PATH.strip() or Path.home() / ".cache" / "monailabel" / "sessions")
    upload = path.parent == Path(tempfile.gettempdir()).resolve() and path.name.startswith("tmp")
    inside = any(path == root or root in path.parents for root in [*_DATASTORE_ROOTS, sessions.resolve()])
    if not (upload or inside):
        raise not_found(f"image {Path(image).name!r} is not in the datastore (upload it, or name a datastore image "
                        "by its id)")


def label_algorithm_type(datastore: LocalDatastore, image_id: str) -> str:
    """DICOM-SEG algorithm type of a final label a person saved: SEMIAUTOMATIC when the datastore holds a model
    prediction for the image (tag 'original': the person edited it), MANUAL when they drew it from scratch."""
    return "SEMIAUTOMATIC" if datastore.get_label_by_image_id(image_id, DefaultLabelTag.ORIGINAL) else "MANUAL"


def check_image(path: str, image_id: str) -> None:
    """Raise HTTP 422 when medmrcnn cannot read the uploaded image (corrupt, truncated, unsupported)."""
    from medmrcnn.errors import VolumeLoadError
    from medmrcnn.io import load_volume

    with as_http_errors(f"upload of {image_id!r}"):
        try:
            load_volume(path)
        except VolumeLoadError as e:
            # The upload sits in a server temporary file: name the image the client sent instead.
            raise VolumeLoadError(image_id, e.reason) from None


def check_label(label_path: str, image_path: str, known_values: KnownValues) -> None:
    """Raise HTTP 422 unless the label map is readable, on the image's voxel grid and uses known label values."""
    from medmrcnn.errors import DataError
    from medmrcnn.io import load_volume
    from medmrcnn.geometry import check_same_grid

    with as_http_errors(f"label {Path(label_path).name}"):
        label = load_volume(label_path)
        image = load_volume(image_path)
        check_same_grid(label.affine, label.shape, image.affine, image.shape, Path(label_path).name)
        values = np.unique(label.array)
        known = known_values() | {0}
        unknown = sorted(int(v) for v in values if v not in known)
        if unknown or not np.all(np.mod(values, 1) == 0):
            raise DataError(f"{Path(label_path).name}: label values {unknown[:8] or values[:8].tolist()} are not "
                            f"label values of the model (known: {sorted(known)})")


class CheckedLocalDatastore(LocalDatastore):
    """MONAI Label's folder datastore; uploads of images and labels are read back with medmrcnn before being kept."""

    def __init__(self, *args: Any, known_values: KnownValues, **kwargs: Any) -> None:
        self._known_values = known_values
        super().__init__(*args, **kwargs)
        _register_root(self._datastore_path)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        """Add an uploaded image after checking that it can be read."""
        check_image(image_filename, image_id or Path(image_filename).name)
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Keep a label after checking it against its image (our own predictions, tag 'original', are trusted)."""
        image = self.get_image_uri(image_id)
        if not image:
            raise not_found(f"image {image_id!r} is not in the datastore")
        if label_tag != DefaultLabelTag.ORIGINAL:
            check_label(label_filename, image, self._known_values)
        return super().save_label(image_id, label_filename, label_tag, label_info)


def dicom_series_dir(image_path: str) -> Path | None:
    """The DICOM series folder behind a DICOMweb datastore image (the cache keeps `<uid>/` next to `<uid>.nii.gz`)."""
    p = Path(image_path)
    if p.is_dir():
        return p
    stem = p.with_name(p.name.removesuffix(".gz").removesuffix(".nii"))
    return stem if stem != p and stem.is_dir() else None


class SegDICOMWebDatastore(DICOMWebDatastore):
    """DICOMweb datastore whose final labels go to the archive as DICOM-SEG written by `medmrcnn.dicomseg.write_seg`
    (MONAI Label's own conversion would download dcmqi from the internet)."""

    def __init__(self, *args: Any, labels: OutputLabels, model_labels: ModelLabels,
                 label_config: Path | None = None, **kwargs: Any) -> None:
        self._labels = labels
        self._model_labels = model_labels
        self._label_config = label_config
        super().__init__(*args, **kwargs)
        _register_root(self._datastore_path)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any],
                   label_id: str = "") -> str:
        """Store a final label as DICOM-SEG on the DICOMweb server (STOW-RS) and in the local cache."""
        from monailabel.datastore.utils.dicom import dicom_web_upload_dcm

        from medmrcnn.dicomseg import write_seg
        from medmrcnn.io import load_volume
        from medmrcnn.labels import LabelMap

        if label_tag != DefaultLabelTag.FINAL:
            return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
        series = dicom_series_dir(self.get_image_uri(image_id))
        if series is None:
            raise not_found(f"image {image_id!r} is not a series of the DICOMweb archive")
        model_labels = self._model_labels()
        check_label(label_filename, str(series), lambda: set(self._labels.for_model(model_labels).values()))
        with as_http_errors(f"DICOM-SEG of {image_id}"):
            reference = load_volume(series)
            class_ids = self._labels.to_model(load_volume(label_filename).array, model_labels)
            fd, seg_path = tempfile.mkstemp(suffix=".dcm")
            os.close(fd)
            try:
                write_seg(class_ids, reference, seg_path, labels=LabelMap(model_labels.names),
                          label_config=self._label_config, algorithm_type=label_algorithm_type(self, image_id))
                series_uid = dicom_web_upload_dcm(seg_path, self._client)
            finally:
                os.unlink(seg_path)
        info = self.get_image_info(image_id)
        label_info = {**(label_info or {}), "SeriesInstanceUID": series_uid,
                      **{k: info.get(k) for k in ("Modality", "StudyInstanceUID")}}
        log.info("stored DICOM-SEG series %s for image %s", series_uid, image_id)
        return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
