"""Read DICOM headers (never pixel data) and group files into series with their slice order and geometry.

Each file is opened once here: `pydicom.dcmread(stop_before_pixels=True)` leaves the file positioned at the Pixel Data
element, whose offset is kept so that `dicom_pixels` reads the pixels without parsing the header a second time.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from medmrcnn.compat import decoder_available
from medmrcnn.errors import VolumeLoadError
from medmrcnn.geometry import (
    StackError, functional_value, image_planes, orientation_code, spacing_zyx, stack_geometry,
)
from medmrcnn.io.series import (
    DICOM_MULTIFRAME, DICOM_NON_IMAGE, DICOM_SERIES, SeriesInfo, check_dimensions, one_line,
)

log = logging.getLogger(__name__)

# Objects that are not images for this tool: listed by `scan`, never loaded.
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "SR", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "PR", "KO", "DOC", "REG", "FID", "RWV", "PLAN", "ECG",
     "HD", "AU", "RESP"}
)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
_PIXEL_DATA_TAGS = {b"\xe0\x7f\x10\x00": "<", b"\x7f\xe0\x00\x10": ">"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}
UNDEFINED_LENGTH = 0xFFFFFFFF
_ENDIAN = {"<": "little", ">": "big"}


def io_workers() -> int:
    """Threads for file reads: I/O and decompression release the GIL, so a few more than the cores pays off."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


@dataclass
class DicomFile:
    """One DICOM file's header and where its pixel data starts.

    Attributes:
        path: the file.
        header: the dataset without pixel data (what `Volume.source_datasets` holds).
        pixel_offset: byte offset of the Pixel Data element in the file; None when absent or unknown (deflated).
        value_offset: byte offset of the Pixel Data value (after the element header).
        value_length: declared length of the value in bytes; None for encapsulated (compressed) data.
        file_size: size in bytes, to detect truncated pixel data without reading it.
    """

    path: Path
    header: Dataset
    pixel_offset: int | None
    file_size: int
    value_offset: int = 0
    value_length: int | None = None

    @property
    def transfer_syntax(self) -> UID:
        """The file's transfer syntax (Implicit VR Little Endian when the file meta lacks it)."""
        meta = getattr(self.header, "file_meta", None)
        return UID(meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian) if meta else
                   pydicom.uid.ImplicitVRLittleEndian)

    @property
    def has_pixels(self) -> bool:
        """True when the file has a (7FE0,0010) Pixel Data element."""
        return self.pixel_offset is not None or self.transfer_syntax.is_deflated


def read_header(path: Path) -> DicomFile | None:
    """Read one file's header; None when it is not DICOM. Raises VolumeLoadError for unreadable files."""
    try:
        with open(path, "rb") as f:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except InvalidDicomError:
                f.seek(0)
                start = f.read(132)
                if start[128:132] == b"DICM":
                    raise VolumeLoadError(path, "corrupt DICOM file (unreadable file meta information)") from None
                # No 'DICM' preamble: accept only raw datasets that start with a group 0008 tag (ACR-NEMA style).
                if start[:2] not in (b"\x08\x00", b"\x00\x08"):  # little / big endian
                    return None
                f.seek(0)
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            offset = f.tell()
            element = f.read(12)
            size = os.fstat(f.fileno()).st_size
    except PermissionError:
        raise VolumeLoadError(path, "permission denied (cannot read the file)") from None
    except IsADirectoryError:
        return None
    except InvalidDicomError:
        return None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise VolumeLoadError(path, f"truncated or corrupt DICOM header ({one_line(e)})") from None
    if len(ds) == 0 or not (_sop_class(ds) or "Modality" in ds or "Rows" in ds):
        if getattr(ds, "preamble", None) is not None:
            raise VolumeLoadError(path, "corrupt DICOM file (DICM preamble but no readable data elements)")
        return None  # forced read of a file that only looked like DICOM
    if not element and _ends_inside_an_element(ds, size):
        # pydicom stops quietly at the end of the file, even in the middle of an element
        raise VolumeLoadError(path, "truncated DICOM file (it ends inside a data element of the header)")
    df = DicomFile(path=path, header=ds, pixel_offset=None, file_size=size)
    if df.transfer_syntax.is_deflated:
        return df  # offsets refer to the inflated stream; pixels are read with a full dcmread
    byte_order = _PIXEL_DATA_TAGS.get(element[:4])
    if byte_order is None or len(element) < 8:
        return df
    df.pixel_offset = offset
    if df.transfer_syntax.is_implicit_VR:
        length, df.value_offset = int.from_bytes(element[4:8], "little"), offset + 8
    elif element[4:6] in _LONG_VRS:
        length, df.value_offset = int.from_bytes(element[8:12], _ENDIAN[byte_order]), offset + 12
    else:
        length, df.value_offset = int.from_bytes(element[6:8], _ENDIAN[byte_order]), offset + 8
    df.value_length = None if length == UNDEFINED_LENGTH else length
    return df


def _sop_class(ds: Dataset) -> str:
    """SOPClassUID, or the file meta's MediaStorageSOPClassUID (DICOMDIR has only the latter); "" if neither."""
    meta = getattr(ds, "file_meta", None)
    return str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))


def _ends_inside_an_element(ds: Dataset, size: int) -> bool:
    """True when the last element read does not end exactly at the end of the file (cut inside its header or value).

    Only for files read to the end (no pixel data found); undefined-length sequences cannot be checked.
    """
    if not len(ds):
        return False
    raw = ds.get_item(max(ds.keys()))
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if not isinstance(tell, int) or not isinstance(length, int) or length == UNDEFINED_LENGTH:
        return False
    return tell + length != size


def read_headers(paths: Iterable[Path]) -> tuple[list[DicomFile], list[Path]]:
    """Read the headers of `paths` (in parallel); returns (DICOM files, paths that are not DICOM)."""
    paths = list(paths)
    if len(paths) > 4:
        with ThreadPoolExecutor(io_workers()) as pool:
            results = list(pool.map(read_header, paths))
    else:
        results = [read_header(p) for p in paths]
    found = [r for r in results if r is not None]
    skipped = [p for p, r in zip(paths, results, strict=True) if r is None]
    return found, skipped


def _text(ds: Dataset, keyword: str, default: str = "") -> str:
    value = ds.get(keyword, default)
    return default if value is None else str(value).strip()


def _number(ds: Dataset, keyword: str, default: float) -> float:
    value = ds.get(keyword)
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _non_image_reason(ds: Dataset) -> str | None:
    """Why a DICOM object is not an image for this tool, None when it is one."""
    if _sop_class(ds) == MEDIA_STORAGE_DIRECTORY:
        return "DICOMDIR (media directory), ignored"
    modality = _text(ds, "Modality").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"{modality} object: not an image, skipped"
    if "Rows" not in ds or "Columns" not in ds:
        return f"{modality or 'DICOM'} object without image attributes: skipped"
    return None


@dataclass
class DicomPlan:
    """How to assemble the pixels of a scanned series.

    Attributes:
        files: the files in slice order (classic series) or the one multi-frame file.
        frames: 0-based frame index at each z (multi-frame), None for one frame per file.
        slopes, intercepts: RescaleSlope / RescaleIntercept at each z.
    """

    files: list[DicomFile]
    frames: np.ndarray | None
    slopes: np.ndarray
    intercepts: np.ndarray


def _base_info(kind: str, files: list[DicomFile]) -> SeriesInfo:
    ds = files[0].header
    number = ds.get("SeriesNumber")
    try:
        number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    return SeriesInfo(
        kind=kind, paths=[f.path for f in files], series_uid=_text(ds, "SeriesInstanceUID"),
        modality=_text(ds, "Modality", "OT") or "OT", description=_text(ds, "SeriesDescription"),
        n_files=len(files), number=number,
    )


def _pixel_problem(info: SeriesInfo, files: list[DicomFile], frames: int) -> str | None:
    """Reason the series cannot be decoded (absurd size, no pixels, truncated, unsupported syntax), from headers."""
    try:
        check_dimensions(info.source, info.shape or (0, 0, 0))
    except VolumeLoadError as e:
        return e.reason
    for f in files:
        name = "" if f.path == info.source else f"{f.path.name}: "  # the error names the series' folder
        if not f.has_pixels:
            return f"{name}no pixel data"
        ts = f.transfer_syntax
        if ts.is_compressed and not decoder_available(ts):
            return f"{name}unsupported transfer syntax {ts.name} ({ts}); no installed decoder"
        ds = f.header
        bits = int(ds.get("BitsAllocated", 16))
        if f.pixel_offset is not None and not ts.is_compressed and bits >= 8:
            need = frames * int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * (bits // 8)
            if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
                need = need * 2 // 3  # chroma subsampled horizontally: 2 samples per pixel on average
            have = min(f.value_length if f.value_length is not None else 0, f.file_size - f.value_offset)
            if have < need:
                return f"{name}truncated pixel data ({max(have, 0)} of {need} bytes)"
    return None


def _classic_series(files: list[DicomFile]) -> SeriesInfo:
    """A series of single-frame files: consistent sizes, ordered in space."""
    info = _base_info(DICOM_SERIES, files)
    sizes = defaultdict(int)
    for f in files:
        sizes[(int(f.header.Rows), int(f.header.Columns))] += 1
    if len(sizes) > 1:
        listing = ", ".join(f"{r}x{c} ({n} images)" for (r, c), n in sorted(sizes.items(), key=lambda kv: -kv[1]))
        info.error = f"mixed image sizes in one series: {listing}"
        return info
    rows, cols = next(iter(sizes))
    have_geometry = ["ImagePositionPatient" in f.header and "ImageOrientationPatient" in f.header for f in files]
    ds0 = files[0].header
    thickness = _number(ds0, "SpacingBetweenSlices", 0.0) or _number(ds0, "SliceThickness", 0.0) or None
    try:
        if not any(have_geometry) and len(files) == 1:  # a projection image (DX, MG, SC, ...)
            info.warnings.append("no patient geometry (ImagePositionPatient missing): identity orientation, origin "
                                 "0")
            ps = ds0.get("PixelSpacing") or ds0.get("ImagerPixelSpacing")
            spacing = [float(v) for v in ps] if ps else [1.0, 1.0]
            geo = stack_geometry(np.zeros((1, 3)), np.array([[1.0, 0, 0, 0, 1.0, 0]]), np.array([spacing]), thickness)
        else:
            planes = image_planes([f.header for f in files])
            geo = stack_geometry(planes.positions, planes.orientations, planes.spacings, thickness)
    except (StackError, ValueError) as e:
        info.error = str(e)
        return info
    if not (ds0.get("PixelSpacing") or ds0.get("ImagerPixelSpacing")):
        info.warnings.append("no PixelSpacing: 1 mm pixels assumed")
    ordered = [files[i] for i in geo.order]
    info.paths = [f.path for f in ordered]
    info.shape = (len(files), rows, cols)
    info.affine, info.irregular = geo.affine, geo.irregular
    info.warnings += geo.warnings
    slopes = np.array([_number(f.header, "RescaleSlope", 1.0) for f in ordered])
    intercepts = np.array([_number(f.header, "RescaleIntercept", 0.0) for f in ordered])
    info.plan = DicomPlan(files=ordered, frames=None, slopes=slopes, intercepts=intercepts)
    info.error = _pixel_problem(info, ordered, 1)
    return info


def _multiframe(f: DicomFile) -> SeriesInfo:
    """One enhanced (or legacy-converted) multi-frame object: frames ordered by their Plane Position."""
    info = _base_info(DICOM_MULTIFRAME, [f])
    ds = f.header
    n = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n:
        info.error = (f"multi-frame image with {n} frames but no per-frame functional groups (no per-frame "
                      "geometry: cine or stripped enhanced object); cannot place frames in space")
        return info
    slopes, intercepts = [], []
    for fg in per_frame:
        slope = functional_value(ds, fg, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = functional_value(ds, fg, "PixelValueTransformationSequence", "RescaleIntercept")
        slopes.append(float(slope) if slope not in (None, "") else _number(ds, "RescaleSlope", 1.0))
        intercepts.append(float(intercept) if intercept not in (None, "") else _number(ds, "RescaleIntercept", 0.0))
    thickness = (functional_value(ds, per_frame[0], "PixelMeasuresSequence", "SpacingBetweenSlices")
                 or functional_value(ds, per_frame[0], "PixelMeasuresSequence", "SliceThickness"))
    try:
        planes = image_planes([ds])
        geo = stack_geometry(planes.positions, planes.orientations, planes.spacings,
                             float(thickness) if thickness not in (None, "") else None)
    except (StackError, ValueError) as e:
        info.error = str(e)
        return info
    if not planes.has_spacing:
        info.warnings.append("no PixelSpacing: 1 mm pixels assumed")
    info.shape = (n, int(ds.Rows), int(ds.Columns))
    info.affine, info.irregular = geo.affine, geo.irregular
    info.warnings += geo.warnings
    info.plan = DicomPlan(files=[f], frames=geo.order, slopes=np.array(slopes)[geo.order],
                          intercepts=np.array(intercepts)[geo.order])
    info.error = _pixel_problem(info, [f], n)
    return info


def _is_multiframe(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1


def _guarded(build, kind: str, files: list[DicomFile]) -> SeriesInfo:
    """`build(files)`, or an entry carrying the error when header values are malformed (bad VR values, ...)."""
    try:
        return build(files[0] if kind == DICOM_MULTIFRAME else files)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        info = _base_info(kind, files)
        info.error = f"invalid header values ({one_line(e)})"
        return info


# Attributes that tell apart several stacks sharing one SeriesInstanceUID, tried in this order (as dcm2niix does):
# the image plane (orientation and size: localizers, multi-plane scouts), echoes, temporal positions / phases,
# acquisitions, image types. Only what is needed is used, and only when the images cannot form one stack.
_STACK_KEYS = (
    ("plane", lambda ds: (tuple(np.round(np.asarray(ds.get("ImageOrientationPatient") or [0] * 6, dtype=float), 3)),
                          int(ds.Rows), int(ds.Columns))),
    ("echo", lambda ds: str(ds.get("EchoNumbers", "")).strip()),
    ("temporal position", lambda ds: str(ds.get("TemporalPositionIdentifier", "")).strip()),
    ("trigger time", lambda ds: str(ds.get("TriggerTime", "")).strip()),
    ("acquisition", lambda ds: str(ds.get("AcquisitionNumber", "")).strip()),
    ("image type", lambda ds: "\\".join(ds.get("ImageType", []) or [])),
)
_SEVERAL_STACKS = ("mixed orientations", "duplicate slice positions", "mixed image sizes")


def split_stacks(files: list[DicomFile]) -> list[SeriesInfo]:
    """The single-frame images of one SeriesInstanceUID as one stack or, when they cannot form one (several
    orientations, sizes, or images at the same positions), as sub-series told apart by `_STACK_KEYS`; each
    sub-series is labelled in `SeriesInfo.subseries` (e.g. "echo 2", "plane 1/3")."""
    whole = _guarded(_classic_series, DICOM_SERIES, files)
    if not (whole.error or "").startswith(_SEVERAL_STACKS):
        return [whole]
    used: list[tuple[str, object]] = []
    for name, key in _STACK_KEYS:
        try:
            values = [key(f.header) for f in files]
        except (TypeError, ValueError, AttributeError):
            continue
        if len(set(values)) < 2:
            continue
        used.append((name, values))
        groups: dict[tuple, list[DicomFile]] = defaultdict(list)
        for i, f in enumerate(files):
            groups[tuple(v[i] for _, v in used)].append(f)
        parts = [_guarded(_classic_series, DICOM_SERIES, g) for g in groups.values()]
        if any((p.error or "").startswith(_SEVERAL_STACKS) for p in parts):
            continue
        for part, combination in zip(parts, groups, strict=True):
            part.subseries = ", ".join(_sub_label(n, v, vs) for (n, vs), v in zip(used, combination, strict=True))
        log.info("%s: %d stacks in one series, split by %s", whole.source, len(parts), ", ".join(n for n, _ in used))
        return parts
    return [whole]


def _sub_label(name: str, value: object, values: list) -> str:
    """'echo 2', or 'plane 1/3' for values without a readable number."""
    if name == "plane":
        distinct = sorted(set(values), key=values.index)
        return f"plane {distinct.index(value) + 1}/{len(distinct)}"
    return f"{name} {value or '(none)'}"


def group_series(files: list[DicomFile]) -> list[SeriesInfo]:
    """Group headers by SeriesInstanceUID into classic series, multi-frame objects and non-image entries."""
    by_uid: dict[str, list[DicomFile]] = defaultdict(list)
    for f in files:
        by_uid[_text(f.header, "SeriesInstanceUID") or f"(no SeriesInstanceUID) {f.path.parent}"].append(f)
    infos: list[SeriesInfo] = []
    for group in by_uid.values():
        images, singles = [], []
        reasons: dict[str, list[DicomFile]] = defaultdict(list)
        for f in group:
            reason = _non_image_reason(f.header)
            if reason is not None:
                reasons[reason].append(f)
            elif _is_multiframe(f.header):
                images.append(f)
            else:
                singles.append(f)
        for reason, fs in reasons.items():
            info = _base_info(DICOM_NON_IMAGE, fs)
            info.warnings.append(reason)
            infos.append(info)
        infos += [_guarded(_multiframe, DICOM_MULTIFRAME, [f]) for f in images]
        if singles:
            infos += split_stacks(singles)
    for info in infos:
        if info.affine is not None:
            info.orientation = orientation_code(info.affine)
            info.spacing = spacing_zyx(info.affine)
    for info in infos:
        if info.kind == DICOM_NON_IMAGE:
            log.info("%s: %s", info.source, info.warnings[0])
    return infos
