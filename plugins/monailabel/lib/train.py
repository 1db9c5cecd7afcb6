"""`MedMRCNNTrain`: fine-tune the served checkpoint on the datastore's final labels with `medmrcnn.training.train`.

MONAI Label runs it in a child process. The run folder is `<model_dir>/runs/<model>-<time>` (checkpoints, metrics,
TensorBoard events; not the resume state); the resulting checkpoint (best when validated, else last) is published
atomically as `<model_dir>/<model>.safetensors`, which the server's infer task loads on its next request.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from lib.errors import as_http_errors
from lib.models import ModelSlot
from lib.settings import PluginSettings

log = logging.getLogger(__name__)


def _dimension(image: str) -> int | None:
    """2 for a single image (z == 1), 3 for a volume, from headers only; None when unreadable (training reports it)."""
    from medmrcnn.errors import MedMRCNNError
    from medmrcnn.io import scan

    try:
        infos = [i for i in scan(image) if i.is_image and i.shape]
    except MedMRCNNError:
        return None
    return (2 if infos[0].shape[0] == 1 else 3) if infos else None


def _resolve_label(path: str) -> str:
    """A DICOMweb label is cached as a folder holding one SEG file: give the file (training reads SEG directly)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        if len(files) == 1:
            return str(files[0])
    return path


class MedMRCNNTrain(TrainTask):
    """Fine-tune on every image of the model's dimension with a final label (semantic maps in the app's label values).

    Request params (defaults from `--conf train_*`): max_epochs, steps_per_epoch, learning_rate, val_fraction.
    """

    def __init__(self, slot: ModelSlot, settings: PluginSettings) -> None:
        super().__init__(f"Fine-tune {slot.name} on the final labels saved in the datastore")
        self.slot = slot
        self.settings = settings

    def config(self) -> dict[str, Any]:
        """Options a viewer shows (and sends back) for this trainer."""
        s = self.settings
        return {"max_epochs": s.train_epochs, "steps_per_epoch": s.train_steps_per_epoch,
                "learning_rate": s.train_lr, "val_fraction": s.train_val_fraction}

    def stats(self) -> dict[str, Any]:
        """The latest run's metrics (what MONAI Label reports as train_stats)."""
        runs = sorted((self.slot.model_dir / "runs").glob(f"{self.slot.name}-*/metrics.json"))
        if not runs:
            return {}
        history = json.loads(runs[-1].read_text(encoding="utf-8"))
        return {"run": runs[-1].parent.name, "epochs": len(history), "last": history[-1] if history else None}

    def train_config(self, request: dict[str, Any], datalist: Path, output: Path) -> Any:
        """The TrainConfig of a fine-tuning run: served checkpoint's architecture and weights, datastore labels."""
        from medmrcnn.modeling import read_checkpoint
        from medmrcnn.training import TrainConfig, load_train_config

        init = self.slot.current_checkpoint()
        if init is None:
            raise ValueError(f"model {self.slot.name!r} has no checkpoint to fine-tune")
        model_cfg = read_checkpoint(init).config
        base = load_train_config(self.settings.train_config) if self.settings.train_config else TrainConfig()
        raw = base.to_dict()
        values = self.settings.labels.for_model(self.slot.load().labels)
        raw.update({
            "model": model_cfg.to_dict(),
            "init": str(init),
            "output": str(output),
            "device": self.settings.device,
            "epochs": int(request.get("max_epochs", self.settings.train_epochs)),
            "steps_per_epoch": int(request.get("steps_per_epoch", self.settings.train_steps_per_epoch)),
            "eval_every": 1,
            "threads": self.settings.train_threads,
        })
        raw["data"].update({"source": "datalist", "datalist": str(datalist), "label_kind": "semantic",
                            "label_values": {v: n for n, v in values.items()},
                            "val_fraction": float(request.get("val_fraction", self.settings.train_val_fraction))})
        raw["optim"].update({"lr": float(request.get("learning_rate", self.settings.train_lr)),
                             "warmup_steps": min(raw["optim"]["warmup_steps"], 10)})
        return TrainConfig.from_dict(raw)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Run the fine-tuning and publish its checkpoint; returns the run's folder, checkpoint and metrics."""
        from medmrcnn.fileio import atomic_write_text
        from medmrcnn.training import train

        items = [{"image": d["image"], "label": _resolve_label(d["label"])} for d in datastore.datalist()
                 if _dimension(d["image"]) in (self.slot.dimension, None)]
        if not items:
            raise ValueError(f"no {self.slot.dimension}D image has a final label yet: save labels (tag 'final') first")
        output = self.slot.model_dir / "runs" / f"{self.slot.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        datalist = output / "datalist.json"
        atomic_write_text(datalist, json.dumps({"training": items}, indent=2))
        with as_http_errors(f"{self.slot.name} training", options=True):
            cfg = self.train_config(request, datalist, output)
            log.info("%s: fine-tuning on %d labelled images into %s", self.slot.name, len(items), output)
            result = train(cfg, progress=False)
        published = self.slot.publish(result.best or result.last)
        # The resume state (optimiser, RNG) is several times the model's size and the plugin never resumes a run.
        result.state.unlink(missing_ok=True)
        return {"model": self.slot.name, "run": str(result.output), "checkpoint": str(published),
                "steps": result.steps, "images": len(items), "metrics": result.metrics[-1] if result.metrics else {}}
