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


def decoder_available(transfer_syntax: str) -> bool:
    """True when an installed pixel data decoder (pylibjpeg, pillow, ...) handles `transfer_syntax`."""
    uid = pydicom.uid.UID(transfer_syntax)
    if PYDICOM_MAJOR >= 3:
        from pydicom.pixels import get_decoder

        try:
            return bool(get_decoder(uid).is_available)
        except NotImplementedError:
            return False
    return any(h.is_available() and h.supports_transfer_syntax(uid) for h in pydicom.config.pixel_data_handlers)


def decode_pixels(ds: Dataset) -> "np.ndarray":
    """Decode all frames of `ds` to (frames, rows, cols[, samples]); colour comes back as RGB in both versions."""
    import numpy as np

    if PYDICOM_MAJOR < 3:
        ts = ds.file_meta.TransferSyntaxUID
        ds.is_little_endian = ts != pydicom.uid.ExplicitVRBigEndian
        ds.is_implicit_VR = ts == pydicom.uid.ImplicitVRLittleEndian
    arr = ds.pixel_array
    if PYDICOM_MAJOR < 3 and str(ds.PhotometricInterpretation).startswith("YBR") and "JPEG" not in ts.name:
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, ds.PhotometricInterpretation, "RGB")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    return np.asarray(arr).reshape((frames, int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ()))


def highdicom_supports_labelmap() -> bool:
    """True when the installed highdicom writes and reads LABELMAP segmentations (0.24+; MONAI Label's 0.22 does not)."""
    from highdicom.seg import SegmentationTypeValues

    return hasattr(SegmentationTypeValues, "LABELMAP")
