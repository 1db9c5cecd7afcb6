"""Classic DICOM series: ordering, geometry and voxels cross-checked with SimpleITK's series reader."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medmrcnn.io import load_volume, scan
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.volume import Volume
from tests.io.helpers import PYDICOM_SERIES, copy_tree, tree_checksum


def sitk_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def sitk_affine(img: sitk.Image) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())[None, :]
    affine[:3, 3] = img.GetOrigin()
    return affine


def assert_matches_simpleitk(volume: Volume, folder) -> None:
    img = sitk_series(folder)
    assert np.array_equal(volume.array, sitk.GetArrayFromImage(img))
    assert np.allclose(volume.spacing_xyz, img.GetSpacing(), atol=1e-4)
    assert np.allclose(volume.affine, sitk_affine(img), atol=1e-4)


@pytest.mark.parametrize("which", ["ct", "oblique"])
def test_series_with_shuffled_names_matches_simpleitk_and_truth(which, request):
    truth: Volume = request.getfixturevalue(f"{which}_volume")
    folder = request.getfixturevalue(f"{which}_series")
    v = load_volume(folder)
    assert v.array.dtype == np.int16 and v.modality == "CT"  # 12-bit stored + intercept -1024: HU in int16
    assert np.array_equal(v.array, truth.array)
    assert np.allclose(v.affine, truth.affine, atol=1e-4)
    assert_matches_simpleitk(v, folder)
    assert v.series_uid == pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID


def test_headers_are_kept_in_slice_order_without_pixel_data(ct_series, ct_volume):
    v = load_volume(ct_series)
    assert len(v.source_datasets) == ct_volume.shape[0]
    for k, ds in enumerate(v.source_datasets):
        assert "PixelData" not in ds
        position = (v.affine @ np.array([0, 0, k, 1.0]))[:3]
        assert np.allclose([float(x) for x in ds.ImagePositionPatient], position, atol=1e-3)
        assert int(ds.InstanceNumber) == k + 1  # the writer numbered slices in space order
    assert v.metadata["series_description"] == "Synthetic CT phantom"
    assert [str(p) for p in scan(ct_series)[0].paths] == v.metadata["paths"]


def test_real_pydicom_series_matches_simpleitk():
    folder = PYDICOM_SERIES / "98892001" / "CT5N"
    v = load_volume(folder)
    assert v.shape == (5, 16, 16)
    # files are numbered head-to-feet; the volume runs along +normal (feet-to-head), as SimpleITK does
    z = [float(ds.ImagePositionPatient[2]) for ds in v.source_datasets]
    assert z == sorted(z)
    assert_matches_simpleitk(v, folder)
    raw = pydicom.dcmread(v.metadata["paths"][0])
    assert np.array_equal(v.array[0], raw.pixel_array * float(raw.RescaleSlope) + float(raw.RescaleIntercept))


def test_rescale_slope_and_intercept_per_slice(tmp_path, ct_volume):
    folder = tmp_path / "s"
    write_dicom_series(ct_volume, folder)
    expected = ct_volume.array.astype(np.float64)
    for k, p in enumerate(sorted(folder.iterdir())):  # IM0001.. = slice order
        ds = pydicom.dcmread(p)
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", str(-1024 + k)
        ds.save_as(p)
        expected[k] = (ct_volume.array[k].astype(np.float64) + 1024) * 0.5 - 1024 + k
    v = load_volume(folder)
    assert v.array.dtype == np.float32
    assert np.allclose(v.array, expected, atol=1e-3)
    assert np.allclose(v.array, sitk.GetArrayFromImage(sitk_series(folder)), atol=1e-3)


def test_nothing_is_written_next_to_inputs_and_inputs_are_unchanged(tmp_path, ct_series):
    folder = copy_tree(ct_series, tmp_path / "in")
    before = tree_checksum(folder)
    scan(folder)
    load_volume(folder)
    assert tree_checksum(folder) == before
