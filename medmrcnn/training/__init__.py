"""Training: targets from instance label maps, the optimisation loop, datasets and metrics."""

from medmrcnn.training.targets import instances_to_target

__all__ = ["instances_to_target"]
