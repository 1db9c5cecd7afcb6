"""Microscopy TIFFs as a Cellpose / StarDist user has them: z-stacks, hyperstacks, OME-TIFF, channels, RGB."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import load_volume, scan


def _ramp(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.uint16).reshape(shape) % 4093


def test_imagej_z_stack_is_one_volume_with_its_anisotropy(tmp_path):
    stack = _ramp((5, 12, 14))
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, resolution=(1 / 0.325, 1 / 0.325),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 2.0})
    (info,) = scan(tmp_path / "z.tif")
    assert info.n_volumes == 1 and info.shape == (5, 12, 14)
    v = load_volume(tmp_path / "z.tif")
    assert v.shape == (5, 12, 14) and v.array.dtype == np.uint16 and np.array_equal(v.array, stack)
    assert v.spacing == pytest.approx((0.002, 0.000325, 0.000325)) and not v.warnings
    assert v.metadata["pixel_size_um"] == pytest.approx([2.0, 0.325, 0.325])


def test_plain_multipage_stack_is_read_as_z_with_a_warning_about_the_step(tmp_path):
    stack = _ramp((4, 10, 11))
    tifffile.imwrite(tmp_path / "plain.tif", stack, photometric="minisblack")
    v = load_volume(tmp_path / "plain.tif")
    assert v.shape == (4, 10, 11) and np.array_equal(v.array, stack)
    assert any("z step unknown" in w for w in v.warnings)


def test_hyperstack_frames_and_channels_split_by_axes(tmp_path):
    data = _ramp((2, 3, 2, 10, 12))  # T Z C Y X
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TZCYX", "unit": "um", "spacing": 1.5})
    (info,) = scan(tmp_path / "h.tif")
    assert info.n_volumes == 2 and info.shape == (3, 10, 12)
    with pytest.raises(VolumeLoadError, match="2 volumes in one file"):
        load_volume(tmp_path / "h.tif")
    v = load_volume(tmp_path / "h.tif", frame=1, channel=1)
    assert np.array_equal(v.array, data[1, :, 1]) and not any("channels" in w for w in v.warnings)
    assert np.array_equal(v.metadata["channels"], np.moveaxis(data[1], 1, 0))
    assert v.spacing == pytest.approx((0.0015, 0.0005, 0.0005))
    default = load_volume(tmp_path / "h.tif", frame=0)
    assert np.array_equal(default.array, data[0, :, 0]) and any("2 channels" in w for w in default.warnings)
    with pytest.raises(VolumeLoadError, match="channel 2 out of range"):
        load_volume(tmp_path / "h.tif", frame=0, channel=2)


def test_ome_tiff_physical_sizes_and_units(tmp_path):
    data = _ramp((2, 4, 9, 10))  # C Z Y X
    tifffile.imwrite(tmp_path / "o.ome.tif", data, metadata={
        "axes": "CZYX", "PhysicalSizeX": 650.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 650.0,
        "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 3.0, "PhysicalSizeZUnit": "µm"})
    v = load_volume(tmp_path / "o.ome.tif", channel=1)
    assert np.array_equal(v.array, data[1]) and v.spacing == pytest.approx((0.003, 0.00065, 0.00065))


def test_rgb_he_tile_keeps_its_colour_channels(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(16, 18, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "he.tif", rgb, photometric="rgb", resolution=(4.0, 4.0),
                     imagej=True, metadata={"unit": "um"})
    v = load_volume(tmp_path / "he.tif")
    assert v.shape == (1, 16, 18) and v.metadata["rgb_conversion"] == "luma"
    assert np.array_equal(v.metadata["channels"], np.moveaxis(rgb, -1, 0)[:, None])
    assert np.array_equal(load_volume(tmp_path / "he.tif", channel=2).array[0], rgb[..., 2])
    assert v.spacing[1] == pytest.approx(0.00025)
