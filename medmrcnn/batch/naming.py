"""Stable, readable output folder names for studies: `<where>[__s<series>_<description>]__<8 hex>`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from medmrcnn.io import SeriesInfo
from medmrcnn.io.series import DICOM_MULTIFRAME, DICOM_SERIES

MAX_SLUG = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tiff", ".tif", ".dcm")


def slug(text: str, limit: int = MAX_SLUG) -> str:
    """`text` reduced to letters, digits, '.', '+', '-' and '_' (runs of anything else become one '_')."""
    s = _UNSAFE.sub("_", text).strip("_.")
    return s[:limit].rstrip("_.") or "study"


def _strip_suffix(name: str) -> str:
    low = name.lower()
    for suffix in _IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def study_identity(info: SeriesInfo) -> str:
    """What makes a study unique: the SeriesInstanceUID for DICOM (plus the file for multi-frame objects, which may
    share a series), else the resolved file path. The same series found twice is one study."""
    if info.kind == DICOM_SERIES and info.series_uid:
        return f"dicom:{info.series_uid}" + (f":{info.subseries}" if info.subseries else "")
    if info.kind == DICOM_MULTIFRAME and info.series_uid:
        return f"dicom:{info.series_uid}:{info.paths[0].name}"
    return f"file:{info.paths[0].resolve()}"


def _where(path: Path, root: Path) -> str:
    """`path` relative to `root` with '_' between parts (the input's own name when they are the same)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return path.name
    return "_".join(rel.parts) if rel.parts else root.name


def _digest(identity: str) -> str:
    return hashlib.sha1(identity.encode()).hexdigest()[:8]


def study_name(info: SeriesInfo, root: Path) -> str:
    """Folder name of a study found under the input `root`.

    The path relative to `root` (or the input's own name) makes it readable, the DICOM SeriesNumber and
    SeriesDescription tell series of one folder apart, and 8 hex digits of `study_identity` keep it unique. The same
    input gives the same name on every run and every rank.
    """
    source = info.source if info.kind == DICOM_SERIES else info.paths[0]
    parts = [slug(_strip_suffix(_where(source, root)))]
    if info.kind in (DICOM_SERIES, DICOM_MULTIFRAME):
        series = f"s{info.number}" if info.number is not None else ""
        desc = slug(info.description, 40) if info.description and info.description != info.paths[0].name else ""
        sub = slug(info.subseries, 24) if info.subseries else ""
        tag = "_".join(p for p in (series, desc, sub) if p)
        if tag:
            parts.append(tag)
    return "__".join(parts + [_digest(study_identity(info))])


def unusable_name(path: Path, root: Path) -> str:
    """Folder-style name of an input that could not be scanned (for the summary; no outputs are written)."""
    return f"{slug(_strip_suffix(_where(path, root)))}__{_digest(f'file:{path.resolve()}')}"
