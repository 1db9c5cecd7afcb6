"""Augmentation moves masks with the image and recomputes boxes; slice sampling keeps positives, some empties."""

import numpy as np
import pytest
import torch

from medmrcnn.training import AnnotatedVolume, AugmentConfig, DataConfig
from medmrcnn.training.dataset import SliceDataset, random_crop
from medmrcnn.training.preprocess import prepare_volume
from medmrcnn.volume import Volume, affine_from_geometry
from tests.conftest import tiny_config

AUG = AugmentConfig(flip_prob=0.5, rot90_prob=0.5, affine_prob=1.0, rotate_deg=20, scale=0.15, translate_px=5,
                    intensity_prob=0.0, noise_prob=0.0, contrast_prob=0.0)


def _item(depth=6, empty=(0, 5)):
    """Image equal to (instance id * 100 - 100 HU): after augmentation, bright pixels must coincide with masks."""
    inst = np.zeros((depth, 48, 48), np.uint16)
    for z in range(depth):
        if z in empty:
            continue
        inst[z, 8:20, 10:30] = 1
        inst[z, 28:40, 30:42] = 2
    img = inst.astype(np.int16) * 100 - 100
    return AnnotatedVolume(Volume(img, affine_from_geometry((1, 1, 3), (0, 0, 0)), modality="CT"), inst, {1: 1, 2: 2}, "t")


def _dataset(aug=AUG, **data):
    cfg = tiny_config(labels=("a", "b"), intensity="ct:-40,240", **({"in_channels": 3} if data.pop("ctx", False) else {}))
    return SliceDataset([prepare_volume(_item(), cfg)], cfg, DataConfig(**data), aug)


def test_masks_and_boxes_follow_the_image():
    ds = _dataset()
    for seed in range(12):
        image, target = ds[(1, seed)]
        assert image.shape == (1, 48, 48) and image.dtype == torch.float32
        bright = image[0].numpy() > 0.45
        union = target["masks"].numpy().any(0)
        agree = (bright == union).mean()
        assert agree > 0.97, (seed, agree)
        for box, m in zip(target["boxes"].numpy(), target["masks"].numpy()):
            ys, xs = np.nonzero(m)
            np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert sorted(target["labels"].tolist()) == [1, 2]


def test_same_seed_same_sample_and_no_seed_no_augmentation():
    ds = _dataset()
    a, b = ds[(2, 7)], ds[(2, 7)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["masks"], b[1]["masks"])
    plain, target = ds[(2, None)]
    assert target["boxes"].tolist() == [[10, 8, 30, 20], [30, 28, 42, 40]]
    assert any(not torch.equal(ds[(2, s)][0], plain) for s in range(5))


def test_context_slices_become_channels():
    ds = _dataset(ctx=True, empty_fraction=0.0)
    image, _ = ds[(0, None)]
    assert image.shape == (3, 48, 48)
    assert torch.equal(image[0], image[1])  # the first slice's missing neighbour replicates it


@pytest.mark.parametrize("fraction, expected_empty", [(0.0, 0), (0.5, 1), (1.0, 2)])
def test_epochs_keep_every_positive_and_a_share_of_empties(fraction, expected_empty):
    ds = _dataset(empty_fraction=fraction)
    samples = ds.epoch_samples(epoch=3, seed=1)
    picked = [ds.refs[i] for i, _ in samples]
    assert sorted(r.z for r in picked if r.classes) == [1, 2, 3, 4]
    assert sum(not r.classes for r in picked) == expected_empty
    assert samples == ds.epoch_samples(epoch=3, seed=1)
    assert samples != ds.epoch_samples(epoch=4, seed=1)


def test_class_balance_equalises_rare_classes():
    inst = np.zeros((10, 32, 32), np.uint16)
    inst[:, 2:12, 2:12] = 1          # class a on every slice
    inst[0, 20:26, 20:26] = 2        # class b on one slice only
    item = AnnotatedVolume(Volume(inst.astype(np.int16) * 100, modality="CT"), inst, {1: 1, 2: 2}, "b")
    cfg = tiny_config(labels=("a", "b"), intensity="ct:50,100")
    balanced = SliceDataset([prepare_volume(item, cfg)], cfg, DataConfig(class_balance=True), None)
    plain = SliceDataset([prepare_volume(item, cfg)], cfg, DataConfig(), None)
    def share_of_b(ds):
        s = ds.epoch_samples(0, 0, num_samples=4000)
        return np.mean([2 in ds.refs[i].classes for i, _ in s])
    assert share_of_b(plain) == pytest.approx(0.1, abs=0.03)
    assert share_of_b(balanced) == pytest.approx(0.5, abs=0.05)


def test_random_crop_keeps_an_object_in_view():
    rng = np.random.default_rng(0)
    inst = np.zeros((200, 200), np.uint16)
    inst[150:160, 170:180] = 4
    for _ in range(20):
        img, ids = random_crop(np.zeros((1, 200, 200), np.float32), inst, 64, rng)
        assert img.shape == (1, 64, 64) and ids.shape == (64, 64)
        assert (ids == 4).any()


def test_resampling_to_the_model_pixel_size():
    cfg = tiny_config(labels=("a", "b"), intensity="ct:-40,240", pixel_spacing_mm=2.0)
    pv = prepare_volume(_item(), cfg)
    assert pv.image.shape == (6, 24, 24) and pv.pixel_spacing_mm == (2.0, 2.0)
    assert set(np.unique(pv.instances)) == {0, 1, 2}
    assert (pv.instances[1] == 1).sum() == pytest.approx(6 * 10, abs=8)
