"""`medmrcnn infer` end to end on phantom studies: isolation of bad studies, exit codes, summary, geometry of the
outputs, resume after a kill, --overwrite, and a 2-process torchrun batch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medmrcnn.cli import main
from tests.batch.helpers import (
    add_mixed_size_series, mtimes, tree_checksum, write_corrupt_series, write_nifti, write_series,
)
from tests.cli.helpers import (
    REPO, cli_env, complete_studies, medmrcnn_command, summary_doc, summary_rows,
)

SMALL = dict(shape=(12, 96, 96), spacing=(2.5, 3.5, 3.5))


def sitk_dicom(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5))


@pytest.fixture
def mixed_batch(tmp_path) -> Path:
    """p1/ct good DICOM; p2 a good series and a series of two stacks (two image sizes) in one folder; p3/ct a cut
    file; p4.nii.gz."""
    data = tmp_path / "data"
    write_series(data / "p1" / "ct", 1, "Abdomen", **SMALL)
    write_series(data / "p2", 2, "Venous", **SMALL)
    add_mixed_size_series(data / "p2", 3)
    write_corrupt_series(data / "p3" / "ct", 4, **SMALL)
    write_nifti(data / "p4.nii.gz", 5, **SMALL)
    return data


def test_bad_studies_are_isolated_and_summarised(mixed_batch, tmp_path, tiny_checkpoint, capsys):
    before = tree_checksum(mixed_batch)
    out = tmp_path / "out"
    code = main(["infer", str(mixed_batch), "-o", str(out), "--weights", str(tiny_checkpoint), "--device", "cpu",
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    failed_lines = [ln for ln in captured.err.splitlines() if ln.startswith("FAILED")]
    assert len(failed_lines) == 1  # the two-stack series is split into two studies, each segmented
    assert any("truncated DICOM file" in ln and "p3/ct" in ln for ln in failed_lines)
    assert "6 studies: 5 segmented, 0 already done, 1 failed" in captured.out

    rows = summary_rows(out)
    assert sorted(r["status"] for r in rows.values()) == ["failed", "ok", "ok", "ok", "ok", "ok"]
    assert all(r["reason"] and "\n" not in r["reason"] for r in rows.values() if r["status"] == "failed")
    doc = summary_doc(out)
    assert doc["counts"] == {"ok": 5, "skipped": 0, "failed": 1} and doc["classes"] == ["liver", "kidney", "tumour"]
    assert sorted(complete_studies(out)) == sorted(n for n, r in rows.items() if r["status"] == "ok")
    assert not list(out.glob(".partial-*"))

    for name, row in rows.items():
        if row["status"] != "ok":
            assert not (out / name).exists()
            continue
        folder = out / name
        files = {p.name for p in folder.iterdir()}
        assert {"labels.nii.gz", "instances.nii.gz", "report.json", "instances.csv", "overlay.png",
                "study.json"} <= files
        # The untrained model finds nothing: no DICOM-SEG (an empty one is invalid), and the summary says why.
        assert "seg.dcm" not in files and "no DICOM-SEG" in row["notes"]
        report = json.loads((folder / "report.json").read_text())
        for cls in ("liver", "kidney", "tumour"):
            found = [i for i in report["instances"] if i["class_name"] == cls]
            assert int(row[f"n_{cls}"]) == len(found)
        assert float(row["seconds"]) > 0
        if "plane" in name:  # a stack of the two-stack series: 4 slices of 32 x 32 or 2 of 40 x 40
            assert (int(row["slices"]), sitk.ReadImage(str(folder / "labels.nii.gz")).GetSize()) in (
                (4, (32, 32, 4)), (2, (40, 40, 2)))
            continue
        assert int(row["slices"]) == 12
        # Outputs lie on the input's grid, as SimpleITK reads both.
        source = Path(row["source"])
        reference = sitk.ReadImage(str(source)) if source.is_file() else sitk_dicom(source)
        assert same_grid(sitk.ReadImage(str(folder / "labels.nii.gz")), reference)
    assert tree_checksum(mixed_batch) == before  # inputs are only read


def test_usage_errors_exit_2_with_one_line(tmp_path, tiny_checkpoint, capsys):
    for args, message in (
        (["--formats", "nifti,mp4"], "unknown output format"),
        (["--weights", str(tmp_path / "none.safetensors")], "checkpoint file not found"),
        (["--window", "ct:nonsense"], "nonsense"),
        (["--tile-size", "200", "--tile-overlap", "128"], "must exceed twice tile_overlap"),
    ):
        code = main(["infer", str(tmp_path), "-o", str(tmp_path / "out"), *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, (args, err)
    assert main(["infer", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_resume_after_kill_recomputes_nothing(tmp_path, tiny_checkpoint, capsys):
    data = tmp_path / "data"
    for i in range(3):
        write_series(data / f"case{i}", 10 + i, **SMALL)
    out = tmp_path / "out"
    args = ["infer", data, "-o", out, "--weights", tiny_checkpoint, "--device", "cpu", "--formats", "nifti,json"]
    proc = subprocess.Popen(medmrcnn_command(*args, "--workers", "0"), env=cli_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not complete_studies(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # as a power cut would: no clean-up code runs
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    done = complete_studies(out)
    assert 1 <= len(done) < 3, "the kill must land after the first study and before the last"
    assert not (out / "summary.csv").exists()
    before = {name: mtimes(out / name) for name in done}

    assert main([str(a) for a in args] + ["--quiet"]) == 0
    assert f"3 studies: {3 - len(done)} segmented, {len(done)} already done, 0 failed" in capsys.readouterr().out
    rows = summary_rows(out)
    assert {n for n, r in rows.items() if r["status"] == "skipped"} == set(done)
    assert {name: mtimes(out / name) for name in done} == before  # not one file of a finished study rewritten
    assert len(complete_studies(out)) == 3 and not list(out.glob(".partial-*"))

    # Other settings never mix into a finished study silently; --overwrite redoes everything.
    assert main([str(a) for a in args] + ["--quiet", "--score-threshold", "0.7"]) == 1
    assert "other settings (predictor)" in capsys.readouterr().err
    first = done[0]
    source = data / first.split("__")[0]  # the same study through its own folder keeps its name
    assert main(["infer", str(source)] + [str(a) for a in args[2:]] + ["--quiet", "--overwrite"]) == 0
    assert mtimes(out / first) != before[first]
    assert [(n, r["status"]) for n, r in summary_rows(out).items()] == [(first, "ok")]


def test_torchrun_two_ranks_share_the_batch(tmp_path, tiny_checkpoint):
    data = tmp_path / "data"
    for i in range(2):
        write_series(data / f"case{i}", 20 + i, **SMALL)
    write_corrupt_series(data / "broken", 30, **SMALL)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "medmrcnn",
           "infer", str(data), "-o", str(out), "--weights", str(tiny_checkpoint), "--device", "cpu",
           "--formats", "json", "--quiet"]
    run = subprocess.run(cmd, env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert "3 studies: 2 segmented, 0 already done, 1 failed" in run.stdout, run.stdout + run.stderr
    assert run.returncode != 0  # rank 0 exits 1: a study failed
    doc = summary_doc(out)
    assert doc["world_size"] == 2 and doc["counts"] == {"ok": 2, "skipped": 0, "failed": 1}
    ranks = {s["name"]: s["rank"] for s in doc["studies"]}
    assert list(ranks.values()) == [0, 1, 0]  # broken, case0, case1: every second study to rank 1
    assert [s["name"] for s in doc["studies"]] == sorted(ranks)  # merged in discovery order
    assert len(complete_studies(out)) == 2
    for s in doc["studies"]:
        if s["status"] == "ok":
            manifest = json.loads((out / s["name"] / "study.json").read_text())
            assert manifest["outcome"]["rank"] == s["rank"]
