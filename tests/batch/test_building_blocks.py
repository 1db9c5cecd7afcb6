"""Read-ahead, atomic study folders, format parsing and the summary files, each on its own."""

from __future__ import annotations

import csv
import json
import threading

import pytest

from medmrcnn.batch.outputs import parse_formats, read_manifest, remove_partials, study_folder, write_manifest
from medmrcnn.batch.prefetch import prefetch
from medmrcnn.batch.summary import FAILED, OK, SKIPPED, BatchSummary, StudyOutcome, write_summary


def test_prefetch_reads_the_next_item_while_the_current_one_is_used():
    started = {i: threading.Event() for i in range(4)}

    def load(i: int) -> int:
        started[i].set()
        if i == 2:
            raise ValueError("bad study")
        return i * 10

    seen = []
    for loaded in prefetch(range(4), load, depth=1):
        if loaded.item + 1 < 4:
            # The consumer holds item k; item k + 1 must be loading already (else this waits in vain).
            assert started[loaded.item + 1].wait(timeout=30)
        seen.append((loaded.item, loaded.value, type(loaded.error).__name__ if loaded.error else None))
    assert seen == [(0, 0, None), (1, 10, None), (2, None, "ValueError"), (3, 30, None)]


def test_prefetch_without_threads_and_early_stop():
    loaded_items = []

    def load(i: int) -> int:
        loaded_items.append(i)
        return i

    assert [x.value for x in prefetch(range(3), load, depth=0)] == [0, 1, 2]
    loaded_items.clear()
    for x in prefetch(range(100), load, depth=2):
        if x.item == 1:
            break
    assert len(loaded_items) <= 4  # only the read-ahead window was loaded, the rest cancelled


def test_study_folder_appears_complete_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError), study_folder(tmp_path, "s1") as tmp:
        (tmp / "labels.nii.gz").write_bytes(b"x")
        raise RuntimeError("killed while writing")
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the temporary folder remains
    with study_folder(tmp_path, "s1") as tmp:
        assert tmp.name.startswith(".partial-s1-")
        (tmp / "a.txt").write_text("first")
        write_manifest(tmp, {"outcome": {"status": "ok"}})
        assert read_manifest(tmp_path / "s1") is None  # not visible before it is complete
    assert read_manifest(tmp_path / "s1") == {"outcome": {"status": "ok"}}
    with study_folder(tmp_path, "s1") as tmp:  # overwrite replaces the folder as a whole
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["s1"]
    (tmp_path / ".partial-s1-abc").mkdir()  # left by a killed run
    (tmp_path / ".partial-s10-abc").mkdir()  # another study's
    remove_partials(tmp_path, "s1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial-s10-abc", "s1"]


def test_parse_formats():
    assert parse_formats("png, NIfTI,seg") == ("nifti", "seg", "png")
    assert parse_formats("auto") == ("auto",) and parse_formats("cells,roi") == ("roi", "cells")
    assert parse_formats("sr,json") == ("seg", "sr", "json")  # the SR references the SEG's segments
    for bad in ("nifti,dicom", "", "auto,png"):
        with pytest.raises(ValueError, match="choose from auto or nifti, seg, sr, json, csv, png, tiff"):
            parse_formats(bad)


def test_summary_files_list_every_study(tmp_path):
    outcomes = [
        StudyOutcome("a", "/in/a", OK, modality="CT", shape=[16, 128, 128], instances={"liver": 1, "tumour": 2},
                     volume_ml={"liver": 1500.5, "tumour": 3.25}, seconds=4.5),
        StudyOutcome("b", "/in/b", SKIPPED, reason="already done", instances={"liver": 1}, volume_ml={"liver": 9.0}),
        StudyOutcome("c", "/in/c", FAILED, reason="c.dcm: truncated DICOM file"),
    ]
    summary = BatchSummary(outcomes, ("liver", "kidney", "tumour"), seconds=7.0)
    assert summary.exit_code == 1 and BatchSummary(outcomes[:2]).exit_code == 0
    assert summary.line().startswith("3 studies: 1 segmented, 1 already done, 1 failed; found 2 liver, 2 tumour")
    csv_path, json_path = write_summary(tmp_path, summary, {"weights": "demo.safetensors"})
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["status"] for r in rows] == ["ok", "skipped", "failed"]
    assert rows[0]["n_tumour"] == "2" and rows[0]["ml_liver"] == "1500.500" and rows[0]["n_kidney"] == "0"
    assert rows[0]["slices"] == "16" and rows[2]["reason"] == "c.dcm: truncated DICOM file"
    assert rows[2]["n_liver"] == ""  # unknown, not zero, for a study that failed
    doc = json.loads(json_path.read_text())
    assert doc["counts"] == {"ok": 1, "skipped": 1, "failed": 1} and doc["weights"] == "demo.safetensors"
    assert [StudyOutcome.from_dict(d) for d in doc["studies"]] == outcomes
