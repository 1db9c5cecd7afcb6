"""DICOM SR measurement report (TID 1500): dciodvfy-clean, and read back by highdicom with the result's numbers and
references to the segments of the DICOM-SEG written beside it; `medmrcnn infer --formats sr` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from medmrcnn.cli import main
from medmrcnn.dicomseg import write_seg
from medmrcnn.errors import ExportError
from medmrcnn.export.sr import write_sr
from medmrcnn.inference import VolumeResult
from medmrcnn.io import load_volume
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from tests.dicomseg.seg_tools import dciodvfy_report
from tests.inference.truth import result_from_truth

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def assert_dciodvfy_has_no_errors(path: Path) -> None:
    """dciodvfy prints no Error and no Warning line for `path`."""
    errors, warnings = dciodvfy_report(path)
    assert not errors and not warnings, "\n".join(errors + warnings)


@pytest.fixture(scope="module")
def dicom_result(tmp_path_factory) -> VolumeResult:
    """A perfect prediction on a phantom CT written as DICOM and loaded back (so it carries its source headers)."""
    ph = make_ct_phantom(shape=(12, 96, 96), spacing=(4.0, 2.5, 2.5), n_tumours=2, seed=3)
    folder = tmp_path_factory.mktemp("sr") / "series"
    write_dicom_series(ph.volume, folder, series_description="Abdomen")
    ph.volume = load_volume(folder)
    return result_from_truth(ph)


def read_groups(path: Path) -> dict[str, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """The SR's volumetric measurement groups by tracking identifier, read by highdicom."""
    sr = hd.sr.srread(path)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    return {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}


def value_of(group, name) -> tuple[float, str]:
    (m,) = group.get_measurements(name=name)
    return m.value, m.unit.value


@pytest.mark.parametrize("per_instance", [True, False], ids=["instance-segments", "class-segments"])
def test_sr_reads_back_with_the_measurements_and_segment_references(dicom_result, tmp_path, per_instance):
    seg_path, sr_path = tmp_path / "seg.dcm", tmp_path / "sr.dcm"
    write_seg(dicom_result, dicom_result.volume, seg_path, per_instance=per_instance)
    write_sr(dicom_result, seg_path, sr_path)
    assert_dciodvfy_has_no_errors(sr_path)

    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    segment_of = {str(s.get("TrackingID", s.SegmentLabel)): s for s in seg.SegmentSequence}
    sr = pydicom.dcmread(sr_path)
    assert sr.StudyInstanceUID == dicom_result.volume.source_datasets[0].StudyInstanceUID
    assert sr.PatientID == dicom_result.volume.source_datasets[0].PatientID
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in evidence
    assert {d.SOPInstanceUID for d in dicom_result.volume.source_datasets} <= evidence

    groups = read_groups(sr_path)
    assert len(groups) == dicom_result.num_instances
    for record in dicom_result.instances:
        group = groups[f"{record.class_name} {record.id}"]
        assert value_of(group, codes.SCT.Volume) == (pytest.approx(record.volume_ml, abs=1e-4), "ml")
        assert value_of(group, codes.SCT.Diameter) == (pytest.approx(record.longest_diameter_mm, abs=0.01), "mm")
        (point,) = [i for i in group[0].ContentSequence if i.ValueType == "SCOORD3D"]
        assert point.ConceptNameCodeSequence[0].CodeValue == codes.DCM.CenterOfMass.value
        assert point.ReferencedFrameOfReferenceUID == seg.FrameOfReferenceUID
        assert np.allclose(point.GraphicData, record.centroid_mm, atol=0.01)
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
        segment = segment_of[f"{record.class_name} {record.id}" if per_instance else record.class_name]
        assert int(ref.ReferencedSegmentNumber) == int(segment.SegmentNumber)
        assert group.finding_type.value == segment.SegmentedPropertyTypeCodeSequence[0].CodeValue


def test_sr_refuses_a_seg_of_another_study(dicom_result, tmp_path):
    other = make_ct_phantom(shape=(6, 64, 64), spacing=(4.0, 3.0, 3.0), n_tumours=1, seed=9)
    write_dicom_series(other.volume, tmp_path / "other")
    other.volume = load_volume(tmp_path / "other")
    write_seg(result_from_truth(other), other.volume, tmp_path / "other-seg.dcm")
    with pytest.raises(ExportError, match="another study"):
        write_sr(dicom_result, tmp_path / "other-seg.dcm", tmp_path / "sr.dcm")
    assert not (tmp_path / "sr.dcm").exists()


def test_infer_formats_sr_writes_a_seg_and_an_sr_that_references_it(dicom_result, tmp_path):
    """Demo weights on a small phantom: `infer --formats sr` writes seg.dcm (one segment per instance) and sr.dcm."""
    series = Path(dicom_result.volume.source_datasets[0].filename).parent
    out = tmp_path / "out"
    assert main(["infer", str(series), "-o", str(out), "--formats", "sr", "--device", "cpu", "--quiet"]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    manifest = json.loads((folder / "study.json").read_text())
    assert manifest["outcome"]["outputs"] == ["seg.dcm", "sr.dcm"]
    assert_dciodvfy_has_no_errors(folder / "sr.dcm")
    seg = pydicom.dcmread(folder / "seg.dcm", stop_before_pixels=True)
    groups = read_groups(folder / "sr.dcm")
    assert sorted(groups) == sorted(str(s.TrackingID) for s in seg.SegmentSequence)
    numbers = {str(s.TrackingID): int(s.SegmentNumber) for s in seg.SegmentSequence}
    for tracking, group in groups.items():
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        assert (ref.ReferencedSOPInstanceUID, int(ref.ReferencedSegmentNumber)) == (seg.SOPInstanceUID,
                                                                                     numbers[tracking])


def test_infer_formats_sr_without_findings_says_why(dicom_result, tmp_path):
    from tests.batch.helpers import save_tiny_checkpoint

    weights = save_tiny_checkpoint(tmp_path / "tiny.safetensors")  # untrained: finds nothing
    series = Path(dicom_result.volume.source_datasets[0].filename).parent
    out = tmp_path / "out"
    assert main(["infer", str(series), "-o", str(out), "--formats", "sr", "--weights", str(weights), "--device",
                 "cpu", "--quiet"]) == 0
    (manifest,) = [json.loads(p.read_text()) for p in out.glob("*/study.json")]
    assert manifest["outcome"]["outputs"] == []
    assert "no DICOM-SEG or SR: nothing found" in " ".join(manifest["outcome"]["notes"])
