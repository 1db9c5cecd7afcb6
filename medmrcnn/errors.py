"""Typed errors. Each message is one line a user can act on, naming the file and the reason."""

from __future__ import annotations

from pathlib import Path


class MedMRCNNError(Exception):
    """Base class of every error medmrcnn raises on purpose (the CLI maps these to exit code 2)."""


class VolumeLoadError(MedMRCNNError):
    """An input image or series could not be loaded."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(MedMRCNNError):
    """A checkpoint is missing, corrupt, tampered with, or does not match the requested model."""


class LabelConfigError(MedMRCNNError):
    """A label map or label configuration is inconsistent."""


class DataError(MedMRCNNError):
    """A training or evaluation item is broken (shape, affine or label values)."""


class GeometryMismatchError(DataError):
    """Two images that must share a voxel grid do not (a DataError too: a label off its image's grid)."""


class ExportError(MedMRCNNError):
    """An output could not be written (e.g. an empty segmentation where DICOM-SEG needs a segment)."""
