"""Progress display of a batch for the terminal: tqdm bars for studies and slices, one line per failed study."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tqdm import tqdm

from medmrcnn.batch import BatchEvents, Study, StudyOutcome
from medmrcnn.batch.summary import FAILED


class BatchProgress(BatchEvents):
    """Studies bar + slices bar of the current study (when `bars`), failure lines on stderr (always).

    `rank` (under torchrun) prefixes every line so that the processes' messages can be told apart.
    """

    def __init__(self, bars: bool = True, quiet: bool = False, rank: int | None = None) -> None:
        self.bars, self.quiet = bars, quiet
        self.prefix = f"[rank {rank}] " if rank is not None else ""
        self.studies: tqdm | None = None
        self.slices: tqdm | None = None

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in (self.slices, self.studies):
            if bar is not None:
                bar.close()

    def _line(self, text: str) -> None:
        tqdm.write(f"{self.prefix}{text}", file=sys.stderr)

    def started(self, studies: Sequence[Study], todo: int) -> None:
        if not self.quiet:
            self._line(f"{len(studies)} studies: {todo} to segment, {len(studies) - todo} done before or unusable")
        if self.bars:
            self.studies = tqdm(total=len(studies), desc=f"{self.prefix}studies", unit="study", file=sys.stderr,
                                dynamic_ncols=True)

    def study_started(self, study: Study) -> None:
        if self.slices is not None:
            self.slices.close()
        if self.bars:
            self.slices = tqdm(total=study.n_slices or None, desc=study.name[:40], unit="slice", leave=False,
                               file=sys.stderr, dynamic_ncols=True)

    def slices_done(self, n: int) -> None:
        if self.slices is not None:
            self.slices.update(n)

    def study_finished(self, outcome: StudyOutcome) -> None:
        if outcome.status == FAILED:
            self._line(f"FAILED {outcome.name} ({outcome.source}): {outcome.reason}")
        if self.studies is not None:
            self.studies.update(1)
