"""Batch processing: every study under a set of inputs segmented into its own output folder, resumable, isolated
per study, read ahead in threads, sharded under torchrun, summarised in summary.csv / summary.json (docs/cli.md).
"""

from medmrcnn.batch.discovery import Study, discover_studies, expand_inputs
from medmrcnn.batch.distributed import Shard
from medmrcnn.batch.model import DEMO_WEIGHTS, load_predictor
from medmrcnn.batch.outputs import FORMATS, parse_formats
from medmrcnn.batch.runner import BatchEvents, BatchOptions, run_batch
from medmrcnn.batch.summary import BatchSummary, StudyOutcome

__all__ = [
    "DEMO_WEIGHTS", "FORMATS", "BatchEvents", "BatchOptions", "BatchSummary", "Shard", "Study", "StudyOutcome",
    "discover_studies", "expand_inputs", "load_predictor", "parse_formats", "run_batch",
]
