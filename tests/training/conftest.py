"""Small microscopy-phantom training configs for CPU tests."""

from __future__ import annotations

from medmrcnn.training import TrainConfig
from tests.conftest import tiny_config


def micro_train_config(output, **overrides) -> TrainConfig:
    """Tiny model on generated nuclei images (96-112 px), no validation unless n_val is set."""
    d = {
        "model": tiny_config(detections_per_image=50).to_dict(),
        "data": {"source": "phantom", "empty_fraction": 0.0,
                 "phantom": {"kind": "microscopy", "n_train": 6, "n_val": 0, "seed": 50,
                             "image_size": [96, 112], "n_nuclei": [5, 9]}},
        "augment": {"flip_prob": 0.5, "rot90_prob": 0.5, "affine_prob": 0.0, "intensity_prob": 0.3,
                    "noise_prob": 0.0, "contrast_prob": 0.0},
        "optim": {"lr": 0.002, "warmup_steps": 10},
        "epochs": 1, "steps_per_epoch": 4, "batch_size": 2, "seed": 3, "threads": 2,
        "output": str(output), "log_every": 1, "eval_every": 1,
        "roi_samples_per_image": 128, "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            sub = d[section]
            for part in name.split("__")[:-1]:
                sub = sub[part]
            sub[name.split("__")[-1]] = value
        else:
            d[key] = value
    return TrainConfig.from_dict(d)
