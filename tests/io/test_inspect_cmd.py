"""`medmrcnn inspect`: header-only listing, JSON, one-line errors with exit code 2, no patient identifiers."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest

from medmrcnn.cli import main
from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import dicom_pixels, loading
from tests.io.helpers import PYDICOM_SERIES, dicom_testfile, tree_checksum


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("inspect must not decode pixels")

    monkeypatch.setattr(dicom_pixels, "read_dicom_volume", refuse)
    monkeypatch.setattr(loading, "read_series", refuse)


def test_table_lists_series_with_notes_and_hides_patient_identity(tmp_path, ct_series, capsys, no_pixel_decoding):
    shutil.copytree(ct_series, tmp_path / "ct")
    shutil.copytree(PYDICOM_SERIES / "98892003" / "MR700", tmp_path / "localizer")
    shutil.copy(dicom_testfile("test-SR.dcm"), tmp_path / "report")
    before = tree_checksum(tmp_path)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "CT    10x40x48       2.5 x 0.8 x 0.7" in out and "'Synthetic CT phantom'" in out
    assert "[plane 1/7]" in out and "[plane 7/7]" in out  # a multi-plane localizer: one image per plane
    assert "note: SR object: not an image, skipped" in out
    assert "Phantom^Synthetic" not in out and "PHANTOM001" not in out
    assert tree_checksum(tmp_path) == before


def test_json_output(ct_series, capsys, no_pixel_decoding):
    assert main(["inspect", str(ct_series), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["index"] == 0 and record["modality"] == "CT" and record["shape"] == [10, 40, 48]
    assert record["orientation"] == "LPS" and record["n_files"] == 10 and record["error"] is None
    assert record["spacing"] == pytest.approx([2.5, 0.8, 0.7])


def test_nothing_loadable_exits_1(capsys, tmp_path):
    ds = pydicom.dcmread(dicom_testfile("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "no_pixels.dcm")
    assert main(["inspect", str(tmp_path)]) == 1


@pytest.mark.parametrize("make", ["missing", "empty", "text"])
def test_bad_input_prints_one_line_and_exits_2(tmp_path, capsys, make):
    path = tmp_path / "input"
    if make == "empty":
        path.mkdir()
    elif make == "text":
        path.write_text("hello")
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medmrcnn: error: {path}: ") and "\n" not in err and "Traceback" not in err


def test_debug_lets_the_typed_error_through_for_a_traceback(tmp_path):
    with pytest.raises(VolumeLoadError, match="no such file or folder"):
        main(["inspect", str(tmp_path / "missing"), "--debug"])
