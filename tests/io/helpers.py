"""Helpers for the loading tests: pydicom test files, oblique affines, copying and checksumming input trees."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

PYDICOM_SERIES = Path(get_testdata_file("CT_small.dcm", download=False)).parent / "dicomdirtests"


def dicom_testfile(name: str) -> Path:
    """A pydicom (or pydicom-data) test file, never downloaded."""
    try:
        path = get_testdata_file(name, download=False)
    except Exception as e:  # pydicom-data's plugin needs pkg_resources, absent from some environments
        pytest.skip(f"{name}: pydicom-data unusable here ({type(e).__name__}: {e})")
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data)")
    return Path(path)


def rotated_affine(
    spacing_zyx=(2.5, 0.8, 0.7), angles_deg=(20.0, -10.0, 5.0), origin=(-30.0, 12.5, 40.0)
) -> np.ndarray:
    """An oblique LPS affine: rotation about x, y, z then ITK spacing."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx * np.array(spacing_zyx[::-1])[None, :]
    affine[:3, 3] = origin
    return affine


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a fixture folder so a test may edit it."""
    shutil.copytree(src, dst)
    return dst


def tree_checksum(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (relative path -> digest): proves inputs were neither modified nor added to."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }
