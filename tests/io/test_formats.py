"""NRRD / MHA / MHD via SimpleITK, 4D refused without a frame, PNG / TIFF tiles (grey and RGB, uint8 / uint16)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from medmrcnn.errors import VolumeLoadError
from medmrcnn.io import load_volume, load_volumes, save_volume, scan
from tests.io.helpers import rotated_affine


def itk_image(array: np.ndarray, affine: np.ndarray, is_vector: bool = False) -> sitk.Image:
    img = sitk.GetImageFromArray(array, isVector=is_vector)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((affine[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(affine[:3, 3].tolist())
    return img


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_simpleitk_formats_keep_geometry(tmp_path, suffix):
    array = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    affine = rotated_affine()
    sitk.WriteImage(itk_image(array, affine), str(tmp_path / f"img{suffix}"))
    v = load_volume(tmp_path / f"img{suffix}")
    assert np.array_equal(v.array, array) and np.allclose(v.affine, affine, atol=1e-5)
    info = scan(tmp_path / f"img{suffix}")[0]
    assert info.kind == "itk" and info.shape == (4, 5, 6) and info.orientation == "LPS"


def test_nrrd_in_ras_space_is_converted_to_lps(tmp_path):
    header = ("NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\nsizes: 2 3 4\n"
              "space directions: (0.5,0,0) (0,0.75,0) (0,0,2)\nkinds: domain domain domain\nendian: little\n"
              "encoding: raw\nspace origin: (10,20,30)\n\n")
    data = np.arange(24, dtype=np.int16)
    (tmp_path / "ras.nrrd").write_bytes(header.encode() + data.tobytes())
    v = load_volume(tmp_path / "ras.nrrd")
    assert np.array_equal(v.array, data.reshape(4, 3, 2))
    assert np.allclose(v.affine, [[-0.5, 0, 0, -10], [0, -0.75, 0, -20], [0, 0, 2, 30], [0, 0, 0, 1]])


def test_4d_is_refused_without_a_frame_never_squashed(tmp_path):
    array = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(tmp_path / "t.nrrd"))
    with pytest.raises(VolumeLoadError, match=r"2 volumes in one file \(4D / multi-plane\); choose one with frame="):
        load_volume(tmp_path / "t.nrrd")
    assert np.array_equal(load_volume(tmp_path / "t.nrrd", frame=1).array, array[1])
    assert load_volumes(tmp_path) == []  # batch mode skips it (with a logged warning)


def test_grey_tiles_keep_dtype_and_pixel_size(tmp_path):
    rng = np.random.default_rng(2)
    grey16 = rng.integers(0, 65535, size=(30, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cm.tif", grey16, resolution=(4000, 4000), resolutionunit="CENTIMETER")
    v = load_volume(tmp_path / "cm.tif")
    assert v.modality == "SM" and v.shape == (1, 30, 40) and v.array.dtype == np.uint16
    assert np.array_equal(v.array[0], grey16) and v.spacing == pytest.approx((0.0025,) * 3) and not v.warnings
    grey8 = grey16.astype(np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g.png")
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert np.array_equal(load_volume(tmp_path / "g.png").array[0], grey8)
    v16 = load_volume(tmp_path / "g16.png")
    assert v16.array.dtype == np.uint16 and np.array_equal(v16.array[0], grey16)
    assert v16.warnings == ["pixel size unknown: 1 mm pixels assumed"]


@pytest.mark.parametrize("name", ["rgb.png", "rgba.png", "rgb.tif", "rgb16.tif"])
def test_rgb_tiles_become_luma(tmp_path, name):
    rng = np.random.default_rng(3)
    dtype = np.uint16 if "16" in name else np.uint8
    rgb = rng.integers(0, np.iinfo(dtype).max, size=(20, 24, 4 if "rgba" in name else 3)).astype(dtype)
    if name.endswith(".png"):
        Image.fromarray(rgb).save(tmp_path / name)
    else:
        tifffile.imwrite(tmp_path / name, rgb, photometric="rgb")
    v = load_volume(tmp_path / name)
    expected = np.rint(rgb[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]).astype(dtype)
    assert v.array.dtype == dtype and np.array_equal(v.array[0], expected)
    assert v.metadata["rgb_conversion"] == "luma"
    assert np.array_equal(load_volume(tmp_path / name, rgb="r").array[0], rgb[..., 0])


def test_imagej_channel_stack_picks_a_channel_and_reads_microns(tmp_path):
    planes = np.stack([np.full((8, 9), i, np.uint16) for i in range(3)])
    tifffile.imwrite(tmp_path / "c.tif", planes, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"})
    v = load_volume(tmp_path / "c.tif", channel=2)
    assert v.shape == (1, 8, 9) and np.array_equal(v.array[0], planes[2]) and v.spacing == pytest.approx((0.0005,) * 3)
    assert v.metadata["channels"].shape == (3, 1, 8, 9)


def test_corrupt_image_files_are_one_line_errors(tmp_path):
    for name in ("bad.nii.gz", "bad.nrrd", "bad.png", "bad.tif"):
        (tmp_path / name).write_bytes(b"this is not an image at all" * 3)
        with pytest.raises(VolumeLoadError) as e:
            load_volume(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and "\n" not in str(e.value)


def test_saved_volume_reloads_from_a_folder_of_outputs(tmp_path):
    from medmrcnn.volume import Volume

    v = Volume(np.ones((2, 3, 4), np.int16), rotated_affine())
    save_volume(v, tmp_path / "a.nii.gz")
    save_volume(v, tmp_path / "b.mha")
    assert [info.kind for info in scan(tmp_path)] == ["nifti", "itk"]
    assert all(np.allclose(w.affine, v.affine, atol=1e-5) for w in load_volumes(tmp_path))
