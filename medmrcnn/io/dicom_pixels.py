"""Decode the pixels of a scanned DICOM series once, into one preallocated (z, y, x) array, and apply rescale.

Native (uncompressed) monochrome data is read straight from the Pixel Data offset found by `dicom_scan` into the
output buffer (no second header parse, no intermediate copy); compressed data goes through pydicom's decoders
(pylibjpeg: JPEG, JPEG-LS, JPEG 2000, RLE). Files are read by a thread pool.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset

from medmrcnn.compat import decode_pixels
from medmrcnn.errors import VolumeLoadError
from medmrcnn.geometry import image_planes, regular_grid, spacing_zyx
from medmrcnn.io.colour import rgb_to_single
from medmrcnn.io.dicom_scan import DicomFile, DicomPlan, io_workers
from medmrcnn.io.series import DICOM_MULTIFRAME, SeriesInfo, one_line
from medmrcnn.volume import Volume

_PIXEL_MODULE = (
    "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "NumberOfFrames", "Rows", "Columns",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
)


@dataclass(frozen=True)
class PixelFormat:
    """The Image Pixel module of a series, as numpy needs it."""

    rows: int
    cols: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str

    @classmethod
    def of(cls, ds: Dataset, path: object) -> PixelFormat:
        """Read the format from a header; raise VolumeLoadError for formats this reader refuses."""
        fmt = cls(
            rows=int(ds.Rows), cols=int(ds.Columns), samples=int(ds.get("SamplesPerPixel", 1)),
            bits_allocated=int(ds.get("BitsAllocated", 16)), bits_stored=int(ds.get("BitsStored", 0) or 0),
            signed=int(ds.get("PixelRepresentation", 0)) == 1,
            photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
        )
        if fmt.bits_allocated not in (8, 16, 32):
            raise VolumeLoadError(path, f"unsupported BitsAllocated {fmt.bits_allocated} (expected 8, 16 or 32)")
        if fmt.photometric == "PALETTE COLOR":
            raise VolumeLoadError(path, "PALETTE COLOR images are not supported")
        if fmt.samples not in (1, 3):
            raise VolumeLoadError(path, f"unsupported SamplesPerPixel {fmt.samples}")
        return fmt

    @property
    def dtype(self) -> np.dtype:
        """Native-endian numpy dtype of one stored sample."""
        return np.dtype(f"{'i' if self.signed else 'u'}{self.bits_allocated // 8}")

    @property
    def stored_range(self) -> tuple[int, int]:
        """Smallest and largest stored value that BitsStored allows."""
        bits = self.bits_stored if 0 < self.bits_stored <= self.bits_allocated else self.bits_allocated
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)

    def frame_shape(self) -> tuple[int, ...]:
        """(rows, cols) or (rows, cols, samples)."""
        return (self.rows, self.cols) + ((self.samples,) if self.samples > 1 else ())


def _fast_path(f: DicomFile, fmt: PixelFormat) -> bool:
    ts = f.transfer_syntax
    return (not ts.is_compressed and not ts.is_deflated and f.pixel_offset is not None and fmt.samples == 1
            and f.value_length is not None)


def _read_native(f: DicomFile, out: np.ndarray) -> None:
    """Read native pixel data straight into `out` (contiguous, stored dtype); fix byte order and unused bits."""
    buf = memoryview(out.reshape(-1).view(np.uint8))
    try:
        with open(f.path, "rb") as fp:
            fp.seek(f.value_offset)
            got = fp.readinto(buf)
    except OSError as e:
        raise VolumeLoadError(f.path, f"cannot read pixel data ({e.strerror or e})") from None
    if got < len(buf):
        raise VolumeLoadError(f.path, f"truncated pixel data ({got} of {len(buf)} bytes)")
    if not f.transfer_syntax.is_little_endian:
        out.byteswap(inplace=True)


def _decode_with_pydicom(f: DicomFile) -> np.ndarray:
    """Decode every frame of one file with pydicom's decoders: (frames, rows, cols[, samples])."""
    ts = f.transfer_syntax
    try:
        if ts.is_deflated or f.pixel_offset is None:
            ds = pydicom.dcmread(f.path)  # deflated: offsets refer to the inflated stream
        else:
            with open(f.path, "rb") as fp:
                fp.seek(f.pixel_offset)
                tail = read_dataset(fp, ts.is_implicit_VR, ts.is_little_endian)
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ts
            for kw in _PIXEL_MODULE:
                if kw in f.header:
                    ds[kw] = f.header[kw]
            ds[0x7FE00010] = tail[0x7FE00010]
        return decode_pixels(ds)
    except VolumeLoadError:
        raise
    except Exception as e:  # decoders raise anything from ValueError to RuntimeError on corrupt streams
        raise VolumeLoadError(f.path, f"cannot decode pixel data ({ts.name}): {one_line(e)}") from None


def _fix_unused_bits(stored: np.ndarray, fmt: PixelFormat) -> None:
    """Clear bits above BitsStored (unsigned) or sign-extend from BitsStored (signed), in place."""
    if not 0 < fmt.bits_stored < fmt.bits_allocated:
        return
    if fmt.signed:
        shift = fmt.bits_allocated - fmt.bits_stored
        np.left_shift(stored, shift, out=stored)
        np.right_shift(stored, shift, out=stored)
    else:
        np.bitwise_and(stored, (1 << fmt.bits_stored) - 1, out=stored)


def invert_monochrome1(stored: np.ndarray, fmt: PixelFormat) -> None:
    """Invert MONOCHROME1 stored values in place (v -> lo + hi - v over the BitsStored range), so that, as in
    MONOCHROME2, higher values are brighter (more attenuation on CR / DX / MG) before rescale and the model."""
    lo, hi = fmt.stored_range
    np.subtract(stored.dtype.type(lo + hi), stored, out=stored)


def rescale(stored: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Apply per-slice RescaleSlope/Intercept to (z, y, x) stored values.

    Output dtype: the stored dtype when there is no rescale; int16/int32 when slope and intercept are integers (the
    smallest type holding the BitsStored range, e.g. 12-bit CT with intercept -1024 -> int16, like SimpleITK);
    float32 otherwise. May reuse `stored`'s memory.
    """
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return stored
    if np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts)):
        lo, hi = fmt.stored_range
        ends = np.concatenate([slopes * lo + intercepts, slopes * hi + intercepts])
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= ends.min() and ends.max() <= info.max:
                break
        else:
            dtype = np.float64
        if np.dtype(dtype).itemsize == stored.itemsize and np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            out = stored.view(dtype)  # same width and every stored value fits: reinterpret in place, no copy
        else:
            out = stored.astype(dtype)
        if np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0]):
            if slopes[0] != 1:
                out *= dtype(slopes[0])
            out += dtype(intercepts[0])
        else:
            for k in range(len(out)):
                out[k] *= dtype(slopes[k])
                out[k] += dtype(intercepts[k])
        return out
    out = stored.astype(np.float32)
    out *= slopes.astype(np.float32)[:, None, None]
    out += intercepts.astype(np.float32)[:, None, None]
    return out


def read_dicom_volume(info: SeriesInfo, rgb: str = "luma") -> Volume:
    """Decode a series that `scan` found loadable into a Volume (headers in slice order, rescale applied)."""
    plan: DicomPlan = info.plan
    first = plan.files[0]
    fmt = PixelFormat.of(first.header, first.path)
    for f in plan.files[1:]:
        if PixelFormat.of(f.header, f.path) != fmt:
            raise VolumeLoadError(f.path, "inconsistent series: pixel format differs from the first image")
    nz = len(plan.slopes)
    if plan.frames is None:
        stored = np.empty((nz,) + fmt.frame_shape(), dtype=fmt.dtype)

        def read_slice(k: int) -> None:
            f = plan.files[k]
            if _fast_path(f, fmt):
                _read_native(f, stored[k : k + 1])
            else:
                stored[k] = _decode_with_pydicom(f)[0]

        with ThreadPoolExecutor(io_workers()) as pool:
            list(pool.map(read_slice, range(nz)))
    else:
        if _fast_path(first, fmt):
            frames = np.empty((nz,) + fmt.frame_shape(), dtype=fmt.dtype)
            _read_native(first, frames)
        else:
            frames = _decode_with_pydicom(first).astype(fmt.dtype, copy=False)
        stored = frames if np.array_equal(plan.frames, np.arange(nz)) else frames[plan.frames]
    _fix_unused_bits(stored, fmt)
    metadata = {"kind": info.kind, "photometric_interpretation": fmt.photometric}
    inverted = fmt.photometric == "MONOCHROME1" and fmt.samples == 1
    if inverted:
        invert_monochrome1(stored, fmt)
        metadata["photometric_interpretation"] = "MONOCHROME2"
        metadata["inverted_from"] = "MONOCHROME1"
    if fmt.samples == 3:
        array = rgb_to_single(stored, rgb)
        metadata["rgb_conversion"] = rgb
    else:
        array = rescale(stored, plan.slopes, plan.intercepts, fmt)
    ds0 = first.header
    metadata.update({
        "series_description": info.description, "series_number": info.number,
        "study_uid": str(ds0.get("StudyInstanceUID", "")), "frame_of_reference_uid": str(ds0.get(
            "FrameOfReferenceUID", "")), "transfer_syntax": str(first.transfer_syntax),
        "paths": [str(f.path) for f in plan.files],
    })
    if info.subseries:
        metadata["subseries"] = info.subseries
    if info.kind == DICOM_MULTIFRAME:
        metadata["frame_numbers"] = [int(i) + 1 for i in plan.frames]  # 1-based, for referencing frames in SEG
    warnings = list(info.warnings)
    if info.irregular:
        planes = image_planes([f.header for f in plan.files])
        positions = planes.positions if plan.frames is None else planes.positions[plan.frames]
        metadata["slice_positions"] = positions.tolist()
        grid, _, off = regular_grid(info.affine, positions)
        warnings.append(f"irregular slice spacing ({info.irregular}): the acquired slices are segmented as they are; "
                        f"image outputs place them at their true positions on a regular {spacing_zyx(grid)[0]:.4g} mm "
                        f"grid{f' (up to {off:.3g} mm off)' if off > 1e-3 else ''}, empty where slices are missing")
    if inverted:
        warnings.append("MONOCHROME1 (low values displayed white) inverted to MONOCHROME2 conventions")
    return Volume(
        array=array, affine=info.affine.copy(), modality=info.modality, source=str(info.source),
        series_uid=info.series_uid, source_datasets=[f.header for f in plan.files], warnings=warnings,
        metadata=metadata,
    )
