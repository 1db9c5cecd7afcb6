"""Write a CT `Volume` as a classic single-frame DICOM series (CT Image Storage), as a scanner would."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medmrcnn.compat import write_dicom
from medmrcnn.volume import Volume

_PREFIX = "1.2.826.0.1.3680043.10.1417."  # medmrcnn's UID root for synthetic data


def _ds(v: float) -> str:
    return f"{v:.6f}".rstrip("0").rstrip(".")[:16]


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    patient_name: str = "Phantom^Synthetic",
    patient_id: str = "PHANTOM001",
    series_description: str = "Synthetic CT phantom",
    shuffle_names: bool = False,
    seed: int = 0,
) -> list[Path]:
    """Write one file per slice and return the paths (in slice order).

    Geometry comes from the volume's affine: ImagePositionPatient of slice k is affine @ (0, 0, k, 1),
    ImageOrientationPatient is the row (x) and column (y) direction, PixelSpacing is (row spacing, column spacing).
    Values are stored as uint16 with RescaleIntercept -1024, slope 1. With `shuffle_names`, file names are random
    so readers cannot rely on them for ordering.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid, series_uid, for_uid = (generate_uid(_PREFIX) for _ in range(3))
    now = datetime.datetime(2026, 1, 1, 9, 0, 0)
    direction = volume.direction
    sz, sy, sx = volume.spacing
    stored = np.clip(volume.array.astype(np.int32) + 1024, 0, 4095).astype(np.uint16)
    paths = []
    for k in range(volume.shape[0]):
        sop_uid = generate_uid(_PREFIX)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = _PREFIX + "1"
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = "SYN0001"
        ds.Modality = "CT"
        ds.Manufacturer = "medmrcnn synthetic"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic abdomen"
        ds.SeriesDescription = series_description
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.KVP = "120"
        ds.PatientPosition = "FFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "1", 1, 1, k + 1
        ds.ImagePositionPatient = [_ds(v) for v in volume.affine @ np.array([0, 0, k, 1.0])][:3]
        ds.ImageOrientationPatient = [_ds(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(np.dot(volume.affine @ np.array([0, 0, k, 1.0]), np.r_[np.cross(direction[:, 0], direction[:, 1]), 0])))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = stored[k].tobytes()
        name = f"{rng.integers(1 << 40):010x}.dcm" if shuffle_names else f"IM{k + 1:04d}.dcm"
        path = out / name
        write_dicom(ds, path)
        paths.append(path)
    return paths


__all__ = ["write_dicom_series"]
