"""Training: data sources, slice datasets, the optimisation loop, checkpoints/resume, DDP and metrics."""

from medmrcnn.training.config import AugmentConfig, DataConfig, OptimConfig, PhantomConfig, TrainConfig, load_train_config
from medmrcnn.training.engine import TrainResult, train
from medmrcnn.training.evaluation import evaluate, format_report
from medmrcnn.training.items import AnnotatedVolume
from medmrcnn.training.targets import instances_to_target

__all__ = [
    "AnnotatedVolume", "AugmentConfig", "DataConfig", "OptimConfig", "PhantomConfig", "TrainConfig", "TrainResult",
    "evaluate", "format_report", "instances_to_target", "load_train_config", "train",
]
