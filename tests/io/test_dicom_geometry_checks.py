"""Deliberate decisions on irregular stacks: gaps / non-uniform spacing (error unless allowed), gantry tilt (exact
sheared affine + warning), mixed orientations / sizes, duplicate or off-line positions (errors)."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import load_volume, load_volumes, scan
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.volume import Volume
from tests.io.helpers import PYDICOM_SERIES, copy_tree, dicom_testfile


def files_in_slice_order(folder):
    return sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True)
                                                         .ImagePositionPatient[2]))


def edit(path, **values):
    ds = pydicom.dcmread(path)
    for k, v in values.items():
        setattr(ds, k, v)
    ds.save_as(path)


def test_missing_slice_is_an_error_unless_allowed(tmp_path, ct_series, ct_volume, caplog):
    folder = copy_tree(ct_series, tmp_path / "gap")
    files_in_slice_order(folder)[4].unlink()
    with pytest.raises(VolumeLoadError, match=r"about 1 missing slice\(s\): gap of 5 mm after slice 3 .*"
                                              r"allow_irregular=True"):
        load_volume(folder)
    with caplog.at_level(logging.WARNING):
        v = load_volume(folder, allow_irregular=True)
    assert v.shape[0] == ct_volume.shape[0] - 1
    assert np.array_equal(v.array, np.delete(ct_volume.array, 4, axis=0))
    assert v.spacing[0] == pytest.approx(2.5 * 9 / 8)  # mean step from first to last
    assert any("irregular slice spacing" in w for w in v.warnings) and "missing slice" in caplog.text


def test_real_series_with_a_gap_is_reported_by_scan():
    info = scan(PYDICOM_SERIES / "77654033" / "CT2")[0]
    assert info.error is None and "missing slice" in info.irregular and info.shape == (4, 16, 16)


def test_non_uniform_spacing_is_reported(tmp_path, ct_series):
    folder = copy_tree(ct_series, tmp_path / "nonuniform")
    path = files_in_slice_order(folder)[5]
    ipp = [float(x) for x in pydicom.dcmread(path).ImagePositionPatient]
    edit(path, ImagePositionPatient=[ipp[0], ipp[1], ipp[2] + 0.6])
    with pytest.raises(VolumeLoadError, match=r"non-uniform slice spacing: 1\.9 to 3\.1 mm"):
        load_volume(folder)


def test_gantry_tilt_gives_the_exact_sheared_affine(tmp_path, ct_volume):
    affine = ct_volume.affine.copy()
    affine[1, 2] = 2.5 * np.tan(np.radians(15))  # each slice shifted posteriorly: a 15 degree tilted gantry
    tilted = Volume(ct_volume.array, affine, modality="CT")
    write_dicom_series(tilted, tmp_path, shuffle_names=True)
    v = load_volume(tmp_path)
    assert np.allclose(v.affine, affine, atol=1e-4) and np.array_equal(v.array, ct_volume.array)
    assert any("gantry tilt / sheared stack of 15.00 degrees" in w for w in v.warnings)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    assert np.array_equal(sitk.GetArrayFromImage(reader.Execute()), v.array)  # same slice order


def test_real_multi_plane_localizer_is_split_into_one_image_per_plane(tmp_path, ct_series):
    folder = PYDICOM_SERIES / "98892003" / "MR700"
    with pytest.raises(VolumeLoadError, match=r"7 image series found; .*\[plane 1/7\]"):
        load_volume(folder)  # as dcm2niix: "orientation varies (vNav or localizer?)", one image per plane
    planes = [load_volume(folder, i) for i in range(7)]
    assert {v.metadata["subseries"] for v in planes} == {f"plane {k}/7" for k in range(1, 8)}
    assert len({tuple(np.round(v.direction[:, 0], 3)) for v in planes}) >= 2
    study = tmp_path / "study"
    shutil.copytree(folder, study / "localizer")
    shutil.copytree(ct_series, study / "ct")
    volumes = load_volumes(study)
    assert len(volumes) == 8 and sum(v.modality == "CT" for v in volumes) == 1


def test_mixed_sizes_duplicates_and_off_line_positions_are_errors(tmp_path, ct_series):
    sizes = copy_tree(ct_series, tmp_path / "sizes")
    path = files_in_slice_order(sizes)[2]
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.pixel_array[:20, :24].copy().tobytes()
    ds.Rows, ds.Columns = 20, 24
    ds.save_as(path)
    # Another image size is another stack (as dcm2niix splits them): the 9 others, now with a gap, and the odd one.
    with pytest.raises(VolumeLoadError, match=r"2 image series found.*\[plane \d/2\].*\[plane \d/2\]"):
        load_volume(sizes)
    assert sorted(load_volume(sizes, i, allow_irregular=True).shape for i in range(2)) == [(1, 20, 24), (9, 40, 48)]

    dup = copy_tree(ct_series, tmp_path / "dup")
    first = files_in_slice_order(dup)[0]
    shutil.copy(first, dup / "copy.dcm")
    edit(dup / "copy.dcm", SOPInstanceUID=generate_uid())
    with pytest.raises(VolumeLoadError, match="duplicate slice positions: 11 images at 10 distinct positions"):
        load_volume(dup)

    off = copy_tree(ct_series, tmp_path / "off")
    path = files_in_slice_order(off)[6]
    ipp = [float(x) for x in pydicom.dcmread(path).ImagePositionPatient]
    edit(path, ImagePositionPatient=[ipp[0] + 5.0, ipp[1], ipp[2]])
    with pytest.raises(VolumeLoadError, match="slice positions do not lie on one line"):
        load_volume(off)


def test_single_slice_uses_slice_thickness():
    v = load_volume(dicom_testfile("CT_small.dcm"))
    ds = pydicom.dcmread(dicom_testfile("CT_small.dcm"))
    assert v.shape == (1, 128, 128) and v.spacing[0] == pytest.approx(float(ds.SliceThickness))
    assert np.array_equal(v.array[0], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_malformed_geometry_values_are_reported(tmp_path, ct_series):
    folder = copy_tree(ct_series, tmp_path / "bad")
    path = files_in_slice_order(folder)[0]
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = ["1", "2"]
    ds.save_as(path)
    info = scan(folder)[0]
    assert info.error == "invalid ImagePositionPatient [1, 2] (expected 3 numbers)"
    with pytest.raises(VolumeLoadError, match="invalid ImagePositionPatient"):
        load_volume(folder)
