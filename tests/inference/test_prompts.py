"""Prompted segmentation (boxes, clicks, background clicks, class prompts) with the shipped demo weights on a CT
phantom with exact truth; the feature cache's reuse, bound and checkpoint invalidation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medmrcnn.batch.model import DEMO_WEIGHTS
from medmrcnn.inference import PredictorConfig, SliceWisePredictor
from medmrcnn.inference.prompt_heads import FeatureCache
from medmrcnn.inference.prompts import Prompt, PromptError, PromptSegmenter
from medmrcnn.modeling import load_model
from medmrcnn.synthetic import Phantom, make_ct_phantom
from medmrcnn.volume import Volume, affine_from_geometry
from tests.masks import centre, dice

# At the demo model's 1.4 mm pixels; seed 11 puts tumours 4 and 5 side by side in the liver and tumour 6 in kidney 2.
LIVER, KIDNEY, TUMOUR = 1, 2, 3


def box_around(mask: np.ndarray, margin: int = 3) -> tuple[int, int, int, int, int, int]:
    """(z0, y0, x0, z1, y1, x1) around a 3D mask, `margin` pixels wider in-plane."""
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    h, w = mask.shape[1:]
    return (sl[0].start, max(sl[1].start - margin, 0), max(sl[2].start - margin, 0), sl[0].stop,
            min(sl[1].stop + margin, h), min(sl[2].stop + margin, w))


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_ct_phantom(shape=(16, 192, 192), spacing=(4.0, 1.4, 1.4), n_tumours=3,
                           tumour_diameter_mm=(20.0, 30.0), seed=11)


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_WEIGHTS, device="cpu")


@pytest.fixture(scope="module")
def segmenter(demo) -> PromptSegmenter:
    return PromptSegmenter(*demo, model_key="demo")


def test_box_around_each_kidney_returns_that_kidney_in_3d(phantom: Phantom, segmenter: PromptSegmenter) -> None:
    gt = phantom.gt_instances
    for kidney, other in ((2, 3), (3, 2)):
        result = segmenter.segment(phantom.volume, Prompt(box=box_around(gt == kidney)), "ct")
        assert dice(result.mask, gt == kidney) >= 0.9
        assert not (result.mask & (gt == other)).any()
        rec = result.record
        assert rec is not None and rec.class_name == "kidney"
        truth_z = np.flatnonzero((gt == kidney).any(axis=(1, 2)))
        assert abs(rec.slice_range[0] - truth_z[0]) <= 1 and abs(rec.slice_range[1] - truth_z[-1]) <= 1
        assert rec.voxel_count == result.mask.sum()
        assert rec.volume_ml == pytest.approx(result.mask.sum() * phantom.volume.voxel_volume_ml)
        assert rec.longest_diameter_mm > 20 and 0.3 <= rec.score_mean <= rec.score_max <= 1
        vr = result.to_volume_result(segmenter.labels)
        assert set(np.unique(vr.class_map)) == {0, KIDNEY} and vr.instances == [rec]


def test_click_in_each_tumour_returns_that_tumour_only(phantom: Phantom, segmenter: PromptSegmenter) -> None:
    gt = phantom.gt_instances
    for tumour in (4, 5):
        result = segmenter.segment(phantom.volume, Prompt(foreground=(centre(gt == tumour),)), "ct")
        assert result.record is not None and result.record.class_name == "tumour"
        assert dice(result.mask, gt == tumour) >= 0.85
        # Nothing else: no voxel beyond the tumour's rim (a 2-voxel margin allows for boundary error).
        assert (result.mask & ~ndimage.binary_dilation(gt == tumour, iterations=2)).sum() < 0.01 * result.mask.sum()
        assert result.record.slice_range[1] - result.record.slice_range[0] >= 4  # followed through its slices


def test_click_finds_a_tumour_the_automatic_model_drops(phantom: Phantom, demo) -> None:
    # Tumour 5 faded towards the liver: the automatic model's best score for it falls below its threshold.
    t = phantom.gt_instances == 5
    arr = phantom.volume.array.copy()
    arr[t] = 60 + (arr[t] - 60) * 0.27
    faded = phantom.volume.with_array(arr)
    auto = SliceWisePredictor(*demo, PredictorConfig(score_threshold=0.99)).predict(faded)
    assert not any(dice(auto.instance_map == r.id, t) > 0.1 for r in auto.instances)
    result = PromptSegmenter(*demo).segment(faded, Prompt(foreground=(centre(t),)))
    assert result.record is not None and result.record.class_name == "tumour"
    assert result.record.score_max < 0.99
    assert dice(result.mask, t) >= 0.7
    assert (result.mask & ~ndimage.binary_dilation(t, iterations=2)).sum() < 0.05 * result.mask.sum()


def test_background_click_removes_a_neighbour_inside_the_box(phantom: Phantom, segmenter: PromptSegmenter) -> None:
    gt = phantom.gt_instances
    both = box_around((gt == 4) | (gt == 5), margin=2)  # two tumours side by side in one box
    plain = segmenter.segment(phantom.volume, Prompt(box=both, class_ids=(TUMOUR,)), "ct")
    assert dice(plain.mask, gt == 4) >= 0.85 and not (plain.mask & (gt == 5)).any()  # the more confident one
    for unwanted, wanted in ((4, 5), (5, 4)):
        cut = segmenter.segment(phantom.volume, Prompt(box=both, class_ids=(TUMOUR,),
                                                       background=(centre(gt == unwanted),)), "ct")
        assert not (cut.mask & (gt == unwanted)).any()
        assert dice(cut.mask, gt == wanted) >= 0.85


def test_class_prompt_picks_that_class_under_a_box(phantom: Phantom, segmenter: PromptSegmenter) -> None:
    gt = phantom.gt_instances
    box = box_around(gt == 2)  # kidney 2 holds tumour 6
    assert segmenter.segment(phantom.volume, Prompt(box=box), "ct").record.class_name == "kidney"
    tumour = segmenter.segment(phantom.volume, Prompt(box=box, class_ids=(TUMOUR,)), "ct")
    assert tumour.record.class_name == "tumour"
    assert dice(tumour.mask, gt == 6) >= 0.6


def test_2d_image_click_and_box(phantom: Phantom, segmenter: PromptSegmenter) -> None:
    z = 11
    image = Volume(phantom.volume.array[z:z + 1].copy(), phantom.volume.affine, modality="CT")
    kidney = phantom.gt_instances[z:z + 1] == 3
    y, x = centre(kidney)[1:]
    by_click = segmenter.segment(image, Prompt(foreground=((0, y, x),)), "slice")
    by_box = segmenter.segment(image, Prompt(box=box_around(kidney)), "slice")
    for result in (by_click, by_box):
        assert result.mask.shape == (1, 192, 192) and result.record.class_name == "kidney"
        assert dice(result.mask, kidney) >= 0.9


def test_next_prompt_reuses_features_and_a_new_checkpoint_drops_them(phantom: Phantom, demo) -> None:
    cache = FeatureCache()
    first = PromptSegmenter(*demo, cache=cache, model_key="a")
    click = Prompt(foreground=(centre(phantom.gt_instances == 4),))
    r1 = first.segment(phantom.volume, click, "ct")
    assert r1.metadata["cache"]["misses"] > 0
    nudged = tuple(np.array(click.foreground[0]) + (0, 2, 1))  # a second click on the same tumour
    r2 = first.segment(phantom.volume, Prompt(foreground=(nudged,)), "ct")
    assert r2.metadata["cache"]["misses"] == 0 and r2.metadata["cache"]["hits"] > 0
    retrained = PromptSegmenter(*demo, cache=cache, model_key="b")
    r3 = retrained.segment(phantom.volume, click, "ct")
    assert r3.metadata["cache"]["misses"] > 0 and len(cache) == r3.metadata["cache"]["misses"]
    assert np.array_equal(r3.mask, r1.mask)  # same weights under another key: same answer, recomputed


def test_cache_stays_within_its_bound(phantom: Phantom, demo) -> None:
    probe = PromptSegmenter(*demo, cache=FeatureCache())
    probe.segment(phantom.volume, Prompt(box=(10, 90, 30, 11, 150, 80)), "ct")
    per_slice = probe.cache.nbytes // len(probe.cache)  # all slices have the same size
    cache = FeatureCache(max_bytes=3 * per_slice)
    PromptSegmenter(*demo, cache=cache).segment(phantom.volume, Prompt(box=box_around(phantom.gt_instances == 1)))
    assert len(cache) == 3 and cache.nbytes <= 3 * per_slice


@pytest.mark.parametrize("prompt, reason", [
    (Prompt(), "give a box or at least one foreground click"),
    (Prompt(foreground=((16, 10, 10),)), "outside the image"),
    (Prompt(foreground=((3, 10, 10),), background=((3, -1, 10),)), "outside the image"),
    (Prompt(box=(5, 80, 60, 8, 40, 100)), "inverted"),
    (Prompt(box=(5, 80, 60, 8, 81, 100)), "empty"),
    (Prompt(box=(5, 80, 60, 5, 120, 100)), "empty"),
    (Prompt(box=(5, 80, 60, 8, 120, 300)), "outside the image"),
    (Prompt(foreground=((3, 10, 10),), class_ids=(4,)), "not one of the model's"),
])
def test_bad_prompts_are_refused_with_a_reason(phantom: Phantom, segmenter: PromptSegmenter, prompt: Prompt,
                                               reason: str) -> None:
    with pytest.raises(PromptError, match=reason):
        segmenter.segment(phantom.volume, prompt, "ct")


def test_a_click_or_box_on_a_real_nucleus_returns_that_nucleus(nuclei) -> None:
    """NuClick-style use on real cells: the held-out part of the DSB2018 image, the session's real-nuclei model."""
    image, truth = nuclei.parts["test"]
    cell = Volume(image[None].astype(np.float32), affine_from_geometry((0.0005,) * 3, (0, 0, 0)), modality="SM")
    segmenter = PromptSegmenter(*load_model(nuclei.weights, device="cpu"), model_key="nuclei")
    h, w = truth.shape
    inner = [i for i, sl in enumerate(ndimage.find_objects(truth), start=1)
             if sl and sl[0].start > 2 and sl[1].start > 2 and sl[0].stop < h - 2 and sl[1].stop < w - 2
             and np.count_nonzero(truth == i) >= 40]
    assert len(inner) >= 30
    by_click, by_box, foreign = [], [], []
    for i in inner:
        nucleus = truth == i
        clicked = segmenter.segment(cell, Prompt(foreground=((0, *centre(nucleus)),)), "test").mask[0]
        boxed = segmenter.segment(cell, Prompt(box=box_around(nucleus[None], margin=2)), "test").mask[0]
        by_click.append(dice(clicked, nucleus))
        by_box.append(dice(boxed, nucleus))
        foreign.append(np.count_nonzero(clicked & (truth > 0) & ~nucleus) / max(np.count_nonzero(clicked), 1))
    for name, scores in (("click", by_click), ("box", by_box)):
        assert np.median(scores) >= 0.8 and np.mean(np.array(scores) >= 0.7) >= 0.75, (name, np.round(scores, 2))
    assert np.median(foreign) <= 0.05  # a click returns its own nucleus, not its neighbours
