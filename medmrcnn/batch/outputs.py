"""Per-study output folders: written under a hidden temporary name, renamed when complete, recognised on resume.

A study folder `OUTDIR/<name>/` exists only once every output and its manifest `study.json` are written: the
outputs go to `OUTDIR/.partial-<name>-*`, which is renamed in one step. A run that is killed leaves only hidden
`.partial-*` folders, which the next run deletes before redoing those studies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medmrcnn.errors import ExportError, GeometryMismatchError
from medmrcnn.fileio import atomic_write_text
from medmrcnn.geometry import is_sheared, shear_degrees
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)

MANIFEST = "study.json"
PARTIAL_PREFIX = ".partial-"
FORMATS = ("nifti", "seg", "sr", "json", "csv", "png", "tiff", "roi", "geojson", "cells")
# "auto" picks by input kind: microscopy (modality SM: PNG / TIFF) gets the formats of cell tools, the rest medical.
AUTO = "auto"
AUTO_MEDICAL = ("nifti", "seg", "sr", "json", "csv", "png")
AUTO_MICROSCOPY = ("tiff", "roi", "geojson", "cells", "json", "png")
# File names inside a study folder, per format.
FILES = {
    "nifti": ("labels.nii.gz", "instances.nii.gz"),
    "seg": ("seg.dcm",),
    "sr": ("sr.dcm",),
    "json": ("report.json",),
    "csv": ("instances.csv",),
    "png": ("overlay.png",),
    "tiff": ("labels.tif",),
    "roi": ("rois.zip",),
    "geojson": ("cells.geojson",),
    "cells": ("cells.csv",),
}


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """Formats from "nifti,seg" (or a list), in canonical order, or ("auto",); ValueError names an unknown one.

    "sr" brings "seg" with it: the measurement report references the segments of the study's DICOM-SEG.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = {f.strip().lower() for f in items if f.strip()}
    if wanted == {AUTO}:
        return (AUTO,)
    unknown = sorted(wanted - set(FORMATS))
    if unknown or not wanted:
        raise ValueError(f"unknown output format(s) {unknown or [text]}; choose from {AUTO} or "
                         f"{', '.join(FORMATS)}")
    if "sr" in wanted:
        wanted.add("seg")
    return tuple(f for f in FORMATS if f in wanted)


def formats_for(volume: Volume, formats: Sequence[str]) -> tuple[str, ...]:
    """The formats written for `volume`: `formats` itself, or for ("auto",) those of its kind (see AUTO_*)."""
    if tuple(formats) != (AUTO,):
        return tuple(formats)
    return AUTO_MICROSCOPY if volume.modality == "SM" else AUTO_MEDICAL


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete study folder, None when the folder is absent or incomplete."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove_partials(output: Path, name: str) -> None:
    """Delete what an interrupted run left of study `name` (its hidden `.partial-<name>-*` folders)."""
    for stale in output.glob(f"{PARTIAL_PREFIX}{name}-*"):
        log.info("removing %s left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def study_folder(output: Path, name: str) -> Iterator[Path]:
    """Yield an empty hidden folder; on success it replaces `output/<name>` in one rename, on error it is removed."""
    output.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{name}-", dir=output))
    try:
        yield tmp
        final = output / name
        old = None
        if final.exists():  # --overwrite: move the old one aside first, so the final name is never half-written
            old = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{name}-old-", dir=output))
            os.replace(final, old / name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_outputs(result: Any, volume: Volume, folder: Path, formats: Sequence[str],
                  label_config: str | Path | None = None) -> tuple[list[str], list[str]]:
    """Write `result` (a VolumeResult on `volume`'s grid) in each format into `folder`.

    Returns:
        (file names written, notes). DICOM-SEG and SR need a DICOM input and at least one finding; otherwise they
        are left out with a note rather than failing the study. With "sr" the SEG has one segment per instance, so
        that each measurement of the SR references the instance's own segment.
    """
    from medmrcnn import export

    formats = formats_for(volume, formats)
    written: list[str] = []
    notes: list[str] = []
    if "nifti" in formats:
        labels_name, instances_name = FILES["nifti"]
        export.write_nifti(result, folder / labels_name, what="class")
        export.write_nifti(result, folder / instances_name, what="instance")
        written += [labels_name, instances_name]
        if is_sheared(volume.affine):
            notes.append(f"gantry tilt of {shear_degrees(volume.affine):.2f} degrees: NIfTI outputs are on an "
                         "orthogonal grid (slices shifted within their planes), not the sheared input grid")
    if "seg" in formats:
        what = "DICOM-SEG or SR" if "sr" in formats else "DICOM-SEG"
        if not volume.source_datasets:
            notes.append(f"no {what}: the input is not DICOM")
        elif not result.instances:
            notes.append(f"no {what}: nothing found (an empty DICOM-SEG is not valid)")
        else:
            from medmrcnn.dicomseg import write_seg

            try:
                write_seg(result, volume, folder / FILES["seg"][0], per_instance="sr" in formats,
                          label_config=label_config)
                written.append(FILES["seg"][0])
            except (ExportError, GeometryMismatchError) as e:  # the study's other outputs still stand
                notes.append(f"no DICOM-SEG: {e}")
            else:
                if "sr" in formats:
                    from medmrcnn.export.sr import write_sr

                    write_sr(result, folder / FILES["seg"][0], folder / FILES["sr"][0])
                    written.append(FILES["sr"][0])
    for fmt, writer in (("json", export.write_json_report), ("csv", export.write_csv),
                        ("png", export.write_overlay_png), ("tiff", export.write_label_image),
                        ("roi", export.write_imagej_rois), ("geojson", export.write_geojson),
                        ("cells", export.write_cell_table)):
        if fmt in formats:
            writer(result, folder / FILES[fmt][0])
            written.append(FILES[fmt][0])
    return written, notes


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write `study.json`, the last file of a study folder."""
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
