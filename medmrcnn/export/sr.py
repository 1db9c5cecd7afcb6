"""`write_sr`: the per-instance measurements of a result as a DICOM SR measurement report (TID 1500, highdicom).

One Comprehensive 3D SR per study. Each instance is one volumetric measurement group (TID 1411) that references its
segment in the study's DICOM-SEG (by SOP Instance UID and segment number) and holds the instance's volume (mL), its
longest axial diameter (mm) and its centre of mass (a SCOORD3D point in the series' frame of reference, LPS mm).
PACS viewers and registries read the numbers from the SR without parsing medmrcnn's JSON (docs/outputs.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from medmrcnn import __version__
from medmrcnn.compat import write_dicom
from medmrcnn.errors import ExportError
from medmrcnn.fileio import atomic_path
from medmrcnn.inference.result import InstanceRecord, VolumeResult

log = logging.getLogger(__name__)

MILLILITRE = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
MILLIMETRE = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
# The procedure each modality's report is about (TID 1500 row 4, CID 100); other modalities: a generic one.
PROCEDURES = {"CT": codes.LN.CTUnspecifiedBodyRegion, "MR": codes.LN.MRIUnspecifiedBodyRegion,
              "PT": codes.LN.PETUnspecifiedBodyRegion, "NM": codes.LN.NMUnspecifiedBodyRegion}
GENERIC_PROCEDURE = codes.SCT.ImagingProcedure
SERIES_DESCRIPTION = "medmrcnn measurements"


@dataclass(frozen=True)
class SegmentRef:
    """A segment of the DICOM-SEG: its number, and the coded category and type of what it shows."""

    number: int
    category: hd.sr.CodedConcept
    type: hd.sr.CodedConcept


def _concept(item: Any) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)


def segment_for_instance(seg: pydicom.Dataset, record: InstanceRecord) -> SegmentRef:
    """The segment of `seg` holding `record`: its own ("<class> <id>" tracking id) or else its class's segment."""
    by_tracking, by_label = {}, {}
    for item in seg.SegmentSequence:
        ref = SegmentRef(int(item.SegmentNumber), _concept(item.SegmentedPropertyCategoryCodeSequence[0]),
                         _concept(item.SegmentedPropertyTypeCodeSequence[0]))
        if "TrackingID" in item:
            by_tracking[str(item.TrackingID)] = ref
        by_label[str(item.SegmentLabel)] = ref
    found = by_tracking.get(f"{record.class_name} {record.id}") or by_label.get(record.class_name)
    if found is None:
        raise ExportError(f"the DICOM-SEG {seg.SOPInstanceUID} has no segment for {record.class_name} "
                          f"{record.id}; write the SR from the SEG of the same result")
    return found


def _measurement_group(
    record: InstanceRecord, seg: pydicom.Dataset, segment: SegmentRef, algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 for one instance: segment reference, finding, volume, longest axial diameter, centre of mass."""
    referenced = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=segment.number,
        source_series=hd.sr.SourceSeriesForSegmentation(
            seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
    )
    measurements = [
        hd.sr.Measurement(name=codes.SCT.Volume, value=round(float(record.volume_ml), 4), unit=MILLILITRE,
                          algorithm_id=algorithm),
        # The longest in-plane diameter over the instance's slices (a caliper on the axial images, as RECIST does).
        hd.sr.Measurement(name=codes.SCT.Diameter, value=round(float(record.longest_diameter_mm), 2),
                          unit=MILLIMETRE, derivation=codes.SCT.Maximum, algorithm_id=algorithm),
    ]
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{record.class_name} {record.id}"),
        referenced_segment=referenced,
        finding_type=segment.type,
        finding_category=segment.category,
        algorithm_id=algorithm,
        measurements=measurements,
    )
    # TID 1411 has no row for a point; the centre of mass goes into the group as a SCOORD3D POINT named
    # "Center of Mass" (DCM 128138), in the series' frame of reference, which viewers can jump to.
    centre = hd.sr.Scoord3DContentItem(
        name=codes.DCM.CenterOfMass, graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.asarray([record.centroid_mm], dtype=np.float64),
        frame_of_reference_uid=seg.FrameOfReferenceUID,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    group[0].ContentSequence.append(centre)
    return group


def write_sr(result: VolumeResult, seg_path: str | Path, path: str | Path, *,
             series_number: int | None = None) -> Path:
    """Write the TID 1500 measurement report of `result` atomically to `path`.

    Args:
        result: a VolumeResult on a DICOM series (its `volume.source_datasets` are the evidence).
        seg_path: the DICOM-SEG written from the same result (`medmrcnn.dicomseg.write_seg`); every measurement group
            references its segment there (its own with per-instance segments, else its class's).
        path: output .dcm file.
        series_number: SeriesNumber (default: the source's + 2000, beside the SEG's + 1000).
    Returns:
        `path`. Raises ExportError when the input is not DICOM or the SEG lacks a segment of an instance.
    """
    path = Path(path)
    sources = list(result.volume.source_datasets)
    if not sources:
        raise ExportError(f"{path}: no DICOM SR: the input is not DICOM")
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    if seg.StudyInstanceUID != sources[0].StudyInstanceUID:
        raise ExportError(f"{path}: the DICOM-SEG {seg_path} belongs to another study")
    algorithm = hd.sr.AlgorithmIdentification(name="medmrcnn", version=__version__)
    groups = [_measurement_group(r, seg, segment_for_instance(seg, r), algorithm) for r in result.instances]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="medmrcnn", manufacturer_name="medmrcnn", model_name="slice-wise Mask R-CNN"),
    )
    modality = str(sources[0].get("Modality", ""))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURES.get(modality, GENERIC_PROCEDURE),
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    if series_number is None:
        series_number = 2000 + int(sources[0].get("SeriesNumber") or 0)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*sources, seg],
            content=report[0],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medmrcnn",
            series_description=SERIES_DESCRIPTION,
            is_complete=True,
            is_final=False,  # an algorithm's result: verified only once a person signs it off
        )
    except ValueError as e:
        raise ExportError(f"{path}: highdicom rejected the measurement report: {e}") from e
    with atomic_path(path) as tmp:
        write_dicom(sr, tmp)
    log.info("wrote DICOM SR %s: %d measurement groups", path, len(groups))
    return path
