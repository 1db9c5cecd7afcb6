"""Writers: NIfTI geometry via nibabel / SimpleITK / our loader, JSON against its schema, CSV, PNG, label images."""

import csv
import json
import re
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from medmrcnn.errors import ExportError
from medmrcnn.export import (
    REPORT_SCHEMA, write_csv, write_json_report, write_label_image, write_nifti, write_overlay_png,
)
from medmrcnn.export.overlay import instance_colour, slices_with_most_findings
from medmrcnn.export.report import CSV_COLUMNS
from medmrcnn.inference import VolumeResult
from medmrcnn.io import load_volume
from medmrcnn.synthetic import make_ct_phantom, make_microscopy_image
from tests.inference.truth import result_from_truth

DOCS = Path(__file__).resolve().parents[2] / "docs" / "outputs.md"
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def result() -> VolumeResult:
    # 3.75 mm pixels and 6 mm slices are exact in float32, so NIfTI-1's float32 sform must hold them bit for bit.
    ph = make_ct_phantom(shape=(10, 96, 96), spacing=(6.0, 3.75, 3.75), n_tumours=3, tumour_diameter_mm=(20, 35),
                         seed=7)
    return result_from_truth(ph)


@pytest.mark.parametrize("what", ["class", "instance"])
def test_nifti_keeps_the_input_affine_and_values(result, tmp_path, what):
    path = write_nifti(result, tmp_path / f"{what}.nii.gz", what=what)
    expected = result.class_map if what == "class" else result.instance_map
    img = nib.load(path)
    np.testing.assert_array_equal(img.affine, RAS_FROM_LPS @ result.volume.affine)  # exact, no tolerance
    data = np.asanyarray(img.dataobj)
    assert data.dtype == expected.dtype
    np.testing.assert_array_equal(data.transpose(2, 1, 0), expected)
    itk = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk), expected)
    np.testing.assert_allclose(itk.GetOrigin(), result.volume.origin, atol=1e-5)
    np.testing.assert_allclose(itk.GetSpacing(), result.volume.spacing_xyz, atol=1e-6)
    back = load_volume(path)
    np.testing.assert_array_equal(back.affine, result.volume.affine)
    np.testing.assert_array_equal(back.array, expected)


def test_nifti_refuses_other_names_and_kinds(result, tmp_path):
    with pytest.raises(ExportError, match="nii"):
        write_nifti(result, tmp_path / "labels.nrrd")
    with pytest.raises(ExportError, match="what"):
        write_nifti(result, tmp_path / "labels.nii", what="both")


def test_json_report_validates_and_matches_the_result(result, tmp_path):
    path = write_json_report(result, tmp_path / "report.json")
    report = json.loads(path.read_text())
    jsonschema.Draft202012Validator(REPORT_SCHEMA, format_checker=jsonschema.FormatChecker()).validate(report)
    assert report["summary"]["n_instances"] == result.num_instances == len(report["instances"])
    assert report["labels"] == {"liver": 1, "kidney": 2, "tumour": 3}
    assert report["summary"]["per_class"]["kidney"]["count"] == 2
    assert report["input"]["affine_lps"] == result.volume.affine.tolist()
    for rec, row in zip(result.instances, report["instances"]):
        assert row == rec.to_dict()
    tumour_ml = sum(r.volume_ml for r in result.instances_of("tumour"))
    assert report["summary"]["per_class"]["tumour"]["volume_ml"] == pytest.approx(tumour_ml)
    broken = dict(report, instances=[{**report["instances"][0], "voxel_count": -1}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, REPORT_SCHEMA)


def test_docs_show_the_schema_and_csv_columns_in_use():
    text = DOCS.read_text()
    block = re.search(r"```json\n(\{\n  \"\$schema\".*?)\n```", text, re.S)
    assert block, "docs/outputs.md must contain the report schema as a json block"
    assert json.loads(block.group(1)) == json.loads(json.dumps(REPORT_SCHEMA))
    for column in CSV_COLUMNS:
        assert f"`{column}`" in text


def test_csv_has_one_row_per_instance(result, tmp_path):
    path = write_csv(result, tmp_path / "instances.csv")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert len(rows) == result.num_instances
    for rec, row in zip(result.instances, rows):
        assert int(row["id"]) == rec.id and row["class_name"] == rec.class_name
        assert int(row["voxel_count"]) == rec.voxel_count
        assert float(row["volume_ml"]) == pytest.approx(rec.volume_ml, abs=1e-4)
        assert float(row["centroid_z_mm"]) == pytest.approx(rec.centroid_mm[2], abs=0.01)
        assert (int(row["slice_first"]), int(row["slice_last"])) == rec.slice_range


def test_overlay_png_shows_the_busiest_slices_in_instance_colours(result, tmp_path):
    zs = slices_with_most_findings(result, 4)
    counts = [len(set(np.unique(result.instance_map[z])) - {0}) for z in range(result.volume.shape[0])]
    assert min(counts[z] for z in zs) >= sorted(counts)[-4]
    path = write_overlay_png(result, tmp_path / "overlay.png", n_slices=4, columns=2)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 2 * 320 and img.shape[1] >= 2 * 320
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    shown = {rid for z in zs for rid in np.unique(result.instance_map[z]) if rid}
    for rid in shown:  # every instance on a shown slice is outlined in its own colour
        assert instance_colour(int(rid)) in colours


def test_overlay_png_without_findings(tmp_path):
    ph = make_ct_phantom(shape=(4, 32, 32), spacing=(5.0, 8.0, 8.0), n_tumours=0, seed=1)
    ph.gt_classes.clear()
    empty = result_from_truth(ph)
    assert empty.num_instances == 0
    path = write_overlay_png(empty, tmp_path / "none.png", n_slices=3)
    assert Image.open(path).size[0] >= 320


@pytest.fixture(scope="module")
def result_2d() -> VolumeResult:
    return result_from_truth(make_microscopy_image(shape=(64, 80), n_nuclei=8, seed=2))


@pytest.mark.parametrize("name", ["labels.tif", "labels.png"])
def test_label_image_round_trips_for_2d(result_2d, tmp_path, name):
    path = write_label_image(result_2d, tmp_path / name)
    back = tifffile.imread(path) if name.endswith(".tif") else np.asarray(Image.open(path))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, result_2d.instance_map[0])
    assert result_2d.num_instances >= 5


def test_label_image_records_pixel_size_and_writes_volumes_as_stacks(result, result_2d, tmp_path):
    path = write_label_image(result_2d, tmp_path / "classes.tiff", what="class")
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["unit"] == "um"
        np.testing.assert_array_equal(tif.pages[0].asarray(), result_2d.class_map[0])
    assert load_volume(path).spacing == pytest.approx(result_2d.volume.spacing)
    stack = write_label_image(result, tmp_path / "volume.tif")
    back = load_volume(stack)
    np.testing.assert_array_equal(back.array, result.instance_map)
    assert back.spacing == pytest.approx(result.volume.spacing)
    with pytest.raises(ExportError, match="one slice"):
        write_label_image(result, tmp_path / "volume.png")
    big = VolumeResult(result_2d.volume, result_2d.instance_map.astype(np.uint32), result_2d.class_map, [],
                       result_2d.labels)
    with pytest.raises(ExportError, match="16-bit PNG"):
        write_label_image(big, tmp_path / "big.png")
    with pytest.raises(ExportError, match="format"):
        write_label_image(result_2d, tmp_path / "labels.jpg")
