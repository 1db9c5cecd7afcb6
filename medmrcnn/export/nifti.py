"""Label maps of a result as NIfTI, on exactly the input's geometry (written by `medmrcnn.io.save_volume`)."""

from __future__ import annotations

from pathlib import Path

from medmrcnn.errors import ExportError
from medmrcnn.inference.result import VolumeResult

MAP_KINDS = ("class", "instance")


def write_nifti(result: VolumeResult, path: str | Path, what: str = "class") -> Path:
    """Write the class map (uint8/uint16) or the instance map (uint16/uint32) to a .nii / .nii.gz file.

    The affine is the input volume's (converted LPS -> RAS by medmrcnn.io), so viewers overlay it on the image; a
    gantry-tilted (sheared) grid is written on its orthogonal grid instead (see `medmrcnn.io.save_volume`).
    """
    from medmrcnn.io import save_volume

    path = Path(path)
    if what not in MAP_KINDS:
        raise ExportError(f"{path}: what must be one of {MAP_KINDS}; got {what!r}")
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ExportError(f"{path}: a NIfTI output needs a .nii or .nii.gz name")
    array = result.class_map if what == "class" else result.instance_map
    return save_volume(result.volume.with_array(array), path, labels=True)
