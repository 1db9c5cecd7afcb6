"""Segment one received series through `medmrcnn infer`'s own batch path and list the DICOM objects to send."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from medmrcnn.batch import BatchOptions, run_batch
from medmrcnn.batch.outputs import FILES
from medmrcnn.batch.runner import Segmenter
from medmrcnn.batch.summary import FAILED

# The node writes what `medmrcnn infer --formats sr` writes: the DICOM-SEG (one segment per instance) and the SR.
NODE_FORMATS = ("seg", "sr")
KINDS = {"seg": "SEG", "sr": "SR"}


def model_key(settings: dict[str, Any]) -> str:
    """Short identity of the weights and every output-deciding option: results are per series *and* model."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class SeriesResult:
    """What segmenting a series gave: objects to send (kind, file path, SOP Instance UID), or why there are none."""

    objects: list[tuple[str, str, str]]
    folder: Path | None
    notes: list[str]


class SegmentationFailed(Exception):
    """The series could not be segmented; the message is the reason (one line, names the file, no patient data)."""


def segment_series(series_folder: Path, output: Path, predictor: Segmenter, options: BatchOptions) -> SeriesResult:
    """Run the batch on the queued series folder into `output` (resumable: complete outputs are reused as they are).

    Raises SegmentationFailed with the batch's reason when the series fails.
    """
    summary = run_batch([series_folder], predictor, options)
    failed = [o for o in summary.outcomes if o.status == FAILED]
    if failed:
        raise SegmentationFailed("; ".join(o.reason for o in failed))
    objects: list[tuple[str, str, str]] = []
    notes: list[str] = []
    folder = None
    for outcome in summary.outcomes:
        folder = output / outcome.name
        notes += outcome.notes
        for fmt in NODE_FORMATS:
            name = FILES[fmt][0]
            if name in outcome.outputs:
                uid = str(pydicom.dcmread(folder / name, stop_before_pixels=True).SOPInstanceUID)
                objects.append((KINDS[fmt], str(folder / name), uid))
    return SeriesResult(objects, folder, notes)
