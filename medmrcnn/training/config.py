"""`TrainConfig`: everything a training run needs, loaded from one YAML file (see configs/*.yaml, docs/training.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from medmrcnn.errors import DataError
from medmrcnn.modeling.config import ModelConfig


@dataclass
class PhantomConfig:
    """Generated training data (medmrcnn.synthetic) with exact truth; seeds never overlap train/val.

    Attributes:
        kind: "ct" (liver/kidney/tumour abdominal phantoms) or "microscopy" (nuclei).
        n_train, n_val: number of generated volumes (CT) or images (microscopy).
        seed: first seed; training uses seed.., validation seed + 100000...
        slices: (min, max) slices of a CT phantom.
        slice_spacing_mm: (min, max) slice spacing of a CT phantom.
        field_of_view_mm: (min, max) in-plane extent of a CT phantom.
        pixel_spacing_mm: (min, max) in-plane pixel size before resampling to the model's pixel_spacing_mm.
        max_matrix: largest in-plane matrix generated (bounds the cost of fine spacings).
        n_tumours: (min, max) tumours per CT phantom.
        tumour_diameter_mm: diameter range of CT tumours.
        noise_hu: (min, max) CT noise standard deviation.
        image_size: (min, max) side in pixels of a microscopy image.
        n_nuclei: (min, max) nuclei per microscopy image.
    """

    kind: str = "ct"
    n_train: int = 32
    n_val: int = 4
    seed: int = 1000
    slices: tuple[int, int] = (32, 64)
    slice_spacing_mm: tuple[float, float] = (2.0, 4.0)
    field_of_view_mm: tuple[float, float] = (300.0, 420.0)
    pixel_spacing_mm: tuple[float, float] = (0.6, 1.6)
    max_matrix: int = 512
    n_tumours: tuple[int, int] = (1, 6)
    tumour_diameter_mm: tuple[float, float] = (8.0, 45.0)
    noise_hu: tuple[float, float] = (6.0, 20.0)
    image_size: tuple[int, int] = (128, 192)
    n_nuclei: tuple[int, int] = (8, 30)


@dataclass
class DataConfig:
    """Where the annotated images come from and how slices are drawn from them.

    Attributes:
        source: "datalist" (MONAI/Decathlon JSON), "coco" (COCO JSON, 2D images) or "phantom" (generated).
        datalist: path of the datalist JSON (source "datalist"); relative item paths are resolved against its folder.
        coco_train, coco_val: COCO annotation JSON files (source "coco"); image paths relative to `image_root`.
        image_root: folder of COCO images (default: the folder of the JSON file).
        train_key, val_key: datalist sections used for training and validation.
        val_fraction: share of training items held out when the datalist has no validation section.
        label_kind: "semantic" (label map values are class ids; instances = per-slice connected components per
            class) or "instance" (label values are instance ids; `class_table` maps them to class names; a
            one-class model needs no table: every nonzero id is one object, as cell datasets ship their masks).
        class_table: instance id -> class name for "instance" label maps (a per-item "classes" dict in the datalist
            overrides it).
        label_values: label map value -> class name when the label map does not use 1..N in ModelConfig.labels order.
        min_pixels: instances smaller than this on a slice (after resampling) are not targets.
        empty_fraction: share of empty slices (no instance) kept in each epoch, re-drawn every epoch.
        class_balance: sample slices with weights that equalise classes (rare classes seen as often as common ones).
        phantom: generated data settings (source "phantom").
    """

    source: str = "phantom"
    datalist: str | None = None
    coco_train: str | None = None
    coco_val: str | None = None
    image_root: str | None = None
    train_key: str = "training"
    val_key: str = "validation"
    val_fraction: float = 0.1
    label_kind: str = "semantic"
    class_table: dict[int, str] | None = None
    label_values: dict[int, str] | None = None
    min_pixels: int = 4
    empty_fraction: float = 0.1
    class_balance: bool = False
    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass
class AugmentConfig:
    """MONAI augmentation applied identically to the image and its instance masks (boxes recomputed after).

    Probabilities are per slice; `enabled: false` switches all off. `crop_size` (px) trains on random square
    crops centred near a random object (cheaper steps on large slices); None = whole slices.
    """

    enabled: bool = True
    crop_size: int | None = None
    flip_prob: float = 0.5
    rot90_prob: float = 0.0
    affine_prob: float = 0.3
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate_px: float = 8.0
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    intensity_prob: float = 0.5
    noise_std: float = 0.02
    noise_prob: float = 0.2
    contrast_gamma: tuple[float, float] = (0.8, 1.25)
    contrast_prob: float = 0.2


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (linear warm-up, then cosine decay to lr * min_lr_ratio; "constant";
    "exponential" rises from lr * min_lr_ratio to lr, for the learning-rate range test, training.lrfind)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    clip_grad_norm: float | None = 10.0
    accumulate: int = 1


@dataclass
class TrainConfig:
    """A training run. `model` is the ModelConfig written into every checkpoint.

    Attributes:
        epochs: passes over the epoch's slice list (or `steps_per_epoch` optimiser steps each).
        steps_per_epoch: fixed optimiser steps per epoch (slices drawn with replacement); None = one pass.
        batch_size: slices per process per forward pass.
        num_workers: DataLoader workers per process.
        seed: seeds data order, augmentation, model initialisation and the model's own sampling.
        deterministic: ask torch for deterministic kernels (slower on GPU).
        amp: "none", "bf16" or "fp16" mixed precision (CUDA only; ignored with a warning on CPU).
        device: "auto", "cpu" or "cuda[:N]" (under torchrun each rank takes cuda:LOCAL_RANK).
        init: weights to start from: a medmrcnn .safetensors checkpoint or a local torchvision .pth file
            (COCO Mask R-CNN or ImageNet ResNet); None = from scratch.
        output: run folder (checkpoints, metrics.json, TensorBoard events).
        eval_every: validate every N epochs (and after the last).
        best_metric: validation metric that selects `best` ("mask_AP50", "mask_AP", "dice_mean", "loss").
        patience: early stopping: end the run after this many validations in a row without a new best
            `best_metric` (`best.safetensors` keeps the best one); 0 = never stop early.
        checkpoint_every: also write `last` every N optimiser steps (0 = only at epoch ends).
        log_every: optimiser steps between log lines / TensorBoard points.
        max_steps: stop after this many optimiser steps in total (None = run all epochs); the schedule still
            spans all epochs, so a stopped run can be resumed into the same schedule.
        threads: torch CPU threads per process (None = torch's default).
        roi_samples_per_image: proposals sampled per slice for the box/mask heads (torchvision default 512;
            fewer is cheaper when slices hold a handful of objects).
        rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train: RPN proposals kept per level / in total while training.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 10
    steps_per_epoch: int | None = None
    batch_size: int = 2
    num_workers: int = 0
    seed: int = 0
    deterministic: bool = False
    amp: str = "none"
    device: str = "auto"
    init: str | None = None
    output: str = "runs/train"
    eval_every: int = 1
    best_metric: str = "mask_AP50"
    patience: int = 0
    checkpoint_every: int = 0
    log_every: int = 20
    max_steps: int | None = None
    threads: int | None = None
    roi_samples_per_image: int = 512
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000

    def __post_init__(self) -> None:
        choices = [
            ("data.source", self.data.source, ("datalist", "coco", "phantom")),
            ("data.label_kind", self.data.label_kind, ("semantic", "instance")),
            ("data.phantom.kind", self.data.phantom.kind, ("ct", "microscopy")),
            ("optim.name", self.optim.name, ("adamw", "sgd")),
            ("optim.schedule", self.optim.schedule, ("cosine", "constant", "exponential")),
            ("amp", self.amp, ("none", "bf16", "fp16")),
            ("best_metric", self.best_metric, ("mask_AP50", "mask_AP", "bbox_AP50", "dice_mean", "loss")),
        ]
        for name, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {'|'.join(allowed)}, got {value!r}")
        if not 0.0 <= self.data.empty_fraction <= 1.0:
            raise ValueError("data.empty_fraction must be in [0, 1]")
        if self.optim.accumulate < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("optim.accumulate, epochs and batch_size must be >= 1")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0 = no early stopping), got {self.patience}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serialisable dict (the model section as ModelConfig.to_dict)."""
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return _lists(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from nested dicts; unknown keys are an error so a typo never passes silently."""
        d = dict(d)
        model = ModelConfig.from_dict(d.pop("model", {}))
        data = dict(d.pop("data", {}) or {})
        phantom = _build(PhantomConfig, data.pop("phantom", {}) or {}, "data.phantom")
        return _build(cls, {
            **d,
            "model": model,
            "data": _build(DataConfig, {**data, "phantom": phantom}, "data"),
            "augment": _build(AugmentConfig, d.pop("augment", {}) or {}, "augment"),
            "optim": _build(OptimConfig, d.pop("optim", {}) or {}, "optim"),
        }, "")


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


def _build(cls: type, d: dict[str, Any], section: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        where = f" in section '{section}'" if section else ""
        raise ValueError(f"unknown training config keys{where}: {unknown}")
    kw = {}
    for k, v in d.items():
        kw[k] = tuple(v) if isinstance(v, list) and "tuple" in str(known[k].type) else v
    return cls(**kw)


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; relative data paths are resolved against the YAML file's folder.

    Raises DataError naming the file when it is missing or invalid.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise DataError(f"{path}: cannot read training config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a training config must be a mapping of sections")
    data = raw.get("data") or {}
    for key in ("datalist", "coco_train", "coco_val", "image_root"):
        if data.get(key) and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    if raw.get("init") and not Path(raw["init"]).is_absolute():
        raw["init"] = str((path.parent / raw["init"]).resolve())
    raw.update(overrides or {})
    try:
        return TrainConfig.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: invalid training config ({e})") from None
