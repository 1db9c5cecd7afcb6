"""Cross-check of our DICOM loader against dcm2niix and SimpleITK on pydicom's and pydicom-data's image series.

Used by tests/io/test_crosscheck.py; `python -m tests.io.crosscheck` prints the table of docs/loading.md.
Each series is copied alone into a folder, converted by dcm2niix (`dcm2niix -z n -b n`), read by SimpleITK's GDCM
series reader and by `medmrcnn.io.load_volume`. Grids are compared after bringing each to the closest LPS axis
layout (`medmrcnn.geometry.reorientation_to`), since dcm2niix stores rows flipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from medmrcnn.errors import VolumeLoadError
from medmrcnn.geometry import reorientation_to
from medmrcnn.io import load_volume, save_volume
from medmrcnn.volume import Volume

PYDICOM_FILES = Path(get_testdata_file("CT_small.dcm", download=False)).parent


def pydicom_data_file(name: str) -> Path | None:
    """A pydicom-data file (never downloaded), None when pydicom-data is not installed."""
    try:
        path = get_testdata_file(name, download=False)
    except Exception:  # pydicom-data's plugin may be unusable
        return None
    return Path(path) if path else None


@dataclass
class Case:
    """One image series: its files and what we expect."""

    name: str
    files: list[Path]
    what: str
    allow_irregular: bool = False
    series: int | None = None


def cases(tmp: Path) -> list[Case]:
    """Every image series of the test files worth cross-checking (the tilted one derived from a real CT series)."""
    tree = PYDICOM_FILES / "dicomdirtests"
    found = [
        Case("CT_small", [PYDICOM_FILES / "CT_small.dcm"], "CT, 1 slice"),
        Case("MR_small", [PYDICOM_FILES / "MR_small.dcm"], "MR, 1 slice"),
        Case("CT5N", sorted((tree / "98892001" / "CT5N").iterdir()), "CT, 5 slices"),
        Case("CT2N", sorted((tree / "98892001" / "CT2N").iterdir()), "CT scout, 2 images in 2 planes"),
        Case("CT2N plane 1", sorted((tree / "98892001" / "CT2N").iterdir()), "CT scout, its first plane", series=0),
        Case("CT2 (gaps)", sorted((tree / "77654033" / "CT2").iterdir()), "CT, 4 slices, uneven gaps",
             allow_irregular=True),
        Case("MR1 (3 series)", sorted((tree / "98892003" / "MR1").iterdir()), "MR, 3 one-slice series in a folder",
             series=0),
        Case("CR1", sorted((tree / "77654033" / "CR1").iterdir()), "CR MONOCHROME1, no patient position"),
    ]
    for name, what in (("emri_small.dcm", "enhanced MR multi-frame"), ("eCT_Supplemental.dcm",
                                                                      "enhanced CT multi-frame")):
        path = pydicom_data_file(name)
        if path is not None:
            found.append(Case(name.removesuffix(".dcm"), [path], what))
    found.append(Case("CT5N tilted 15 deg", tilted_series(tree / "98892001" / "CT5N", tmp / "tilted", 15.0),
                      "CT5N with a 15 degree gantry tilt"))
    return found


def tilted_series(source: Path, out: Path, degrees: float) -> list[Path]:
    """A real CT series re-written as if acquired with a tilted gantry: each slice shifted along the column
    direction by its distance along the normal times tan(tilt), GantryDetectorTilt set (pixels unchanged)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        row, col = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        position = np.array(ds.ImagePositionPatient, float)
        along = position @ np.cross(row, col)
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position + col * along * np.tan(np.radians(degrees))]
        ds.GantryDetectorTilt = f"{degrees:g}"
        ds.save_as(out / path.name)
        written.append(out / path.name)
    return written


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z, y, x) array and affine brought to the closest LPS axis layout."""
    r = reorientation_to(affine, "LPS")
    return np.ascontiguousarray(r.apply(array)), r.affine(affine, array.shape)


@dataclass
class Comparison:
    """How one reader's grid and voxels compare with ours."""

    shape: bool
    max_affine_mm: float
    max_value_diff: float
    note: str = ""

    @property
    def agrees(self) -> bool:
        """Same shape, grid corners within 0.01 mm, voxels within 0.5 (rescaled units)."""
        return self.shape and self.max_affine_mm <= 1e-2 and self.max_value_diff <= 0.5


def compare(ours: Volume, array: np.ndarray, affine: np.ndarray, note: str = "") -> Comparison:
    """Our volume against another reader's (z, y, x) array and LPS affine."""
    a, fa = canonical(ours.array, ours.affine)
    b, fb = canonical(array, affine)
    if a.shape != b.shape:
        return Comparison(False, float("nan"), float("nan"), note or f"shape {b.shape} vs ours {a.shape}")
    # Compare positions of the grid's corners (mm), not matrix entries: a one-slice grid's slice step is arbitrary.
    corners = np.array([[i, j, k, 1] for i in (0, a.shape[2] - 1) for j in (0, a.shape[1] - 1)
                        for k in {0, a.shape[0] - 1}], dtype=float)
    diff_mm = float(np.abs(corners @ fa.T - corners @ fb.T).max())
    values = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
    return Comparison(True, diff_mm, values, note)


def run_dcm2niix(files: list[Path], work: Path) -> list[Path]:
    """dcm2niix's NIfTI files for the series in `files` (copied alone into a folder)."""
    src, out = work / "in", work / "out"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    src.mkdir(parents=True)
    out.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, src / f"{i:04d}_{f.name}")
    exe = Path(sys.executable).parent / "dcm2niix"
    subprocess.run([str(exe if exe.exists() else "dcm2niix"), "-z", "n", "-b", "n", "-f", "%s_%j", "-o", str(out),
                    str(src)], check=False, capture_output=True, timeout=120)
    return sorted(out.glob("*.nii"))


def read_dcm2niix(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The main volume dcm2niix wrote (its tilt-corrected or equidistant version when it made one), as a (z, y, x)
    array and LPS affine (through our own NIfTI reader), and which file it was."""
    if not paths:
        return None
    chosen = next((p for p in paths if p.stem.endswith(("_Tilt_1", "_Eq_1"))), paths[0])
    v = load_volume(chosen)
    return v.array, v.affine, chosen.name


def read_simpleitk(files: list[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """SimpleITK's (GDCM) reading of the series: (z, y, x) array and LPS affine; None when it refuses."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    try:
        image = reader.Execute()
    except RuntimeError:
        return None
    dim = image.GetDimension()
    if dim not in (2, 3):
        return None
    affine = np.eye(4)
    affine[:dim, :dim] = np.array(image.GetDirection()).reshape(dim, dim) * np.array(image.GetSpacing())[None, :]
    affine[:dim, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image)
    return (array[None] if dim == 2 else array), affine


@dataclass
class Result:
    """Our reading of one case and how dcm2niix and SimpleITK compare with it."""

    case: Case
    ours: Volume | None
    refused: str
    written: Volume | None
    dcm2niix: Comparison | None
    dcm2niix_file: str
    dcm2niix_shape: tuple[int, ...] | None
    simpleitk: Comparison | None
    simpleitk_shape: tuple[int, ...] | None


def evaluate(case: Case, work: Path) -> Result:
    """Read the case with the three readers; our outputs' grid is what `save_volume` writes (tilt, gaps)."""
    files = case.files
    ours, refused, written = None, "", None
    try:
        ours = load_volume(files[0] if len(files) == 1 else files[0].parent, case.series,
                           allow_irregular=case.allow_irregular)
    except VolumeLoadError as e:
        refused = e.reason
    if ours is not None and case.series is not None:  # the other readers get the chosen series' files only
        files = [Path(p) for p in ours.metadata["paths"]]
    converted = read_dcm2niix(run_dcm2niix(files, work))
    read = read_simpleitk(files)
    if ours is not None:
        written = load_volume(save_volume(ours, work / "ours.nii", labels=False))
    return Result(
        case, ours, refused, written,
        compare(written, converted[0], converted[1]) if converted and written else None,
        converted[2] if converted else "", converted[0].shape if converted else None,
        compare(ours, *read) if read and ours else None, read[0].shape if read else None,
    )


def row(result: Result) -> dict[str, str]:
    """One table row: our output grid, and how dcm2niix and SimpleITK compare with it."""
    r = result
    if r.written is None:
        ours = f"refused: {r.refused.split(';')[0]}"
    else:
        ours = f"{'x'.join(map(str, r.written.shape))}, {'/'.join(f'{s:.4g}' for s in r.written.spacing)} mm"
    if r.dcm2niix_shape is None:
        d2n = "no output"
    elif r.dcm2niix is None:
        d2n = f"converted {'x'.join(map(str, r.dcm2niix_shape))}"
    else:
        d2n = _describe(r.dcm2niix) + (" (its _Tilt_1 file)" if "_Tilt_1" in r.dcm2niix_file else
                                       " (its _Eq_1 file)" if "_Eq_1" in r.dcm2niix_file else "")
    if r.simpleitk_shape is None:
        itk = "refused"
    elif r.simpleitk is None:
        itk = f"read {'x'.join(map(str, r.simpleitk_shape))}"
    else:
        itk = _describe(r.simpleitk)
    return {"series": r.case.name, "what": r.case.what, "ours": ours, "dcm2niix": d2n, "simpleitk": itk}


def _describe(c: Comparison) -> str:
    if not c.shape:
        return f"differs: {c.note}"
    return (f"{'agrees' if c.agrees else 'differs'}: grid {c.max_affine_mm:.2g} mm, "
            f"values {c.max_value_diff:.3g}")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rows = [row(evaluate(c, Path(d) / str(i))) for i, c in enumerate(cases(Path(d)))]
    print("| series | what | ours (z x y x x, spacing z/y/x) | dcm2niix | SimpleITK |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['series']} | {r['what']} | {r['ours']} | {r['dcm2niix']} | {r['simpleitk']} |")
