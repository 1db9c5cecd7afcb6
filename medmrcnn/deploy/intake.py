"""What the node accepts: image SOP classes it can segment, with consistent headers; stored atomically in the
on-disk queue `STORAGE/incoming/<series key>/<SOP Instance UID>.dcm`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID

from medmrcnn.fileio import atomic_path

# Image storage SOP classes medmrcnn's DICOM reader segments; anything else is refused (0x0122).
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image",
    "1.2.840.10008.5.1.4.1.1.128": "PET Image",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image",
}
# C-STORE statuses (PS3.4 B.2.3 and PS3.7 C): refused SOP class, out of resources, data set does not match the SOP
# class, cannot understand.
SOP_CLASS_NOT_SUPPORTED, OUT_OF_RESOURCES, DOES_NOT_MATCH, CANNOT_UNDERSTAND = 0x0122, 0xA700, 0xA900, 0xC000
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns", "BitsAllocated")


class Refused(Exception):
    """An instance the node does not take: `status` is the C-STORE status, the message says why (no patient data)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Accepted:
    """What the queue needs to know of a checked instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str


def series_key(series_uid: str) -> str:
    """Short stable name of a series for folders and logs (a hash: UIDs stay out of the logs)."""
    return hashlib.sha256(series_uid.encode()).hexdigest()[:16]


def _valid_uid(value: object) -> bool:
    text = str(value or "")
    return 0 < len(text) <= 64 and bool(_UID.match(text))


def check_instance(sop_class_uid: str, ds: Dataset, affected_sop_instance_uid: str) -> Accepted:
    """Check a received instance before it is stored; raises Refused with the status and reason."""
    if sop_class_uid not in IMAGE_SOP_CLASSES:
        name = UID(sop_class_uid).name if sop_class_uid else "no SOP class"
        raise Refused(SOP_CLASS_NOT_SUPPORTED, f"refused: {name} ({sop_class_uid}) is not an image SOP class this "
                                               "node segments")
    missing = [k for k in _REQUIRED if k not in ds or ds[k].value in (None, "")]
    if missing or "PixelData" not in ds:
        raise Refused(DOES_NOT_MATCH, f"refused: {IMAGE_SOP_CLASSES[sop_class_uid]} without "
                                      f"{', '.join(missing + ([] if 'PixelData' in ds else ['PixelData']))}")
    bad = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not _valid_uid(ds[k].value)]
    if bad:
        raise Refused(DOES_NOT_MATCH, f"refused: malformed {', '.join(bad)}")
    if str(ds.SOPInstanceUID) != str(affected_sop_instance_uid):
        raise Refused(DOES_NOT_MATCH, "refused: SOPInstanceUID differs from the request's Affected SOP Instance UID")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not UID(ts).is_compressed:
        frames = int(ds.get("NumberOfFrames") or 1)
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * frames
                    * int(ds.BitsAllocated) + 7) // 8
        got = len(ds.PixelData)
        if got < expected:
            raise Refused(DOES_NOT_MATCH, f"refused: pixel data holds {got} bytes, the header needs {expected} "
                                          f"({ds.Rows}x{ds.Columns}x{frames}, {ds.BitsAllocated} bits)")
    return Accepted(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))


def store_instance(incoming: Path, accepted: Accepted, encoded: bytes) -> tuple[Path, bool]:
    """Write the instance (DICOM file bytes) atomically into the queue; returns (path, new: not stored before)."""
    path = incoming / series_key(accepted.series_uid) / f"{accepted.sop_instance_uid}.dcm"
    new = not path.exists()
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded)
    return path, new
