"""Reference series for the DICOM-SEG tests: a phantom series of realistic geometry and pydicom's real files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medmrcnn.io import load_volume
from medmrcnn.labels import LabelMap
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.volume import Volume
from tests.dicomseg.seg_tools import CHECKED, assert_dciodvfy_clean

SEG_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")


@dataclass
class Case:
    """A DICOM reference loaded by medmrcnn.io and ground truth on its grid."""

    folder: Path
    reference: Volume
    class_map: np.ndarray
    instance_map: np.ndarray
    instance_classes: dict[int, int]
    labels: LabelMap


def real_file(name: str) -> str:
    """A pydicom / pydicom-data test file (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install pydicom-data)")
    return str(path)


@pytest.fixture(scope="session")
def phantom_case(tmp_path_factory) -> Case:
    """Abdominal CT phantom as a 512 x 512 x 40 series (0.7 mm pixels, 3 mm slices), file names shuffled."""
    ph = make_ct_phantom(shape=(40, 512, 512), spacing=(3.0, 0.7, 0.7), n_tumours=4, seed=3)
    folder = tmp_path_factory.mktemp("phantom") / "series"
    write_dicom_series(ph.volume, folder, shuffle_names=True, seed=1)
    reference = load_volume(folder)
    assert reference.shape == ph.volume.shape and np.allclose(reference.affine, ph.volume.affine, atol=1e-4)
    return Case(folder, reference, ph.class_map(), ph.gt_instances, ph.gt_classes, ph.labels)


@pytest.fixture(scope="session")
def oblique_case(tmp_path_factory) -> Case:
    """A small non-square phantom series on a rotated, tilted grid (rows != columns, no axis aligned with LPS)."""
    ph = make_ct_phantom(shape=(12, 96, 128), spacing=(4.0, 2.6, 2.2), n_tumours=3, seed=11)
    a, b = np.deg2rad(25.0), np.deg2rad(-15.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = (rz @ rx) * np.array(ph.volume.spacing_xyz)[None, :]
    affine[:3, 3] = (-120.0, 40.5, 310.25)
    volume = Volume(ph.volume.array, affine, modality="CT")
    folder = tmp_path_factory.mktemp("oblique") / "series"
    write_dicom_series(volume, folder)
    reference = load_volume(folder)
    assert np.allclose(reference.affine, affine, atol=1e-3)
    return Case(folder, reference, ph.class_map(), ph.gt_instances, ph.gt_classes, ph.labels)


@pytest.fixture(autouse=True)
def every_seg_passes_dciodvfy(tmp_path):
    """After each test, dciodvfy checks every DICOM-SEG the test wrote that it did not check itself."""
    yield
    for path in sorted(tmp_path.rglob("*.dcm")):
        if path.resolve() in CHECKED:
            continue
        if str(pydicom.dcmread(path, stop_before_pixels=True).get("SOPClassUID", "")) in SEG_CLASSES:
            assert_dciodvfy_clean(path)
