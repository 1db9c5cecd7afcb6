"""Small study trees for the batch tests: phantom DICOM series, a corrupt series, a mixed-size series, NIfTI files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
import torch

from medmrcnn.io import save_volume
from medmrcnn.modeling import build_model, save_checkpoint
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.volume import Volume
from tests.conftest import tiny_config


def save_tiny_checkpoint(path: Path) -> Path:
    """A seeded, untrained tiny model with the CT classes.

    Its network-level score floor (0.95) is above anything an untrained head scores, so it finds nothing and runs
    fast: tests using it check the batch machinery; tests/cli/test_demo.py checks what trained weights find.
    """
    torch.manual_seed(0)
    cfg = tiny_config(labels=("liver", "kidney", "tumour"), intensity="ct:soft_tissue", box_score_thresh=0.95)
    return save_checkpoint(path, build_model(cfg), cfg)


def phantom_volume(seed: int, shape: tuple[int, int, int] = (8, 32, 32),
                   spacing: tuple[float, float, float] = (2.5, 1.0, 1.0)) -> Volume:
    """A small CT phantom in HU."""
    return make_ct_phantom(shape=shape, spacing=spacing, n_tumours=2, seed=seed).volume


def write_series(folder: Path, seed: int, description: str = "CT", **kw) -> Path:
    """A phantom written as a DICOM series into `folder` (random file names, so several series can share it)."""
    write_dicom_series(phantom_volume(seed, **kw), folder, series_description=description, shuffle_names=True,
                       seed=seed)
    return folder


def write_corrupt_series(folder: Path, seed: int, **kw) -> Path:
    """A DICOM series one of whose files is cut inside its header; returns that file."""
    write_series(folder, seed, **kw)
    victim = sorted(folder.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:700])
    return victim


def add_mixed_size_series(folder: Path, seed: int) -> str:
    """Add to `folder` a series whose images have two different sizes (one SeriesInstanceUID); returns the UID."""
    tmp = folder / "tmp_mixed"
    write_series(tmp / "a", seed, shape=(4, 32, 32))
    write_series(tmp / "b", seed + 1, shape=(2, 40, 40))
    uid = pydicom.uid.generate_uid()
    for i, path in enumerate(sorted(tmp.rglob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = 7
        ds.save_as(folder / f"MIX{i:03d}.dcm")
    for path in sorted(tmp.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    tmp.rmdir()
    return uid


def write_nifti(path: Path, seed: int, **kw) -> Path:
    """A phantom saved as NIfTI."""
    return save_volume(phantom_volume(seed, **kw), path)


def tree_checksum(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`: proves inputs are never modified."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def mtimes(root: Path) -> dict[str, int]:
    """Modification time (ns) of every file under `root`."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


__all__ = ["add_mixed_size_series", "mtimes", "phantom_volume", "save_tiny_checkpoint", "tree_checksum",
           "write_corrupt_series", "write_nifti", "write_series"]
