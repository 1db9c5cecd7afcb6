"""Folders with several series and non-image objects, enhanced multi-frame CT/MR, compressed transfer syntaxes."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import load_volume, load_volumes, scan
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from tests.io.helpers import dicom_testfile


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, ct_series):
    """Two CT series in nested folders, an SR, an RTSTRUCT, a SEG and a README."""
    root = tmp_path_factory.mktemp("study")
    shutil.copytree(ct_series, root / "a" / "series1")
    small = make_ct_phantom(shape=(6, 32, 32), spacing=(3.0, 1.0, 1.0), n_tumours=1, seed=9).volume
    write_dicom_series(small, root / "b" / "deeper" / "series2", series_description="Second", shuffle_names=True)
    for name in ("test-SR.dcm", "rtstruct.dcm", "liver.dcm"):
        shutil.copy(dicom_testfile(name), root / "b" / name.replace(".dcm", ""))
    (root / "README.txt").write_text("not DICOM\n")
    return root, small


def test_scan_lists_image_series_and_notes_non_image_objects(mixed_folder, ct_volume):
    root, small = mixed_folder
    infos = scan(root)
    images = [i for i in infos if i.is_image]
    assert sorted(i.shape for i in images) == sorted([ct_volume.shape, small.shape])
    notes = {i.warnings[0] for i in infos if not i.is_image}
    assert notes == {"SR object: not an image, skipped", "RTSTRUCT object: not an image, skipped",
                     "SEG object: not an image, skipped"}
    for i in images:
        assert i.modality == "CT" and i.orientation == "LPS" and i.error is None and i.n_files == i.shape[0]


def test_several_series_need_a_choice_by_index_or_uid(mixed_folder):
    root, small = mixed_folder
    with pytest.raises(VolumeLoadError, match=r"2 image series found; choose one .*\[0\] CT .*\[1\] CT") as e:
        load_volume(root)
    assert "\n" not in str(e.value)
    images = [i for i in scan(root) if i.is_image]
    second = [k for k, i in enumerate(images) if i.description == "Second"][0]
    by_index = load_volume(root, series=second)
    by_uid = load_volume(root, series=images[second].series_uid)
    by_text = load_volume(root, series=str(second))  # as a command line passes it
    assert all(np.array_equal(v.array, small.array) for v in (by_index, by_uid, by_text))
    with pytest.raises(VolumeLoadError, match="out of range"):
        load_volume(root, series=5)
    with pytest.raises(VolumeLoadError, match="no image series with SeriesInstanceUID 1.2.3"):
        load_volume(root, series="1.2.3")
    assert sorted(v.shape for v in load_volumes(root)) == sorted(i.shape for i in images)


def test_non_image_only_input_is_a_clear_error():
    with pytest.raises(VolumeLoadError, match="no image series found .*SR object: not an image"):
        load_volume(dicom_testfile("test-SR.dcm"))


@pytest.fixture(scope="module")
def enhanced_ct(tmp_path_factory, ct_series):
    """`ct_series` converted to one Legacy Converted Enhanced CT object (frames in reverse order) by highdicom."""
    import highdicom as hd
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    legacy = sorted((pydicom.dcmread(p) for p in ct_series.iterdir()), key=lambda d: -int(d.InstanceNumber))
    out = tmp_path_factory.mktemp("enhanced")
    paths = {}
    for name, ts in (("native", None), ("rle", RLELossless)):
        mf = LegacyConvertedEnhancedCTImage(legacy, series_instance_uid=hd.UID(), series_number=7,
                                            sop_instance_uid=hd.UID(), instance_number=1, transfer_syntax_uid=ts)
        mf.save_as(out / f"{name}.dcm")
        paths[name] = out / f"{name}.dcm"
    return paths


@pytest.mark.parametrize("name", ["native", "rle"])
def test_enhanced_ct_matches_the_classic_series(enhanced_ct, name, ct_series, ct_volume):
    v = load_volume(enhanced_ct[name])
    classic = load_volume(ct_series)
    assert v.metadata["kind"] == "dicom-multiframe" and len(v.source_datasets) == 1
    assert "PixelData" not in v.source_datasets[0]
    assert np.array_equal(v.array, ct_volume.array) and v.array.dtype == classic.array.dtype
    assert np.allclose(v.affine, classic.affine, atol=1e-4)
    n = v.shape[0]
    assert v.metadata["frame_numbers"] == list(range(n, 0, -1))  # frames were stored head-to-feet
    per_frame = v.source_datasets[0].PerFrameFunctionalGroupsSequence
    for k, frame in enumerate(v.metadata["frame_numbers"]):
        ipp = [float(x) for x in per_frame[frame - 1].PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(ipp, (v.affine @ [0, 0, k, 1.0])[:3], atol=1e-3)


def test_real_enhanced_ct_matches_simpleitk_on_the_same_grid():
    path = dicom_testfile("eCT_Supplemental.dcm")
    v = load_volume(path)
    img = sitk.ReadImage(str(path))
    ref_affine = np.eye(4)
    ref_affine[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    ref_affine[:3, 3] = img.GetOrigin()
    # GDCM keeps file frame order (a left-handed grid here); ours runs along the slice normal: map index to index
    to_ref = np.linalg.inv(ref_affine) @ v.affine
    assert np.allclose(to_ref[:3, :3], np.diag([1, 1, -1]), atol=1e-6) and np.allclose(to_ref[:3, 3], [0, 0, 1])
    assert np.array_equal(v.array, sitk.GetArrayFromImage(img)[::-1])  # rescale from the shared functional group
    assert v.modality == "CT" and v.spacing == pytest.approx((10.0, 0.388672, 0.388672))


def test_enhanced_mr_without_functional_groups_is_refused():
    with pytest.raises(VolumeLoadError, match="10 frames but no per-frame functional groups"):
        load_volume(dicom_testfile("emri_small.dcm"))


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_real_encodings_decode_to_the_same_voxels(name):
    reference = load_volume(dicom_testfile("MR_small.dcm"))
    v = load_volume(dicom_testfile(name))
    assert np.array_equal(v.array, reference.array) and np.array_equal(v.affine, reference.affine)


def test_lossy_jpeg_and_jpeg2000_decode():
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "693_J2KI.dcm"):
        v = load_volume(dicom_testfile(name))
        ds = pydicom.dcmread(dicom_testfile(name))
        assert v.shape == (1, int(ds.Rows), int(ds.Columns)) and np.ptp(v.array) > 0


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_series_equals_truth(tmp_path, ct_series, ct_volume, syntax):
    for p in ct_series.iterdir():
        ds = pydicom.dcmread(p)
        try:
            ds.compress(syntax)
        except NotImplementedError as e:  # pydicom 2.4 (MONAI Label env) only encodes RLE
            pytest.skip(f"no {syntax.name} encoder in pydicom {pydicom.__version__}: {e}")
        ds.save_as(tmp_path / p.name)
    v = load_volume(tmp_path)
    assert v.metadata["transfer_syntax"] == syntax
    assert np.array_equal(v.array, ct_volume.array)


def test_rgb_dicom_becomes_luma(caplog):
    ds = pydicom.dcmread(dicom_testfile("SC_rgb.dcm"))
    rgb = ds.pixel_array.astype(np.float64)
    with caplog.at_level(logging.WARNING):
        v = load_volume(dicom_testfile("SC_rgb.dcm"))
    expected = np.rint(rgb @ [0.299, 0.587, 0.114]).astype(np.uint8)
    assert v.array.dtype == np.uint8 and np.array_equal(v.array[0], expected)
    assert v.metadata["rgb_conversion"] == "luma"
    assert "no patient geometry" in caplog.text and "PatientName" not in caplog.text
