"""Study discovery: every image series one study, bad inputs isolated, stable readable names, globs and list files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medmrcnn.batch import discover_studies, expand_inputs
from medmrcnn.batch.discovery import reload_series
from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import load_volume, read_series
from tests.batch.helpers import (
    add_mixed_size_series, tree_checksum, write_corrupt_series, write_nifti, write_series,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """root/p1/ct (good), root/p2 (two series in one folder + a mixed-size series), root/p3/ct (a cut file),
    root/p4.nii.gz, root/docs/readme.txt (no images)."""
    root = tmp_path_factory.mktemp("tree")
    write_series(root / "p1" / "ct", 1, "Abdomen venous")
    write_series(root / "p2", 2, "Arterial")
    write_series(root / "p2", 3, "Venous")
    add_mixed_size_series(root / "p2", 4)
    write_corrupt_series(root / "p3" / "ct", 5)
    write_nifti(root / "p4.nii.gz", 6)
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_text("not an image")
    return root


def test_every_series_is_a_study_and_bad_ones_are_isolated(tree):
    before = tree_checksum(tree)
    studies = discover_studies([tree])
    by_source = {}
    for s in studies:
        by_source.setdefault(s.source.relative_to(tree).as_posix(), []).append(s)
    assert sorted(by_source) == ["p1/ct", "p2", "p3/ct", "p4.nii.gz"]
    good = [s for s in studies if s.error is None and not s.info.subseries]
    assert len(good) == 4 and all(s.n_slices == 8 for s in good)
    # Two good series and one series of two stacks (two image sizes, one SeriesInstanceUID) share the folder p2:
    # four studies, the two stacks split apart as dcm2niix does and each segmented.
    p2 = by_source["p2"]
    assert len(p2) == 4 and all(s.error is None for s in p2)
    split = sorted((s for s in p2 if s.info.subseries), key=lambda s: s.n_slices)
    assert [(s.n_slices, s.info.subseries) for s in split] == [(2, "plane 2/2"), (4, "plane 1/2")]
    assert {s.info.description for s in p2 if not s.info.subseries} == {"Arterial", "Venous"}
    # The cut file is named; the other files of its folder are not passed off as a complete series.
    (corrupt,) = by_source["p3/ct"]
    victim = min((tree / "p3" / "ct").iterdir(), key=lambda p: p.stat().st_size)
    assert corrupt.info is None and corrupt.error.startswith(f"{victim.name}: truncated DICOM file")
    assert "7 other DICOM files of this folder were not processed" in corrupt.error
    assert "\n" not in corrupt.error
    # Good studies are loadable exactly as found.
    vol = load_volume(by_source["p1/ct"][0].source)
    assert vol.shape == (8, 32, 32)
    assert tree_checksum(tree) == before  # discovery only reads


def test_names_are_readable_stable_and_unique(tree):
    first = discover_studies([tree])
    again = discover_studies([str(tree) + "/"])
    assert [s.name for s in first] == [s.name for s in again]
    names = [s.name for s in first]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9._+-]+", n) and not n.startswith(".") for n in names)  # file-system safe
    good = {s.source.relative_to(tree).as_posix() + ":" + (s.info.description if s.info else ""): s.name
            for s in first if s.error is None}
    assert good["p1/ct:Abdomen venous"].startswith("p1_ct__s1_Abdomen_venous__")
    assert good["p2:Arterial"].startswith("p2__s1_Arterial__")
    assert good["p4.nii.gz:p4.nii.gz"].startswith("p4__")
    # A series found through two inputs is one study.
    twice = discover_studies([tree / "p1", tree / "p1" / "ct"])
    assert len(twice) == 1


def test_globs_list_files_and_output_folder_exclusion(tree, tmp_path):
    via_glob = discover_studies([str(tree / "p*" / "ct")])
    assert [s.source.relative_to(tree).as_posix() for s in via_glob] == ["p1/ct", "p3/ct"]
    assert via_glob[0].name.startswith("p1_ct__")  # named by what the wildcard matched
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# tonight's studies\n{tree / 'p1'}\n\n../{tmp_path.name}/missing  # gone\n"
                       f"{tree / 'p4.nii.gz'}\n{tree / 'p[23]' / 'ct'}\n")
    listed = discover_studies([listing])
    assert [s.error is None for s in listed] == [True, False, True, False]
    assert listed[1].error == "no such file or folder"
    assert listed[3].source == tree / "p3" / "ct"  # a glob in the list
    # Outputs written inside an input folder are never inputs of a later run.
    out = tree / "p1" / "results"
    write_nifti(out / "labels.nii.gz", 9)
    try:
        assert len(discover_studies([tree / "p1"], exclude=out)) == 1
        assert len(discover_studies([tree / "p1"])) == 2
    finally:
        (out / "labels.nii.gz").unlink()
        out.rmdir()


def test_usage_errors_for_missing_inputs(tmp_path):
    with pytest.raises(VolumeLoadError, match="no such file or folder"):
        expand_inputs([tmp_path / "nope"])
    with pytest.raises(VolumeLoadError, match="no file or folder matches"):
        expand_inputs([str(tmp_path / "*.nii.gz")])
    (tmp_path / "empty").mkdir()
    (study,) = discover_studies([tmp_path / "empty"])
    assert study.error == "empty folder (no files)"


def test_listed_studies_keep_file_lists_not_headers(tree, tmp_path):
    studies = [s for s in discover_studies([tree]) if s.error is None and s.info.kind == "dicom"]
    assert len(studies) == 5 and all(s.info.plan is None for s in studies)  # 3 series, one of them 2 stacks
    p1 = next(s for s in studies if s.source == tree / "p1" / "ct")
    assert np.array_equal(read_series(reload_series(p1.info)).array, load_volume(p1.source).array)
    copy = shutil.copytree(p1.source, tmp_path / "copy")
    (listed,) = discover_studies([copy])
    sorted(copy.iterdir())[0].unlink()  # the series changes between listing and loading
    with pytest.raises(VolumeLoadError, match="changed on disk since the batch listed it"):
        reload_series(listed.info)
