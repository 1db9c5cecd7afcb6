"""MONAI interop: exact Volume <-> MetaTensor conversion, agreement with MONAI's own readers, use in Compose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, Orientation, ScaleIntensityRanged

from medmrcnn.errors import DataError
from medmrcnn.io import load_volume, save_volume
from medmrcnn.io.monai import LoadVolumed, metatensor_to_volume, volume_to_metatensor
from medmrcnn.volume import Volume


def test_round_trip_is_exact(oblique_series):
    v = load_volume(oblique_series)
    mt = volume_to_metatensor(v)
    assert tuple(mt.shape) == (1,) + v.shape[::-1] and mt.dtype == torch.int16
    assert str(mt.meta["space"]) == "RAS" and mt.meta["modality"] == "CT"
    back = metatensor_to_volume(mt)
    assert np.array_equal(back.array, v.array) and back.array.dtype == v.array.dtype
    assert np.array_equal(back.affine, v.affine)
    assert (back.modality, back.series_uid, back.source) == (v.modality, v.series_uid, v.source)


def test_agrees_with_monai_loadimage_on_the_same_files(tmp_path, oblique_series, oblique_volume):
    nifti = save_volume(oblique_volume, tmp_path / "ct.nii.gz")
    ours = volume_to_metatensor(load_volume(nifti))
    for source, reader in ((nifti, "NibabelReader"), (oblique_series, "PydicomReader")):
        theirs = LoadImage(image_only=True, ensure_channel_first=True, reader=reader)(str(source))
        assert theirs.shape == ours.shape
        assert torch.equal(theirs.as_tensor(), ours.as_tensor().float())
        assert torch.allclose(theirs.affine, ours.affine, atol=1e-4)
    # MONAI's spatial transforms see the same world: reorienting both to RAS gives the same voxels
    ras = Orientation(axcodes="RAS", labels=None)
    assert torch.equal(ras(theirs).as_tensor(), ras(ours).as_tensor().float())


def test_metatensor_from_monai_becomes_a_volume(tmp_path, oblique_volume):
    nifti = save_volume(oblique_volume, tmp_path / "ct.nii.gz")
    mt = LoadImage(image_only=True, ensure_channel_first=True, reader="NibabelReader")(str(nifti))
    v = metatensor_to_volume(mt, modality="CT")
    assert np.array_equal(v.array, oblique_volume.array) and np.allclose(v.affine, oblique_volume.affine, atol=1e-5)
    lps = MetaTensor(mt.as_tensor(), meta={**mt.meta, "space": "LPS", "affine": torch.as_tensor(v.affine)})
    assert np.allclose(metatensor_to_volume(lps).affine, v.affine)


def test_2d_and_multichannel_metatensors():
    mt = MetaTensor(torch.arange(12.0).reshape(1, 4, 3), affine=torch.diag(torch.tensor([-0.5, -0.25, 1.0])))
    v = metatensor_to_volume(mt)
    assert v.shape == (1, 3, 4) and np.array_equal(v.array[0], np.arange(12.0).reshape(4, 3).T)
    assert np.allclose(v.spacing_xyz[:2], (0.5, 0.25))
    with pytest.raises(DataError, match="one-channel"):
        metatensor_to_volume(MetaTensor(torch.zeros(3, 4, 5, 6)))


def test_loadvolumed_in_compose(ct_series, ct_volume):
    pipeline = Compose([
        LoadVolumed(keys="image"),
        ScaleIntensityRanged(keys="image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
    ])
    out = pipeline({"image": str(ct_series), "case": "c1"})
    assert out["case"] == "c1" and tuple(out["image"].shape) == (1,) + ct_volume.shape[::-1]
    v = metatensor_to_volume(out["image"])
    assert np.allclose(v.affine, ct_volume.affine, atol=1e-4)
    assert np.allclose(v.array, np.clip((ct_volume.array + 1000) / 2000.0, 0, 1), atol=1e-6)
    assert LoadVolumed(keys="mask", allow_missing_keys=True)({"image": 1}) == {"image": 1}
    ready = LoadVolumed(keys="image")({"image": Volume(np.zeros((2, 3, 4), np.uint8))})
    assert tuple(ready["image"].shape) == (1, 4, 3, 2)
