"""`ModelSlot`: one served network, its current checkpoint, and hot reload when fine-tuning publishes a new one."""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from medmrcnn.fileio import atomic_path
from medmrcnn.labels import LabelMap
from medmrcnn.modeling import ModelConfig, load_model
from medmrcnn.runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with its config and the checkpoint file (and its state) it came from."""

    model: nn.Module
    config: ModelConfig
    checkpoint: Path
    stamp: tuple[int, int]

    @property
    def labels(self) -> LabelMap:
        """The model's classes in id order."""
        return LabelMap.from_names(self.config.labels)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


class ModelSlot:
    """The checkpoint a model name serves: the fine-tuned one in `model_dir` if training published one, else `weights`.

    `dimension` is what it segments: 3 for volumes, 2 for single images (z == 1). The network is loaded once and
    reloaded when the current checkpoint file changes (training replaces it atomically, so a reader sees the old or
    the new file, never a partial one). Safe to share between threads.
    """

    def __init__(self, name: str, weights: Path | None, model_dir: Path, device: str = "auto",
                 dimension: int = 3) -> None:
        self.name = name
        self.dimension = dimension
        self.weights = weights
        self.model_dir = model_dir
        self.device = device
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None

    @property
    def published(self) -> Path:
        """Where fine-tuning publishes this model's checkpoint."""
        return self.model_dir / f"{self.name}.safetensors"

    def current_checkpoint(self) -> Path | None:
        """The checkpoint inference uses now (None when there is none)."""
        if self.published.is_file():
            return self.published
        return self.weights if self.weights is not None and self.weights.is_file() else None

    def is_available(self) -> bool:
        """True when a checkpoint exists to serve."""
        return self.current_checkpoint() is not None

    def load(self) -> LoadedModel:
        """The current network, loaded (or reloaded after a new checkpoint was published); CheckpointError if none."""
        from medmrcnn.errors import CheckpointError

        path = self.current_checkpoint()
        if path is None:
            raise CheckpointError(f"{self.weights or self.published}: no checkpoint for model {self.name!r}")
        stamp = _stamp(path)
        with self._lock:
            if self._loaded is None or (self._loaded.checkpoint, self._loaded.stamp) != (path, stamp):
                model, cfg = load_model(path, device=resolve_device(self.device))
                self._loaded = LoadedModel(model, cfg, path, stamp)
                log.info("%s: serving %s (%s)", self.name, path, ", ".join(cfg.labels))
            return self._loaded

    def publish(self, checkpoint: Path) -> Path:
        """Make `checkpoint` the one this model serves (atomic copy into `published`); the next request loads it."""
        with atomic_path(self.published) as tmp:
            shutil.copyfile(checkpoint, tmp)
        log.info("%s: published %s", self.name, checkpoint)
        return self.published
