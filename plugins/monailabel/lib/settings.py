"""The app's `--conf` options (docs/plugin.md), parsed and validated once when the server starts.

Every option is a string on the command line (`--conf score_threshold 0.6`); unknown keys stop the server with a
message listing the known ones, so a typo never passes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from medmrcnn.batch.model import DEMO_WEIGHTS
from medmrcnn.errors import LabelConfigError
from medmrcnn.labels import LabelMap

LABEL_TYPES = ("class", "instance")
RESULT_FORMATS = ("nifti", "dicom_seg")
# Keys MONAI Label itself puts into the app's conf.
_MONAILABEL_KEYS = {"server_mode"}


@dataclass(frozen=True)
class OutputLabels:
    """Label values a viewer sees, {class name: value}, and their mapping to a model's class ids (1..N).

    By default every model class keeps its id; a custom map may renumber classes or leave some out (those are not
    returned). Values are positive and distinct.
    """

    values: dict[str, int] | None = None

    def for_model(self, model_labels: LabelMap) -> dict[str, int]:
        """{name: output value} for the classes of `model_labels` that are returned."""
        if self.values is None:
            return model_labels.to_dict()
        unknown = [n for n in self.values if n not in model_labels.names]
        if unknown:
            raise LabelConfigError(
                f"--conf labels names {unknown}, which the model does not predict; its classes are "
                f"{list(model_labels.names)}"
            )
        return dict(self.values)

    def lut(self, model_labels: LabelMap) -> np.ndarray:
        """uint16 look-up table: model class id -> output value (0 for classes not returned)."""
        lut = np.zeros(model_labels.num_classes, dtype=np.uint16)
        for name, value in self.for_model(model_labels).items():
            lut[model_labels.id_of(name)] = value
        return lut

    def to_model(self, label_map: np.ndarray, model_labels: LabelMap) -> np.ndarray:
        """A label map in output values turned into model class ids (values not listed become 0)."""
        table = self.for_model(model_labels)
        lut = np.zeros(max(table.values()) + 1, dtype=np.uint16)
        for name, value in table.items():
            lut[value] = model_labels.id_of(name)
        values = np.asarray(label_map)
        inside = (values >= 0) & (values < len(lut))
        return np.where(inside, lut[np.clip(values, 0, len(lut) - 1)], 0).astype(np.uint16)

    def class_ids_of(self, values: object, model_labels: LabelMap) -> list[int]:
        """Model class ids of a request's list of output values (OHIF's "label_prompt"); ValueError names a bad one."""
        if not isinstance(values, (list, tuple)):
            raise ValueError(f"label_prompt must be a list of label values; got {values!r}")
        by_value = {v: n for n, v in self.for_model(model_labels).items()}
        out = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) not in by_value:
                raise ValueError(f"label_prompt value {v!r} is not one of this model's label values {by_value}")
            out.append(model_labels.id_of(by_value[int(v)]))
        return out


def parse_labels(text: str) -> OutputLabels:
    """`--conf labels`: a JSON object {"liver": 1, ...}, a path to such a JSON file, or names "liver,kidney" (1..N)."""
    raw: object
    path = Path(text)
    if text.strip().startswith("{"):
        raw = _json(text, "--conf labels")
    elif path.suffix == ".json":
        try:
            raw = _json(path.read_text(encoding="utf-8"), str(path))
        except OSError as e:
            raise LabelConfigError(f"{path}: cannot read the labels file ({e.strerror})") from None
    else:
        raw = {n.strip(): i for i, n in enumerate(text.split(","), start=1) if n.strip()}
    if isinstance(raw, dict) and isinstance(raw.get("labels"), dict):
        raw = raw["labels"]  # the bundle's configs/labels.json keeps the map under "labels"
    if not isinstance(raw, dict) or not raw:
        raise LabelConfigError(f"--conf labels {text!r}: give a JSON object of class name -> label value")
    values = {}
    for name, value in raw.items():
        if str(name).lower() == "background":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LabelConfigError(f"--conf labels: value of {name!r} must be a positive integer; got {value!r}")
        values[str(name)] = value
    if len(set(values.values())) != len(values):
        raise LabelConfigError(f"--conf labels: two classes share a label value in {values}")
    return OutputLabels(values)


def _json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelConfigError(f"{where}: not valid JSON ({e.msg})") from None


@dataclass(frozen=True)
class PluginSettings:
    """Validated app options; each field is a `--conf` key of the same name (docs/plugin.md).

    Attributes:
        weights: volume (CT/MR) checkpoint served as model `medmrcnn_volume`; default: the shipped demo weights.
        cells_weights: 2D (microscopy) checkpoint served as `medmrcnn_cells`; the model is off without it.
        labels: label values returned to viewers and read from saved labels (default: the model's class ids).
        label_config: JSON with the SNOMED concept and colour of each class for DICOM-SEG (default: shipped).
        device: "auto", "cpu", "cuda" or "cuda:N".
        score_threshold, mask_threshold, window: defaults of the predictor (a request may override them);
            window is an intensity preset such as "ct:soft_tissue", "ct:40,400" or "percentile" (None: the model's).
        label_type: "class" (class label map) or "instance" (one value per 3D instance) by default.
        result_format: "nifti" (label volume) or "dicom_seg" (needs a DICOM image); None: dicom_seg for a DICOMweb
            datastore, nifti otherwise.
        model_dir: where fine-tuned checkpoints and training runs go (default: <app>/model).
        train_epochs, train_steps_per_epoch, train_lr, train_val_fraction, train_threads: fine-tuning defaults.
        train_config: a training YAML (configs/*.yaml) whose augment/optim settings fine-tuning starts from.
        strategy_threshold: detection score kept when the active-learning strategy measures uncertainty.
        strategy_max_images: unscored images the strategy runs the model on per request (bounds its latency).
    """

    weights: Path = DEMO_WEIGHTS
    cells_weights: Path | None = None
    labels: OutputLabels = OutputLabels()
    label_config: Path | None = None
    device: str = "auto"
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    window: str | None = None
    label_type: str = "class"
    result_format: str | None = None
    model_dir: Path | None = None
    train_epochs: int = 5
    train_steps_per_epoch: int = 20
    train_lr: float = 1e-4
    train_val_fraction: float = 0.0
    train_threads: int | None = None
    train_config: Path | None = None
    strategy_threshold: float = 0.1
    strategy_max_images: int = 8

    @classmethod
    def from_conf(cls, conf: dict[str, str], app_dir: str | Path) -> "PluginSettings":
        """Parse MONAI Label's conf dict (all values strings); ValueError/LabelConfigError name the bad key."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(conf) - set(known) - _MONAILABEL_KEYS)
        if unknown:
            raise ValueError(f"unknown --conf keys {unknown}; known: {sorted(known)}")
        kw: dict[str, object] = {}
        for key, text in conf.items():
            if key in _MONAILABEL_KEYS:
                continue
            kind = str(known[key].type)
            try:
                if key == "labels":
                    kw[key] = parse_labels(text)
                elif "Path" in kind:
                    kw[key] = Path(text).expanduser().resolve()
                elif kind.startswith("int"):
                    kw[key] = int(text)
                elif kind.startswith("float"):
                    kw[key] = float(text)
                else:
                    kw[key] = text
            except ValueError:
                raise ValueError(f"--conf {key} {text!r}: not a valid {kind.split(' ')[0]}") from None
        kw.setdefault("model_dir", Path(app_dir).resolve() / "model")
        return cls(**kw)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"--conf label_type must be one of {LABEL_TYPES}; got {self.label_type!r}")
        if self.result_format is not None and self.result_format not in RESULT_FORMATS:
            raise ValueError(f"--conf result_format must be one of {RESULT_FORMATS}; got {self.result_format!r}")
        for name in ("score_threshold", "mask_threshold", "strategy_threshold", "train_val_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--conf {name} must be in [0, 1]; got {getattr(self, name)}")
        if self.train_epochs < 1 or self.train_steps_per_epoch < 1 or self.strategy_max_images < 1:
            raise ValueError("--conf train_epochs, train_steps_per_epoch and strategy_max_images must be >= 1")
        if self.train_lr <= 0:
            raise ValueError(f"--conf train_lr must be positive; got {self.train_lr}")
        for name in ("weights", "cells_weights", "label_config", "train_config"):
            path = getattr(self, name)
            # The demo weights may be absent from a source checkout: the volume model is then simply off.
            if path is not None and path != DEMO_WEIGHTS and not path.is_file():
                raise ValueError(f"--conf {name} {path}: file not found")
        if self.window is not None:
            from medmrcnn.transforms import resolve_intensity

            resolve_intensity(self.window, "CT")
