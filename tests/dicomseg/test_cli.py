"""`medmrcnn export-seg`: label map file + DICOM folder -> DICOM-SEG, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medmrcnn.cli import main
from medmrcnn.dicomseg import read_seg
from medmrcnn.io import save_volume
from medmrcnn.volume import Volume
from tests.dicomseg.conftest import real_file
from tests.dicomseg.seg_tools import assert_dciodvfy_clean


@pytest.fixture
def files(oblique_case, tmp_path):
    """The oblique case's class map as NIfTI, its labels as JSON, and an output path."""
    label = save_volume(Volume(oblique_case.class_map, oblique_case.reference.affine), tmp_path / "label.nii.gz")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(oblique_case.labels.to_dict()))
    return label, labels, tmp_path / "out" / "seg.dcm"


def export(*args: str) -> int:
    return main(["export-seg", *map(str, args)])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("medmrcnn: error: ") and "\n" not in err
    return err


def test_export_seg_writes_a_valid_seg(oblique_case, files, capsys):
    label, labels, out = files
    assert export("--label", label, "--reference", oblique_case.folder, "-o", out, "--labels", labels) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert_dciodvfy_clean(out)
    back = read_seg(out, oblique_case.reference)
    assert np.array_equal(back.class_map.array, oblique_case.class_map) and back.labels == oblique_case.labels


def test_per_instance_from_nrrd_with_a_name_list(oblique_case, tmp_path):
    tumours = np.where(oblique_case.class_map == 3, 1, 0).astype(np.uint8)
    label = save_volume(Volume(tumours, oblique_case.reference.affine), tmp_path / "tumours.nrrd")
    (tmp_path / "names.json").write_text('["tumour"]')
    out = tmp_path / "inst.dcm"
    assert export("--label", label, "--reference", oblique_case.folder, "-o", out, "--labels",
                  tmp_path / "names.json", "--per-instance") == 0
    back = read_seg(out, oblique_case.reference)
    from scipy import ndimage

    _, n = ndimage.label(tumours, structure=np.ones((3, 3, 3)))
    assert len(back.segments) == n >= 2 and all(s.tracking_uid for s in back.segments)
    assert np.array_equal(back.class_map.array, tumours)


def test_geometry_mismatch_is_rejected(oblique_case, files, tmp_path, capsys):
    _, labels, out = files
    shifted = oblique_case.reference.affine.copy()
    shifted[:3, 3] += 3.0
    label = save_volume(Volume(oblique_case.class_map, shifted), tmp_path / "shifted.nii.gz")
    assert export("--label", label, "--reference", oblique_case.folder, "-o", out, "--labels", labels) == 2
    assert "not on the reference's voxel grid" in one_line_error(capsys) and not out.exists()


def test_folder_with_several_series_asks_which(oblique_case, files, tmp_path, capsys):
    label, labels, out = files
    folder = tmp_path / "study"
    shutil.copytree(oblique_case.folder, folder / "oblique")
    shutil.copy(real_file("CT_small.dcm"), folder / "ct_small.dcm")
    assert export("--label", label, "--reference", folder, "-o", out, "--labels", labels) == 2
    err = one_line_error(capsys)
    assert "2 image series found" in err and "--series" in err and not out.exists()
    uid = oblique_case.reference.series_uid
    assert export("--label", label, "--reference", folder, "-o", out, "--labels", labels, "--series", uid) == 0
    assert read_seg(out, oblique_case.reference).class_map.array.any()


def test_bad_inputs_give_one_line_and_no_file(oblique_case, files, tmp_path, capsys):
    label, labels, out = files
    assert export("--label", label, "--reference", label, "-o", out, "--labels", labels) == 2
    assert "not DICOM" in one_line_error(capsys)
    empty = save_volume(Volume(np.zeros(oblique_case.reference.shape, np.uint8), oblique_case.reference.affine),
                        tmp_path / "empty.nii.gz")
    assert export("--label", empty, "--reference", oblique_case.folder, "-o", out, "--labels", labels) == 2
    assert "empty" in one_line_error(capsys)
    assert export("--label", label, "--reference", oblique_case.folder, "-o", out) == 2
    assert "--labels" in one_line_error(capsys)
    (tmp_path / "odd.json").write_text('{"liver": 1, "kidney": 2, "glomus": 3}')
    assert export("--label", label, "--reference", oblique_case.folder, "-o", out, "--labels",
                  tmp_path / "odd.json") == 2
    assert "'glomus'" in one_line_error(capsys)
    assert not out.exists()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"classes": {"glomus": {
        "category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
        "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"}, "colour": [200, 0, 0]}}}))
    assert export("--label", label, "--reference", oblique_case.folder, "-o", out, "--labels",
                  tmp_path / "odd.json", "--label-config", config) == 0
    assert [s.label for s in read_seg(out, oblique_case.reference).segments] == ["liver", "kidney", "glomus"]
