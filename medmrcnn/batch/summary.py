"""What happened to each study of a batch, and the summary files (summary.csv, summary.json) that list them all."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medmrcnn.fileio import atomic_write_text

OK, SKIPPED, FAILED = "ok", "skipped", "failed"
SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"


@dataclass
class StudyOutcome:
    """The result of one study in a batch.

    Attributes:
        name: output folder name (under the batch's output folder).
        source: the input series folder or file.
        status: "ok" (segmented now), "skipped" (complete outputs from an earlier run), "failed".
        reason: why it failed (one line), or why it was skipped.
        modality, shape: of the input volume ((z, y, x) voxels) when it was read.
        instances: number of instances found per class name.
        volume_ml: total volume per class name in millilitres.
        seconds: wall time spent on the study (read + segment + write) in this run.
        timings: that time split into "read", "segment", "write" seconds.
        outputs: files written, relative to the study folder.
        notes: things worth knowing that are not failures (e.g. "no DICOM-SEG: input is not DICOM").
        rank: the torchrun rank that handled it (0 without torchrun).
    """

    name: str
    source: str
    status: str
    reason: str = ""
    modality: str = ""
    shape: list[int] | None = None
    instances: dict[str, int] = field(default_factory=dict)
    volume_ml: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rank: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyOutcome:
        """Inverse of `to_dict` (unknown keys ignored, so older manifests still load)."""
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class BatchSummary:
    """All outcomes of a batch, in study order, with the counts and the exit code they imply."""

    outcomes: list[StudyOutcome]
    class_names: tuple[str, ...] = ()
    seconds: float = 0.0

    def count(self, status: str) -> int:
        """Number of studies with `status`."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[StudyOutcome]:
        """The failed studies."""
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def exit_code(self) -> int:
        """0 when every study succeeded (or was already done), 1 when some failed."""
        return 1 if self.failed else 0

    def line(self) -> str:
        """One line for the end of a run: counts, instances found, time."""
        total = {}
        for o in self.outcomes:
            for name, n in o.instances.items():
                total[name] = total.get(name, 0) + n
        found = ", ".join(f"{n} {name}" for name, n in total.items() if n) or "nothing"
        return (f"{len(self.outcomes)} studies: {self.count(OK)} segmented, {self.count(SKIPPED)} already done, "
                f"{self.count(FAILED)} failed; found {found}; {self.seconds:.1f} s")


def ordered_class_names(outcomes: Iterable[StudyOutcome], class_names: Sequence[str] = ()) -> tuple[str, ...]:
    """`class_names` followed by any other class met in the outcomes, each once."""
    names = list(class_names)
    for o in outcomes:
        names += [n for n in list(o.instances) + list(o.volume_ml) if n not in names]
    return tuple(names)


def summary_csv(summary: BatchSummary) -> str:
    """The CSV text: one row per study; `n_<class>` and `ml_<class>` columns for every class."""
    classes = ordered_class_names(summary.outcomes, summary.class_names)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["study", "status", "reason", "source", "modality", "slices", "seconds"]
                    + [f"n_{c}" for c in classes] + [f"ml_{c}" for c in classes] + ["notes"])
    for o in summary.outcomes:
        ran = o.status != FAILED
        writer.writerow(
            [o.name, o.status, o.reason, o.source, o.modality, o.shape[0] if o.shape else "", f"{o.seconds:.2f}"]
            + [o.instances.get(c, 0) if ran else "" for c in classes]
            + [f"{o.volume_ml.get(c, 0.0):.3f}" if ran else "" for c in classes]
            + ["; ".join(o.notes)]
        )
    return buf.getvalue()


def write_summary(output: str | Path, summary: BatchSummary,
                  run_info: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write `summary.csv` and `summary.json` into `output` atomically; returns their paths."""
    output = Path(output)
    doc = {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "counts": {s: summary.count(s) for s in (OK, SKIPPED, FAILED)},
        "seconds": round(summary.seconds, 3),
        "classes": list(ordered_class_names(summary.outcomes, summary.class_names)),
        **(run_info or {}),
        "studies": [o.to_dict() for o in summary.outcomes],
    }
    csv_path, json_path = output / SUMMARY_CSV, output / SUMMARY_JSON
    atomic_write_text(csv_path, summary_csv(summary))
    atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    return csv_path, json_path
