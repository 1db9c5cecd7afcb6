"""write_seg: every SEG is checked by dciodvfy, read back by dcmqi and highdicom, and compared voxel for voxel."""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medmrcnn import __version__
from medmrcnn.compat import highdicom_supports_labelmap
from medmrcnn.dicomseg import load_label_config, read_seg, write_seg
from medmrcnn.errors import ExportError, GeometryMismatchError, LabelConfigError
from medmrcnn.io import load_volume
from medmrcnn.labels import LabelMap
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.volume import Volume
from tests.dicomseg.conftest import real_file
from tests.dicomseg.seg_tools import assert_dciodvfy_clean, assert_seg_matches, dcmqi_masks, highdicom_segment_map

# Source attributes a SEG may carry with the source's value: the Patient, Patient Study and General Study modules and
# the Frame of Reference (the standard requires them), plus image-pixel values that coincide by construction.
ALLOWED_FROM_SOURCE = {
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDsSequence", "PatientAge",
    "PatientSize", "PatientWeight", "AdditionalPatientHistory", "StudyInstanceUID", "StudyDate", "StudyTime",
    "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "NameOfPhysiciansReadingStudy",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "SpecificCharacterSet",
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "PixelRepresentation", "InstanceNumber",
    "NumberOfFrames", "LossyImageCompression", "PresentationLUTShape",
}
TWO_CLASSES = LabelMap.from_names(["liver", "tumour"])


def two_blobs(shape: tuple[int, int, int]) -> np.ndarray:
    """A liver-like box (1) on every slice and a tumour disc (2) on the last slice, not touching."""
    nz, ny, nx = shape
    lab = np.zeros(shape, dtype=np.uint8)
    lab[:, ny // 5 : ny // 2, nx // 4 : nx // 2] = 1
    yy, xx = np.ogrid[:ny, :nx]
    lab[-1][(yy - 3 * ny // 4) ** 2 + (xx - 3 * nx // 4) ** 2 <= (min(ny, nx) // 8) ** 2] = 2
    return lab


def test_phantom_series_one_segment_per_class(phantom_case, tmp_path):
    ref, truth = phantom_case.reference, phantom_case.class_map
    out = write_seg(truth, ref, tmp_path / "seg.dcm", phantom_case.labels)

    attributes = assert_seg_matches(out, ref, truth, tmp_path / "dcmqi")
    config = load_label_config()
    for attr, name in zip(attributes, ["liver", "kidney", "tumour"], strict=True):
        concept = config.concept_for(name)
        assert attr["SegmentLabel"] == name and attr["SegmentAlgorithmType"] == "AUTOMATIC"
        assert attr["SegmentedPropertyCategoryCodeSequence"]["CodeValue"] == concept.category.value
        assert attr["SegmentedPropertyTypeCodeSequence"]["CodeValue"] == concept.type.value
        assert np.abs(np.subtract(attr["recommendedDisplayRGBValue"], concept.colour)).max() <= 1
    back = read_seg(out, ref)
    assert np.array_equal(back.class_map.array, truth) and back.labels == phantom_case.labels

    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY" and ds.ContentLabel == "MEDMRCNN"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.series_uid
    assert ds.SeriesInstanceUID != ref.series_uid and ds.StudyInstanceUID == ref.source_datasets[0].StudyInstanceUID
    algo = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("medmrcnn", __version__)
    assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # DCM Artificial Intelligence
    # Empty frames are omitted: exactly one frame per (segment, slice) holding that segment.
    expected_frames = sum(int((truth == c).any(axis=(1, 2)).sum()) for c in (1, 2, 3))
    assert int(ds.NumberOfFrames) == expected_frames < 3 * ref.shape[0]
    # Patient/study modules come from the source; nothing else of the source header is copied.
    source = pydicom.dcmread(next(phantom_case.folder.iterdir()), stop_before_pixels=True)
    copied = {e.keyword for e in source if e.keyword in ds and ds[e.keyword].value == e.value}
    assert copied <= ALLOWED_FROM_SOURCE, copied - ALLOWED_FROM_SOURCE
    assert ds.PatientName == source.PatientName and ds.PatientID == source.PatientID
    assert "ContributingEquipmentSequence" not in ds and "InstitutionName" not in ds


def test_per_instance_segments_keep_instances_of_one_class_apart(phantom_case, tmp_path):
    # Tumours of the phantom are separate blobs of one class: per-instance export splits them into components.
    ref = phantom_case.reference
    tumours = np.where(phantom_case.class_map == 3, 3, 0).astype(np.uint8)
    out = write_seg(tumours, ref, tmp_path / "inst.dcm", phantom_case.labels, per_instance=True)

    back = read_seg(out, ref)
    ids = sorted(back.instance_classes)
    assert len(ids) >= 3 and all(back.labels.name_of(back.instance_classes[i]) == "tumour" for i in ids)
    assert_seg_matches(out, ref, back.instance_map.array, tmp_path / "dcmqi")
    for number in ids:  # each segment is exactly one phantom tumour, whole
        mask = back.instance_map.array == number
        tumour = np.unique(phantom_case.instance_map[mask])
        assert len(tumour) == 1 and np.array_equal(mask, phantom_case.instance_map == tumour[0])
    tracking = [(s.tracking_id, s.tracking_uid) for s in back.segments]
    assert all(t and u for t, u in tracking) and len({u for _, u in tracking}) == len(ids)
    assert [s.label for s in back.segments] == [t for t, _ in tracking]


def test_prediction_result_per_class_and_per_instance(phantom_case, tmp_path):
    # A VolumeResult whose liver is two touching instances: per-instance export keeps them apart.
    inference = pytest.importorskip("medmrcnn.inference")
    ref, labels = phantom_case.reference, phantom_case.labels
    instance_map = phantom_case.instance_map.copy()
    classes = dict(phantom_case.instance_classes)
    right_half = (instance_map == 1) & (np.arange(ref.shape[2]) >= ref.shape[2] // 2)
    instance_map[right_half] = 99
    classes[99] = 1
    records = [
        inference.InstanceRecord(
            id=i, class_id=c, class_name=labels.name_of(c), score_max=0.9, score_mean=0.8,
            voxel_count=int((instance_map == i).sum()), volume_ml=0.0, centroid_mm=(0.0, 0.0, 0.0),
            bbox=(0, 0, 0, 1, 1, 1), slice_range=(0, 0), longest_diameter_mm=0.0)
        for i, c in sorted(classes.items()) if (instance_map == i).any()
    ]
    lut = np.zeros(100, dtype=np.uint8)
    lut[list(classes)] = list(classes.values())
    result = inference.VolumeResult(volume=ref, instance_map=instance_map, class_map=lut[instance_map],
                                    instances=records, labels=labels)

    by_class = write_seg(result, ref, tmp_path / "class.dcm")
    assert_seg_matches(by_class, ref, phantom_case.class_map, tmp_path / "dcmqi_class")
    by_instance = write_seg(result, ref, tmp_path / "inst.dcm", per_instance=True)
    back = read_seg(by_instance, ref)
    assert [s.tracking_id for s in back.segments][:2] == ["liver 1", "liver 99"]
    assert len(back.segments) == len(records)
    to_segment = np.zeros(100, dtype=np.uint16)  # instance id (end of the tracking ID) -> segment number
    for seg in back.segments:
        to_segment[int(seg.tracking_id.split()[-1])] = seg.number
    expected = to_segment[instance_map]
    assert_seg_matches(by_instance, ref, expected, tmp_path / "dcmqi_inst")


def test_oblique_non_square_series(oblique_case, tmp_path):
    ref, truth = oblique_case.reference, oblique_case.class_map
    out = write_seg(truth, ref, tmp_path / "seg.dcm", oblique_case.labels)
    assert_seg_matches(out, ref, truth, tmp_path / "dcmqi")
    assert np.array_equal(read_seg(out, ref).class_map.array, truth)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR2_UNCR.dcm"])
def test_real_classic_images(name, tmp_path):
    ref = load_volume(real_file(name))
    truth = two_blobs(ref.shape)
    out = write_seg(truth, ref, tmp_path / "seg.dcm", TWO_CLASSES)
    assert_seg_matches(out, ref, truth, tmp_path / "dcmqi")
    assert np.array_equal(read_seg(out, ref).class_map.array, truth)


def test_real_enhanced_ct_with_reversed_frames(tmp_path):
    # eCT_Supplemental: Enhanced CT, 2 frames stored in reverse spatial order, x axis running to patient right.
    ref = load_volume(real_file("eCT_Supplemental.dcm"))
    truth = two_blobs(ref.shape)
    out = write_seg(truth, ref, tmp_path / "seg.dcm", TWO_CLASSES)
    assert_seg_matches(out, ref, truth, tmp_path / "dcmqi")
    assert np.array_equal(read_seg(out, ref).class_map.array, truth)


def test_legacy_converted_multiframe_phantom(phantom_case, tmp_path):
    # An enhanced (multi-frame) source built from 10 phantom slices given to the converter in shuffled order.
    from medmrcnn.compat import write_dicom

    datasets = sorted((pydicom.dcmread(f) for f in phantom_case.folder.iterdir()), key=lambda d: d.InstanceNumber)
    datasets = datasets[15:25]  # ten contiguous slices through liver and kidneys
    np.random.default_rng(0).shuffle(datasets)
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=hd.UID(), series_number=7, sop_instance_uid=hd.UID(), instance_number=1)
    write_dicom(mf, tmp_path / "enhanced.dcm")
    ref = load_volume(tmp_path / "enhanced.dcm")
    slices = ref.index_to_patient(np.array([[k, 0, 0] for k in range(ref.shape[0])]))
    phantom_z = np.rint((slices[:, 2] - phantom_case.reference.origin[2]) / phantom_case.reference.spacing[0])
    truth = phantom_case.class_map[phantom_z.astype(int)]
    out = write_seg(truth, ref, tmp_path / "seg.dcm", phantom_case.labels)
    assert_seg_matches(out, ref, truth, tmp_path / "dcmqi")


def test_series_with_a_missing_slice(tmp_path):
    # Loaded with allow_irregular (mean slice step in the affine): slices still pair with their own files.
    ph = make_ct_phantom(shape=(12, 96, 128), spacing=(3.0, 2.5, 2.5), n_tumours=3, seed=5)
    write_dicom_series(ph.volume, tmp_path / "series")
    (tmp_path / "series" / "IM0006.dcm").unlink()
    ref = load_volume(tmp_path / "series", allow_irregular=True)
    truth = np.delete(ph.class_map(), 5, axis=0)
    out = write_seg(truth, ref, tmp_path / "seg.dcm", ph.labels)
    assert_dciodvfy_clean(out)
    assert np.array_equal(highdicom_segment_map(out, ref), truth)
    assert np.array_equal(read_seg(out, ref).class_map.array, truth)
    # dcmqi rebuilds the regular 3 mm grid: the full phantom grid, with the missing slice empty.
    full = ph.class_map()
    full[5] = 0
    masks, _ = dcmqi_masks(out, ph.volume, tmp_path / "dcmqi")
    assert sorted(masks) == [1, 2, 3]
    for number, mask in masks.items():
        assert np.array_equal(mask, full == number)


def test_labelmap_segmentation_type(phantom_case, tmp_path):
    ref, truth = phantom_case.reference, phantom_case.class_map
    if not highdicom_supports_labelmap():
        with pytest.raises(ExportError, match="LABELMAP segmentations need highdicom >= 0.24"):
            write_seg(truth, ref, tmp_path / "lm.dcm", phantom_case.labels, segmentation_type="LABELMAP")
        assert not (tmp_path / "lm.dcm").exists()
        return
    out = write_seg(truth, ref, tmp_path / "lm.dcm", phantom_case.labels, segmentation_type="LABELMAP")
    assert pydicom.dcmread(out, stop_before_pixels=True).SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    assert_dciodvfy_clean(out)
    back = read_seg(out, ref)
    assert back.segmentation_type == "LABELMAP" and np.array_equal(back.class_map.array, truth)


@pytest.mark.parametrize("algorithm_type", ["SEMIAUTOMATIC", "MANUAL"])
def test_edited_and_manual_segmentations(algorithm_type, tmp_path):
    ref = load_volume(real_file("CT_small.dcm"))
    truth = two_blobs(ref.shape)
    out = write_seg(truth, ref, tmp_path / "seg.dcm", TWO_CLASSES, algorithm_type=algorithm_type)
    assert_seg_matches(out, ref, truth, tmp_path / "dcmqi")
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert {item.SegmentAlgorithmType for item in ds.SegmentSequence} == {algorithm_type}
    # A person's drawing names no algorithm; an edited prediction still names the one that made it.
    named = ["SegmentationAlgorithmIdentificationSequence" in item for item in ds.SegmentSequence]
    assert named == [algorithm_type != "MANUAL"] * 2
    assert [s.algorithm_type for s in read_seg(out, ref).segments] == [algorithm_type] * 2


def test_empty_prediction_writes_nothing(phantom_case, tmp_path):
    empty = np.zeros(phantom_case.reference.shape, dtype=np.uint8)
    with pytest.raises(ExportError, match="empty"):
        write_seg(empty, phantom_case.reference, tmp_path / "seg.dcm", phantom_case.labels)
    assert list(tmp_path.iterdir()) == []


def test_unknown_class_and_unnamed_values_fail_before_writing(phantom_case, tmp_path):
    ref, truth = phantom_case.reference, phantom_case.class_map
    with pytest.raises(LabelConfigError, match="'hepatic_lobule'.*--label-config"):
        write_seg(truth, ref, tmp_path / "a.dcm", LabelMap.from_names(["liver", "kidney", "hepatic_lobule"]))
    with pytest.raises(LabelConfigError, match="value 3 but only 2 class names"):
        write_seg(truth, ref, tmp_path / "b.dcm", LabelMap.from_names(["liver", "kidney"]))
    with pytest.raises(LabelConfigError, match="needs class names"):
        write_seg(truth, ref, tmp_path / "c.dcm")
    assert list(tmp_path.iterdir()) == []


def test_label_map_off_the_reference_grid_is_rejected(phantom_case, tmp_path):
    ref, truth = phantom_case.reference, phantom_case.class_map
    with pytest.raises(GeometryMismatchError, match="size"):
        write_seg(truth[:-1], ref, tmp_path / "a.dcm", phantom_case.labels)
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0]) @ ref.affine
    with pytest.raises(GeometryMismatchError, match="orientation"):
        write_seg(Volume(truth, flipped), ref, tmp_path / "b.dcm", phantom_case.labels)
    shifted = ref.affine.copy()
    shifted[:3, 3] += 5.0
    with pytest.raises(GeometryMismatchError, match="origin"):
        write_seg(Volume(truth, shifted), ref, tmp_path / "c.dcm", phantom_case.labels)
    coarse = ref.affine.copy()
    coarse[:3, :3] *= 2
    with pytest.raises(GeometryMismatchError, match="spacing"):
        write_seg(Volume(truth, coarse), ref, tmp_path / "d.dcm", phantom_case.labels)
    assert list(tmp_path.iterdir()) == []


def test_reference_without_dicom_headers_is_rejected(phantom_case, tmp_path):
    no_headers = Volume(phantom_case.reference.array, phantom_case.reference.affine)
    with pytest.raises(ExportError, match="not DICOM"):
        write_seg(phantom_case.class_map, no_headers, tmp_path / "seg.dcm", phantom_case.labels)


def test_inputs_untouched_and_no_identifiers_logged(phantom_case, tmp_path, caplog):
    ref = load_volume(phantom_case.folder)
    del ref.source_datasets[0].PatientSex  # anonymised data may drop type 2 attributes: the SEG gets them empty
    headers = [ds.to_json_dict() for ds in ref.source_datasets]
    truth = phantom_case.class_map
    before = truth.copy()
    with caplog.at_level(logging.DEBUG):
        out = write_seg(truth, ref, tmp_path / "seg.dcm", phantom_case.labels)
    assert np.array_equal(truth, before) and headers == [ds.to_json_dict() for ds in ref.source_datasets]
    assert "PatientSex" not in ref.source_datasets[0] and pydicom.dcmread(out).PatientSex == ""
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "wrote DICOM-SEG" in logged
    for ds in ref.source_datasets[:1]:
        for value in (str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate)):
            assert value and value not in logged


def test_boolean_and_float_label_maps(tmp_path):
    ref = load_volume(real_file("CT_small.dcm"))
    truth = two_blobs(ref.shape)
    out = write_seg(truth == 1, ref, tmp_path / "bool.dcm", LabelMap.from_names(["liver"]))
    masks, _ = dcmqi_masks(out, ref, tmp_path / "dcmqi")
    assert np.array_equal(masks[1], truth == 1)
    out = write_seg(truth.astype(np.float32), ref, tmp_path / "float.dcm", TWO_CLASSES)
    assert np.array_equal(read_seg(out, ref).class_map.array, truth)
    with pytest.raises(LabelConfigError, match="non-integer or negative"):
        write_seg(truth * 0.5, ref, tmp_path / "half.dcm", TWO_CLASSES)
    with pytest.raises(LabelConfigError, match="negative"):
        write_seg(-truth.astype(np.int16), ref, tmp_path / "neg.dcm", TWO_CLASSES)
