"""read_seg: SEGs written by others (highdicom directly, a third-party file) land on the right voxels."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from medmrcnn.compat import write_dicom
from medmrcnn.dicomseg import load_label_config, read_seg, write_seg
from medmrcnn.errors import GeometryMismatchError, VolumeLoadError
from medmrcnn.io import load_volume
from medmrcnn.labels import LabelMap
from medmrcnn.volume import Volume
from tests.dicomseg.conftest import real_file
from tests.dicomseg.seg_tools import assert_dciodvfy_clean, dcmqi_masks


TYPES = {"liver": codes.SCT.Liver, "kidney": codes.SCT.Kidney, "tumour": codes.SCT.Neoplasm}


def highdicom_seg(reference: Volume, pixels: np.ndarray, seg_type: str, names: list[str], path) -> None:
    """Write a SEG with highdicom alone (no medmrcnn code), as another tool would."""
    algo = hd.AlgorithmIdentificationSequence(name="other tool", version="1", family=codes.cid7162.ManualProcessing)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=name, segmented_property_category=codes.cid7150.Tissue,
            segmented_property_type=TYPES[name],
            algorithm_type="SEMIAUTOMATIC", algorithm_identification=algo)
        for i, name in enumerate(names)
    ]
    seg = hd.seg.Segmentation(
        source_images=reference.source_datasets, pixel_array=pixels, segmentation_type=seg_type,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="1",
        device_serial_number="1", max_fractional_value=255,
    )
    write_dicom(seg, path)


def test_fractional_seg_is_thresholded(tmp_path):
    ref = load_volume(real_file("CT_small.dcm"))
    _, ny, nx = ref.shape
    yy, xx = np.mgrid[:ny, :nx]
    # Probability levels well away from 0.5, so the expected mask does not depend on 8-bit rounding.
    levels = np.array([0.0, 0.2, 0.45, 0.55, 0.8, 1.0], dtype=np.float32)
    prob = levels[np.clip(np.hypot(yy - ny / 2, xx - nx / 2) // 12, 0, 5).astype(int)[::-1, :]][None]
    highdicom_seg(ref, prob, "FRACTIONAL", ["liver"], tmp_path / "frac.dcm")
    assert_dciodvfy_clean(tmp_path / "frac.dcm")

    back = read_seg(tmp_path / "frac.dcm", ref)
    assert back.segmentation_type == "FRACTIONAL" and back.labels.names == ("liver",)
    assert np.array_equal(back.class_map.array == 1, prob >= 0.5)
    assert np.array_equal(read_seg(tmp_path / "frac.dcm", ref, threshold=0.7).class_map.array == 1, prob >= 0.7)


def test_overlapping_segments_are_counted_and_highest_wins(phantom_case, tmp_path):
    ref = phantom_case.reference
    liver = phantom_case.class_map == 1
    tumour = np.zeros_like(liver)
    tumour[10:20, 200:260, 150:230] = True  # partly inside the liver
    stacked = np.stack([liver, tumour], axis=-1).astype(np.uint8)
    highdicom_seg(ref, stacked, "BINARY", ["liver", "tumour"], tmp_path / "overlap.dcm")

    back = read_seg(tmp_path / "overlap.dcm", ref)
    assert back.overlap_voxels == int((liver & tumour).sum()) > 0 and back.warnings
    assert np.array_equal(back.instance_map.array == 2, tumour)
    assert np.array_equal(back.instance_map.array == 1, liver & ~tumour)
    assert back.labels.names == ("liver", "tumour")  # coded types map back to medmrcnn class names


def test_third_party_seg_without_reference(tmp_path):
    # pydicom's liver.dcm: a QIICR SEG with legacy SNOMED-RT (SRT) codes; its CT series is not available.
    path = real_file("liver.dcm")
    back = read_seg(path)
    assert back.labels.names == ("liver",) and back.segments[0].algorithm_type == "SEMIAUTOMATIC"
    grid = back.class_map
    masks, _ = dcmqi_masks(Path(path), grid, tmp_path / "dcmqi")
    assert masks[1].any() and np.array_equal(masks[1], grid.array == 1)
    # dcmqi's own image has the geometry of the SEG frames: ours must coincide with it exactly.
    img = sitk.ReadImage(str(tmp_path / "dcmqi" / "1.nrrd"))
    assert img.GetSize() == grid.shape[::-1]
    assert np.allclose(img.GetOrigin(), grid.origin, atol=1e-3)
    assert np.allclose(img.GetSpacing(), grid.spacing_xyz, atol=1e-4)


def test_own_grid_is_the_reference_grid_cropped(phantom_case, tmp_path):
    ref = phantom_case.reference
    tumours = np.where(phantom_case.class_map == 3, 3, 0).astype(np.uint8)
    out = write_seg(tumours, ref, tmp_path / "seg.dcm", phantom_case.labels)
    own, full = read_seg(out), read_seg(out, ref)
    k0 = int(np.rint(np.linalg.solve(ref.affine, own.class_map.affine[:, 3])[2]))
    nz = own.class_map.shape[0]
    assert nz < ref.shape[0] and np.allclose(own.class_map.affine[:3, :3], ref.affine[:3, :3], atol=1e-6)
    assert np.array_equal(full.class_map.array[k0 : k0 + nz], own.class_map.array)
    assert np.array_equal(full.class_map.array == 1, tumours == 3)
    assert not full.class_map.array[:k0].any() and not full.class_map.array[k0 + nz :].any()


def test_modifiers_and_colours_round_trip(tmp_path):
    ref = load_volume(real_file("MR_small.dcm"))
    lab = np.zeros(ref.shape, dtype=np.uint8)
    lab[0, 10:30, 5:25], lab[0, 10:30, 35:60] = 1, 2
    out = write_seg(lab, ref, tmp_path / "k.dcm", LabelMap.from_names(["left kidney", "Kidney-Right"]))
    back = read_seg(out, ref)
    config = load_label_config()
    assert back.labels.names == ("kidney_left", "kidney_right")
    for seg, name in zip(back.segments, ("kidney_left", "kidney_right"), strict=True):
        concept = config.concept_for(name)
        assert seg.modifier == concept.modifier and seg.type == concept.type
        assert np.abs(np.subtract(seg.colour, concept.colour)).max() <= 1
    assert np.array_equal(back.class_map.array, lab)


def test_bad_inputs(phantom_case, tmp_path):
    with pytest.raises(VolumeLoadError, match="not a DICOM Segmentation"):
        read_seg(real_file("CT_small.dcm"))
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(VolumeLoadError, match="not a readable DICOM"):
        read_seg(tmp_path / "notes.txt")
    out = write_seg(phantom_case.class_map, phantom_case.reference, tmp_path / "seg.dcm", phantom_case.labels)
    with pytest.raises(GeometryMismatchError, match="frame of reference"):
        read_seg(out, load_volume(real_file("CT_small.dcm")))
    coarse = phantom_case.reference.affine.copy()
    coarse[:3, :2] *= 2  # same place, twice the pixel size: same frame of reference is not checked without headers
    with pytest.raises(GeometryMismatchError, match="pixel spacing"):
        read_seg(out, Volume(np.zeros((40, 256, 256), np.int16), coarse))


def test_seg_frames_are_reference_aligned_for_tools(oblique_case, tmp_path):
    # A SEG made by highdicom alone on the oblique series reads back identically through read_seg and dcmqi.
    ref = oblique_case.reference
    truth = oblique_case.class_map
    highdicom_seg(ref, truth, "BINARY", ["liver", "kidney", "tumour"], tmp_path / "hd.dcm")
    back = read_seg(tmp_path / "hd.dcm", ref)
    masks, _ = dcmqi_masks(tmp_path / "hd.dcm", ref, tmp_path / "dcmqi")
    for number, mask in masks.items():
        assert np.array_equal(back.instance_map.array == number, mask)
    assert back.labels.names == ("liver", "kidney", "tumour")
