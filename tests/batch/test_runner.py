"""The batch loop as a library: an interrupted run still leaves a summary, and only complete study folders."""

from __future__ import annotations

import json

import pytest

from medmrcnn.batch import BatchEvents, BatchOptions, StudyOutcome, load_predictor, run_batch
from tests.batch.helpers import write_series


class InterruptAfterFirstStudy(BatchEvents):
    """Ctrl-C arriving right after the first study is finished (the next one is being segmented then)."""

    def study_finished(self, outcome: StudyOutcome) -> None:
        raise KeyboardInterrupt


def test_interrupted_batch_writes_its_summary(tmp_path, tiny_checkpoint):
    data = tmp_path / "data"
    for i in range(2):
        write_series(data / f"case{i}", 40 + i, shape=(6, 64, 64), spacing=(2.5, 5.0, 5.0))
    predictor, settings = load_predictor(tiny_checkpoint, device="cpu")
    options = BatchOptions(tmp_path / "out", ("json",), settings=settings)
    with pytest.raises(KeyboardInterrupt):
        run_batch([data], predictor, options, class_names=predictor.model_cfg.labels,
                  events=InterruptAfterFirstStudy())
    doc = json.loads((options.output / "summary.json").read_text())
    assert doc["interrupted"] is True
    assert [(s["name"].split("__")[0], s["status"]) for s in doc["studies"]] == [("case0", "ok"), ("case1", "failed")]
    assert doc["studies"][1]["reason"] == "not finished: the run was interrupted"
    assert sorted(p.name for p in options.output.iterdir()) == [doc["studies"][0]["name"], "summary.csv",
                                                                  "summary.json"]
    # Resuming finishes the rest and keeps the first.
    summary = run_batch([data], predictor, options, class_names=predictor.model_cfg.labels)
    assert [o.status for o in summary.outcomes] == ["skipped", "ok"] and summary.exit_code == 0
