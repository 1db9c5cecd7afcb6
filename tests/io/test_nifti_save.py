"""NIfTI reading (nibabel test data, NIfTI-2, 4D) and `save_volume` round trips checked by independent readers."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from medmrcnn.errors import ExportError, VolumeLoadError
from medmrcnn.io import load_volume, save_volume
from medmrcnn.volume import Volume
from tests.io.helpers import rotated_affine

NIB_DATA = Path(data_path)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_affine(img: sitk.Image) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())[None, :]
    affine[:3, 3] = img.GetOrigin()
    return affine


@pytest.mark.parametrize("name", ["anatomical.nii", "standard.nii.gz", "reoriented_anat_moved.nii"])
def test_nifti_matches_nibabel_and_simpleitk(name):
    path = NIB_DATA / name
    v = load_volume(path)
    img = nib.load(path)
    assert np.array_equal(v.array, np.asanyarray(img.dataobj).transpose(2, 1, 0))
    assert v.array.dtype.isnative
    assert np.allclose(v.affine, LPS @ img.affine, atol=1e-4)
    ref = sitk.ReadImage(str(path))
    assert np.allclose(v.array, sitk.GetArrayFromImage(ref))
    assert np.allclose(v.affine, sitk_affine(ref), atol=1e-4)


def test_nifti2_and_4d_need_a_frame():
    path = NIB_DATA / "example_nifti2.nii.gz"
    with pytest.raises(VolumeLoadError, match=r"2 volumes in one file.*frame=<0\.\.1>"):
        load_volume(path)
    v = load_volume(path, frame=1)
    data = np.asanyarray(nib.load(path).dataobj)
    assert v.metadata["nifti_version"] == 2
    assert np.array_equal(v.array, data[..., 1].transpose(2, 1, 0))
    with pytest.raises(VolumeLoadError, match="out of range"):
        load_volume(path, frame=2)


def test_nifti_in_microns_is_converted_to_mm(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_xyzt_units("micron")
    nib.save(img, tmp_path / "um.nii")
    assert np.allclose(load_volume(tmp_path / "um.nii").spacing, (0.002, 0.0005, 0.0005))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_save_volume_round_trip_checked_by_simpleitk(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    v = Volume(rng.integers(0, 200, size=(5, 6, 7)).astype(dtype), rotated_affine(), modality="CT")
    out = save_volume(v, tmp_path / f"vol{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name] + (["vol.raw"] if suffix == ".mhd" else []))
    back = load_volume(out)
    assert back.array.dtype == np.dtype(dtype) and np.array_equal(back.array, v.array)
    assert np.allclose(back.affine, v.affine, atol=1e-5)
    ref = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(ref), v.array)
    assert np.allclose(sitk_affine(ref), v.affine, atol=1e-4)


def test_saved_nifti_is_ras_for_nibabel(tmp_path):
    v = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), rotated_affine())
    img = nib.load(save_volume(v, tmp_path / "v.nii.gz"))
    assert np.array_equal(np.asanyarray(img.dataobj), v.array.transpose(2, 1, 0))
    assert np.allclose(img.affine, LPS @ v.affine, atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


def test_save_volume_refuses_unknown_suffix(tmp_path):
    with pytest.raises(ExportError, match="unsupported output format"):
        save_volume(Volume(np.zeros((1, 2, 2))), tmp_path / "v.png")
