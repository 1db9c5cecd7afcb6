"""Intensity mapping to the network's input range [0, 1] (no ImageNet statistics on Hounsfield units).

Presets (`intensity` strings, recorded in ModelConfig.intensity):
    "ct:<name>"   a CT window from CT_WINDOWS, e.g. "ct:soft_tissue" (level 40 HU, width 400 HU);
    "ct:L,W"      an explicit window level,width in HU, e.g. "ct:60,200";
    "percentile"  the 1st..99.5th percentile of the volume to [0, 1] (MR, microscopy, unknown);
    "auto"        "ct:soft_tissue" for CT, "percentile" otherwise.

"auto" is resolved once, at training time, from the training images' modality (`training_intensity`); checkpoints
store the concrete preset, and serving checks each image against it (`check_intensity_fit`): a CT window refuses
an image whose modality is known and not CT, and warns when the values do not look like Hounsfield units.
"""

from __future__ import annotations

import numpy as np

from medmrcnn.errors import DataError
from medmrcnn.volume import Volume

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "abdomen": (60.0, 400.0),
    "liver": (80.0, 150.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "mediastinum": (50.0, 350.0),
}


def window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values in [center - width/2, center + width/2] (e.g. HU) linearly to [0, 1], clipping outside; float32."""
    lo = center - width / 2.0
    # One float32 array, filled in place: a 512 x 512 x 300 CT must not need three volume-sized temporaries.
    out = np.subtract(array, np.float32(lo), dtype=np.float32)
    out *= np.float32(1.0 / width)
    return np.clip(out, 0.0, 1.0, out=out)


def percentile_normalise(array: np.ndarray, lower: float = 1.0, upper: float = 99.5) -> np.ndarray:
    """Map the [lower, upper] percentiles of the array (MR, microscopy) to [0, 1], clipping outside; float32."""
    a = np.asarray(array)
    lo, hi = np.percentile(a, [lower, upper])
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.float32)
    out = np.subtract(a, np.float32(lo), dtype=np.float32)  # one float32 array, then in place (see window)
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def resolve_intensity(intensity: str, modality: str) -> str:
    """The concrete preset for a modality ("auto" -> "ct:soft_tissue" for CT, "percentile" otherwise)."""
    if intensity == "auto":
        return "ct:soft_tissue" if modality.upper() == "CT" else "percentile"
    if intensity.startswith("ct:"):
        parse_ct_window(intensity)
    elif intensity != "percentile":
        raise ValueError(f"unknown intensity preset {intensity!r}: use auto, percentile, ct:<name> or ct:L,W")
    return intensity


def training_intensity(intensity: str, modalities: list[str]) -> str:
    """The concrete preset a model is trained (and its checkpoint saved) with: "auto" resolved from the modality of
    the training images; DataError when "auto" meets images of CT and of other modalities (choose one preset)."""
    if intensity != "auto":
        return resolve_intensity(intensity, "OT")
    presets = {resolve_intensity("auto", m) for m in modalities} or {"percentile"}
    if len(presets) > 1:
        raise DataError(f"intensity 'auto' with training images of several modalities ({sorted(set(modalities))}) "
                        "would scale them differently; set model.intensity to one preset (e.g. percentile, "
                        "ct:soft_tissue)")
    return presets.pop()


# A CT volume holds air (about -1000 HU) and stays within the 12-bit HU range; values far outside are not HU.
_HU_AIR_BELOW = -500.0
_HU_RANGE = (-3100.0, 32000.0)


def check_intensity_fit(preset: str, volume: Volume, *, explicit: bool = False) -> list[str]:
    """Warnings when an image contradicts the preset a model was trained with; DataError for a CT window on an
    image whose modality is known and not CT (unless the preset was chosen `explicit`ly for this run).

    Args:
        preset: the concrete preset ("ct:...", "percentile"); "auto" (checkpoints from before presets were
            recorded) gives a warning.
        volume: the image to be segmented.
        explicit: the preset was given for this run (CLI --intensity), not taken from the checkpoint.
    """
    if preset == "auto":
        return ["the checkpoint does not record the intensity preset it was trained with ('auto'): "
                f"'{resolve_intensity('auto', volume.modality)}' chosen from the image's modality, which may "
                "differ from training"]
    if not preset.startswith("ct:"):
        return []
    modality = volume.modality.upper()
    if modality not in ("CT", "OT", ""):
        message = (f"{volume.source or 'image'}: modality {modality} given to a model trained with the CT window "
                   f"'{preset}' (Hounsfield units)")
        if not explicit:
            raise DataError(f"{message}; use a model trained on {modality}, or force a preset with --intensity")
        return [message + " (forced with --intensity)"]
    if volume.array.size == 0:
        return []
    lo, hi = float(np.min(volume.array)), float(np.max(volume.array))
    if lo > _HU_AIR_BELOW or lo < _HU_RANGE[0] or hi > _HU_RANGE[1]:
        return [f"values {lo:.6g} to {hi:.6g} do not look like Hounsfield units (no air below {_HU_AIR_BELOW:g}, "
                f"or outside {_HU_RANGE[0]:g}..{_HU_RANGE[1]:g}) but the model uses the CT window '{preset}'"]
    return []


def parse_ct_window(intensity: str) -> tuple[float, float]:
    """(level, width) in HU of a "ct:<name>" or "ct:L,W" preset."""
    spec = intensity.removeprefix("ct:")
    if spec in CT_WINDOWS:
        return CT_WINDOWS[spec]
    try:
        level, width = (float(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"unknown CT window {spec!r}: use one of {sorted(CT_WINDOWS)} or 'L,W' in HU") from None
    if width <= 0:
        raise ValueError(f"CT window width must be positive; got {width}")
    return level, width


def normalise_volume(volume: Volume, intensity: str = "auto") -> np.ndarray:
    """The volume's voxels mapped to [0, 1] float32, shape (z, y, x), by the preset (see module docstring)."""
    preset = resolve_intensity(intensity, volume.modality)
    if preset == "percentile":
        return percentile_normalise(volume.array)
    return window(volume.array, *parse_ct_window(preset))
