"""The batch loop: discover -> shard -> skip what is done -> read ahead -> segment -> write (in the background) ->
summarise. One bad study is one failed outcome; the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medmrcnn.batch.discovery import Study, discover_studies, reload_series
from medmrcnn.batch.distributed import Shard, gather_outcomes
from medmrcnn.batch.outputs import (
    AUTO, read_manifest, remove_partials, study_folder, write_manifest, write_outputs,
)
from medmrcnn.batch.prefetch import Loaded, prefetch
from medmrcnn.batch.summary import FAILED, OK, SKIPPED, BatchSummary, StudyOutcome, write_summary
from medmrcnn.errors import MedMRCNNError, VolumeLoadError
from medmrcnn.io import read_series
from medmrcnn.io.series import one_line
from medmrcnn.volume import Volume

log = logging.getLogger(__name__)


class Segmenter(Protocol):
    """What the batch needs from a predictor (`medmrcnn.inference.SliceWisePredictor` is one)."""

    def predict(self, volume: Volume, progress: Callable[[int], None] | None = None) -> Any:
        """A VolumeResult for `volume`; `progress(n)` is called as n more slices are done."""


class BatchEvents:
    """Hooks the caller (the CLI's progress bars) is told about; the library itself never prints."""

    def started(self, studies: Sequence[Study], todo: int) -> None:
        """`studies` is this rank's shard; `todo` of them will be segmented, the others (done before or unusable)
        are finished at once."""

    def study_started(self, study: Study) -> None:
        """Segmentation of `study` begins (it has `study.n_slices` slices)."""

    def slices_done(self, n: int) -> None:
        """`n` more slices of the current study are segmented."""

    def study_finished(self, outcome: StudyOutcome) -> None:
        """A study is finished: segmented, skipped or failed."""


@dataclass
class BatchOptions:
    """How a batch runs.

    Attributes:
        output: the output folder (one sub-folder per study, plus summary.csv / summary.json).
        formats: output formats (batch.outputs.FORMATS), or ("auto",) to choose them by input kind.
        overwrite: redo studies whose outputs are complete (default: skip them).
        workers: studies read ahead in background threads while the current one is segmented (0: no read-ahead).
        allow_irregular: accept DICOM stacks with gaps / non-uniform slice spacing.
        channel: the channel segmented in multi-channel microscopy images (None: the first, with a warning).
        label_config: JSON of SNOMED concepts / colours for DICOM-SEG (None: shipped defaults).
        settings: what decides the outputs (weights checksum, thresholds, window, formats); a complete study made
            with other settings is not silently kept (it fails with a hint to use --overwrite).
    """

    output: Path
    formats: tuple[str, ...] = (AUTO,)
    overwrite: bool = False
    workers: int = 1
    allow_irregular: bool = False
    channel: int | None = None
    label_config: str | Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0; got {self.workers}")


def _instance_totals(result: Any) -> tuple[dict[str, int], dict[str, float]]:
    """Instances and total volume (mL) per class name, every class of the result's labels listed."""
    counts = {name: 0 for name in result.labels.names}
    volumes = {name: 0.0 for name in result.labels.names}
    for inst in result.instances:
        counts[inst.class_name] = counts.get(inst.class_name, 0) + 1
        volumes[inst.class_name] = volumes.get(inst.class_name, 0.0) + float(inst.volume_ml)
    return counts, {k: round(v, 4) for k, v in volumes.items()}


def _failed(study: Study, reason: str, rank: int, seconds: float = 0.0, **timings: float) -> StudyOutcome:
    return StudyOutcome(study.name, str(study.source), FAILED, reason=reason,
                        modality=study.info.modality if study.info else "",
                        shape=list(study.info.shape) if study.info and study.info.shape else None,
                        seconds=seconds, timings=timings, rank=rank)


def _reason(error: BaseException) -> str:
    """One line for the summary: medmrcnn's own errors as they are (they name the file), others with their type."""
    if isinstance(error, MedMRCNNError):
        return " ".join(str(error).split())
    return one_line(error)


class _Runner:
    """Processes one rank's studies; keeps at most one study being written while the next is segmented."""

    def __init__(self, predictor: Segmenter, options: BatchOptions, events: BatchEvents, rank: int) -> None:
        self.predictor, self.options, self.events, self.rank = predictor, options, events, rank
        self.outcomes: dict[str, StudyOutcome] = {}

    def finish(self, outcome: StudyOutcome) -> None:
        self.outcomes[outcome.name] = outcome
        if outcome.status == FAILED:  # info: the caller reports failures to the user (events / summary)
            log.info("%s: failed: %s", outcome.name, outcome.reason)
        self.events.study_finished(outcome)

    def already_done(self, study: Study) -> StudyOutcome | None:
        """The outcome of a complete earlier run of `study`, or a failure when it used other settings."""
        manifest = read_manifest(self.options.output / study.name)
        if manifest is None or self.options.overwrite:
            return None
        if manifest.get("settings") != self.options.settings:
            before, now = manifest.get("settings") or {}, self.options.settings
            differ = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            return _failed(study, f"outputs from an earlier run with other settings ({', '.join(differ)}) exist; "
                                  "use --overwrite to replace them", self.rank)
        previous = StudyOutcome.from_dict(manifest.get("outcome", {}) | {"name": study.name})
        previous.status, previous.reason, previous.seconds, previous.timings = SKIPPED, "already done", 0.0, {}
        previous.rank = self.rank
        return previous

    def load(self, study: Study) -> Volume:
        assert study.info is not None  # only studies without a discovery error are loaded
        return read_series(reload_series(study.info), allow_irregular=self.options.allow_irregular,
                           channel=self.options.channel)

    def segment(self, loaded: Loaded[Study, Volume]) -> tuple[Any, float] | None:
        """Run the model; a failure is recorded and None returned."""
        study = loaded.item
        if loaded.error is not None:
            log.debug("reading %s failed", study.source, exc_info=loaded.error)
            self.finish(_failed(study, _reason(loaded.error), self.rank, loaded.seconds, read=loaded.seconds))
            return None
        self.events.study_started(study)
        start = time.perf_counter()
        try:
            result = self.predictor.predict(loaded.value, progress=self.events.slices_done)
        except Exception as e:  # noqa: BLE001 - isolation: report the study, go on with the next
            log.debug("segmenting %s failed", study.source, exc_info=True)
            seconds = time.perf_counter() - start
            self.finish(_failed(study, _reason(e), self.rank, loaded.seconds + seconds, read=loaded.seconds,
                                segment=seconds))
            return None
        return result, time.perf_counter() - start

    def write(self, loaded: Loaded[Study, Volume], result: Any, segment_s: float) -> StudyOutcome:
        """Write every output of one study into its folder (runs in the writer thread)."""
        study, volume = loaded.item, loaded.value
        start = time.perf_counter()
        try:
            remove_partials(self.options.output, study.name)
            with study_folder(self.options.output, study.name) as folder:
                outputs, notes = write_outputs(result, volume, folder, self.options.formats,
                                               self.options.label_config)
                counts, volumes = _instance_totals(result)
                write_s = time.perf_counter() - start
                outcome = StudyOutcome(
                    study.name, str(study.source), OK, modality=volume.modality, shape=list(volume.shape),
                    instances=counts, volume_ml=volumes, seconds=round(loaded.seconds + segment_s + write_s, 3),
                    timings={"read": round(loaded.seconds, 3), "segment": round(segment_s, 3),
                             "write": round(write_s, 3)},
                    outputs=outputs, notes=notes + list(volume.warnings) + list(result.metadata.get("intensity_warnings", [])),
                    rank=self.rank,
                )
                write_manifest(folder, {"outcome": outcome.to_dict(), "settings": self.options.settings,
                                        "series_uid": volume.series_uid, "spacing_mm": list(volume.spacing),
                                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            return outcome
        except Exception as e:  # noqa: BLE001 - isolation, as above
            log.debug("writing %s failed", study.name, exc_info=True)
            write_s = time.perf_counter() - start
            return _failed(study, _reason(e), self.rank, loaded.seconds + segment_s + write_s,
                           read=loaded.seconds, segment=segment_s, write=write_s)

    def run(self, studies: Sequence[Study]) -> list[StudyOutcome]:
        todo: list[Study] = []
        done: list[StudyOutcome] = []
        for study in studies:
            outcome = _failed(study, study.error, self.rank) if study.error else self.already_done(study)
            if outcome is None:
                todo.append(study)
            else:
                done.append(outcome)
        self.events.started(studies, len(todo))
        for outcome in done:
            self.finish(outcome)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medmrcnn-write") as writer:
            writing: Future[StudyOutcome] | None = None
            for loaded in prefetch(todo, self.load, self.options.workers):
                segmented = self.segment(loaded)
                if writing is not None:
                    self.finish(writing.result())
                    writing = None
                if segmented is not None:
                    writing = writer.submit(self.write, loaded, *segmented)
                del loaded, segmented  # the volume is released once written
            if writing is not None:
                self.finish(writing.result())
        return [self.outcomes[s.name] for s in studies]


def run_batch(
    inputs: Sequence[str | Path],
    predictor: Segmenter,
    options: BatchOptions,
    *,
    class_names: Sequence[str] = (),
    events: BatchEvents | None = None,
    run_info: dict[str, Any] | None = None,
) -> BatchSummary:
    """Segment every study under `inputs` into `options.output` and write summary.csv / summary.json.

    Interrupted (Ctrl-C), it still writes the summary: finished studies as they are, the others failed as "not
    finished" (a re-run completes them), then re-raises KeyboardInterrupt.

    Under torchrun each rank segments its own shard; rank 0 gathers the outcomes and writes the summary, and its
    BatchSummary covers every study (other ranks get their own shard's). Raises VolumeLoadError when an input does
    not exist or nothing at all is found (a usage error); problems with single studies are failed outcomes.
    """
    start = time.perf_counter()
    shard = Shard.from_env()
    studies = discover_studies(inputs, exclude=options.output, allow_irregular=options.allow_irregular)
    if not studies:
        raise VolumeLoadError(", ".join(str(i) for i in inputs), "no image series found in the inputs")
    mine = shard.take(studies)
    log.info("rank %d/%d: %d of %d studies", shard.rank, shard.world_size, len(mine), len(studies))
    info = {"world_size": shard.world_size, "formats": list(options.formats), "settings": options.settings,
            **(run_info or {})}
    runner = _Runner(predictor, options, events or BatchEvents(), shard.rank)
    try:
        outcomes = runner.run(mine)
    except KeyboardInterrupt:
        if not shard.distributed:  # under torchrun the agent stops every rank; there is nobody to gather from
            done = [runner.outcomes.get(s.name) or _failed(s, "not finished: the run was interrupted", shard.rank)
                    for s in mine]
            write_summary(options.output, BatchSummary(done, tuple(class_names), time.perf_counter() - start),
                          {**info, "interrupted": True})
        raise
    merged = gather_outcomes(shard, outcomes, [s.name for s in studies])
    summary = BatchSummary(merged if merged is not None else outcomes, tuple(class_names),
                           time.perf_counter() - start)
    if merged is not None:
        write_summary(options.output, summary, info)
    return summary
