"""The only place that knows which pydicom major version is installed (2.4 under MONAI Label 0.8.5, else 3.x)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def write_dicom(ds: Dataset, path: str | Path) -> None:
    """Write `ds` as a DICOM Part 10 file (preamble + file meta) with either pydicom major version."""
    if PYDICOM_MAJOR >= 3:
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    else:
        ts = ds.file_meta.TransferSyntaxUID
        ds.is_little_endian = True
        ds.is_implicit_VR = ts == pydicom.uid.ImplicitVRLittleEndian
        pydicom.dcmwrite(str(path), ds, write_like_original=False)
