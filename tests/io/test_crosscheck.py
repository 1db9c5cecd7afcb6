"""Our DICOM loader against dcm2niix and SimpleITK on every image series of pydicom's and pydicom-data's test files
(the table in docs/loading.md): agreement, or the documented difference."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.io.crosscheck import Result, cases, evaluate

pytestmark = pytest.mark.skipif(
    not (Path(sys.executable).parent / "dcm2niix").exists() and shutil.which("dcm2niix") is None,
    reason="dcm2niix is not installed (pip install dcm2niix; declared in the [test] extra)")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    tmp = tmp_path_factory.mktemp("crosscheck")
    return {c.name: evaluate(c, tmp / str(i)) for i, c in enumerate(cases(tmp))}


@pytest.mark.parametrize("name", ["CT_small", "MR_small", "CT5N", "MR1 (3 series)", "eCT_Supplemental"])
def test_dcm2niix_agrees(results, name):
    if name not in results:
        pytest.skip(f"{name}: pydicom-data not installed")
    r = results[name]
    assert r.dcm2niix is not None and r.dcm2niix.agrees, r.dcm2niix


@pytest.mark.parametrize("name", ["CT_small", "MR_small", "CT5N", "MR1 (3 series)", "CR1"])
def test_simpleitk_agrees(results, name):
    r = results[name]
    assert r.simpleitk is not None and r.simpleitk.agrees, r.simpleitk


def test_enhanced_ct_is_read_where_simpleitk_refuses(results):
    if "eCT_Supplemental" not in results:
        pytest.skip("pydicom-data not installed")
    r = results["eCT_Supplemental"]
    assert r.written.shape == (2, 512, 512) and r.simpleitk_shape is None


def test_monochrome1_differs_from_dcm2niix_only_by_the_inversion(results):
    r = results["CR1"]
    assert pydicom.dcmread(r.case.files[0]).PhotometricInterpretation == "MONOCHROME1"
    assert r.dcm2niix is not None and r.dcm2niix.shape  # same size; dcm2niix keeps MONOCHROME1 values as stored
    assert r.dcm2niix.max_value_diff > 100 and r.simpleitk.agrees  # GDCM inverts as we do


def test_tilted_series_outputs_share_dcm2niix_tilt_corrected_grid_size_simpleitk_ignores_the_tilt(results):
    r = results["CT5N tilted 15 deg"]
    assert r.written.shape == r.dcm2niix_shape == (5, 22, 16)  # both resample onto an orthogonal grid
    assert r.written.spacing[0] == pytest.approx(2.5, abs=1e-4)
    # SimpleITK keeps the acquired slices on an orthogonal grid: the last slice 4 x 2.5 x tan(15 deg) mm off.
    assert r.simpleitk.max_affine_mm == pytest.approx(4 * 2.5 * np.tan(np.radians(15)), abs=0.01)
    # At every acquired voxel centre our written grid holds the acquired value (linear shifts of a fraction of a
    # pixel: a few HU on this noisy 16 x 16 CT); dcm2niix's _Tilt_1 holds it 2.7 mm away (see docs/loading.md).
    inverse = np.linalg.inv(r.written.affine)
    diffs = []
    for k, j, i in np.ndindex(*r.ours.shape):
        x, y, z = np.rint((inverse @ (r.ours.affine @ [i, j, k, 1]))[:3]).astype(int)
        diffs.append(abs(float(r.written.array[z, y, x]) - float(r.ours.array[k, j, i])))
    assert np.median(diffs) <= 10


def test_series_with_gaps_keeps_each_slice_at_its_true_position(results):
    r = results["CT2 (gaps)"]
    ours, written = r.ours, r.written
    positions = np.array(ours.metadata["slice_positions"])
    index = np.linalg.solve(written.affine, np.c_[positions, np.ones(len(positions))].T).T[:, :3]
    assert np.allclose(index[:, :2], 0, atol=1e-4) and np.allclose(index[:, 2], np.rint(index[:, 2]), atol=1e-3)
    k = np.rint(index[:, 2]).astype(int)
    assert np.array_equal(written.array[k], ours.array)
    empty = np.setdiff1d(np.arange(written.shape[0]), k)
    assert (written.array[empty] == ours.array.min()).all()  # gaps are left empty, nothing interpolated
    assert r.dcm2niix_shape[0] < written.shape[0]  # dcm2niix's _Eq_1 interpolates onto a coarser regular grid


def test_documented_refusals(results):
    # A two-plane scout: we split it into one image per plane (each agrees with dcm2niix and SimpleITK read alone);
    # given both images, dcm2niix stacks them as a 45 degree "gantry tilt" and SimpleITK as one volume.
    assert results["CT2N"].refused.startswith("2 image series found")
    assert results["CT2N"].dcm2niix_shape == (2, 16, 16)
    assert results["CT2N plane 1"].dcm2niix.agrees and results["CT2N plane 1"].simpleitk.agrees
    if "emri_small" in results:  # an enhanced MR stripped of its functional groups: no geometry to trust
        assert "no per-frame functional groups" in results["emri_small"].refused
        assert results["emri_small"].dcm2niix_shape == (10, 64, 64)  # dcm2niix invents one
