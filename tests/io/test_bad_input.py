"""Every bad input is a VolumeLoadError with one line naming the file and the reason."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML

from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import dicom_scan, load_volume, scan
from tests.io.helpers import copy_tree, dicom_testfile


def load_error(path, **kw) -> VolumeLoadError:
    with pytest.raises(VolumeLoadError) as e:
        load_volume(path, **kw)
    assert "\n" not in str(e.value)
    return e.value


def test_missing_empty_and_non_dicom_inputs(tmp_path):
    assert "no such file or folder" in load_error(tmp_path / "nope").reason
    (tmp_path / "empty").mkdir()
    assert load_error(tmp_path / "empty").reason == "empty folder (no files)"
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    assert "no DICOM or image files found (1 other files skipped, e.g. notes.txt)" in load_error(junk).reason
    err = load_error(junk / "notes.txt")
    assert err.path == str(junk / "notes.txt") and err.reason.startswith("not a DICOM file")
    (tmp_path / "zero.dcm").write_bytes(b"")
    assert load_error(tmp_path / "zero.dcm").reason == "empty file (0 bytes)"


def test_truncated_and_corrupt_files(tmp_path, ct_series):
    src = dicom_testfile("CT_small.dcm").read_bytes()
    (tmp_path / "cut_header.dcm").write_bytes(src[:700])
    assert "truncated DICOM file" in load_error(tmp_path / "cut_header.dcm").reason
    (tmp_path / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 300)
    assert "corrupt DICOM file" in load_error(tmp_path / "garbage.dcm").reason
    assert "truncated pixel data (8130 of 8192 bytes)" in load_error(dicom_testfile("MR_truncated.dcm")).reason

    folder = copy_tree(ct_series, tmp_path / "series")
    victim = sorted(folder.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:-100])
    err = load_error(folder)
    assert victim.name in err.reason and "truncated pixel data" in err.reason


def test_pixel_data_problems(tmp_path):
    ds = pydicom.dcmread(dicom_testfile("MR_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    err = load_error(tmp_path / "nopix.dcm")
    assert err.path == str(tmp_path / "nopix.dcm") and err.reason == "no pixel data"

    ds = pydicom.dcmread(dicom_testfile("MR_small.dcm"))
    ds.PixelData = encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(tmp_path / "mpeg.dcm")
    assert "unsupported transfer syntax MPEG2 Main Profile / Main Level" in load_error(tmp_path / "mpeg.dcm").reason
    assert "unsupported transfer syntax" in scan(tmp_path / "mpeg.dcm")[0].error  # known before any decoding

    # a real stream no installed decoder can read (12-bit lossy JPEG with a broken marker)
    assert "cannot decode pixel data (JPEG Extended" in load_error(dicom_testfile("JPEG-lossy.dcm")).reason


def test_absurd_dimensions_are_refused_from_the_header(tmp_path):
    ds = pydicom.dcmread(dicom_testfile("MR_small.dcm"))
    ds.Rows, ds.Columns = 60000, 60000
    ds.save_as(tmp_path / "huge.dcm")
    assert "absurd dimensions 1x60000x60000" in load_error(tmp_path / "huge.dcm").reason


def test_permission_denied_names_the_file(tmp_path, monkeypatch, ct_series):
    # tests run as root, which ignores file modes: simulate the OS refusing to open one file
    folder = copy_tree(ct_series, tmp_path / "series")
    locked = sorted(folder.iterdir())[0]
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(dicom_scan, "open", guarded_open, raising=False)
    err = load_error(folder)
    assert err.path == str(locked) and err.reason == "permission denied (cannot read the file)"


def test_rgb_option_is_validated():
    with pytest.raises(ValueError, match="rgb must be one of"):
        load_volume(dicom_testfile("SC_rgb.dcm"), rgb="cmyk")
    v = load_volume(dicom_testfile("SC_rgb.dcm"), rgb="g")
    assert np.array_equal(v.array[0], pydicom.dcmread(dicom_testfile("SC_rgb.dcm")).pixel_array[..., 1])
