"""SliceWisePredictor end to end with a network trained in the session (tests/inference/conftest.py)."""

import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from monai.data import list_data_collate
from monai.transforms import Compose

from medmrcnn.errors import DataError
from medmrcnn.export import write_label_image, write_nifti
from medmrcnn.inference import PredictorConfig, SliceWisePredictor, VolumeResult
from medmrcnn.inference.batching import CPU_BATCH, auto_batch_size, batch_size_for_memory
from medmrcnn.inference.monai import SliceWiseInferer, SliceWisePredictd, result_to_metatensor
from medmrcnn.io import save_volume
from medmrcnn.io.monai import LoadVolumed, volume_to_metatensor
from medmrcnn.modeling import build_model
from medmrcnn.synthetic import Phantom
from medmrcnn.transforms import normalise_volume
from medmrcnn.volume import Volume
from tests.conftest import tiny_config
from tests.inference.conftest import SHAPE, ct_phantom, dice_per_instance, sub_phantom

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def assert_matches_truth(result: VolumeResult, phantom: Phantom) -> dict[int, float]:
    """Same 3D instance count as the truth, every true instance found with its class at Dice >= 0.8."""
    pred_classes = {r.id: r.class_id for r in result.instances}
    dice = dice_per_instance(phantom.gt_instances, phantom.gt_classes, result.instance_map, pred_classes)
    summary = {g: (phantom.labels.name_of(c), round(dice[g], 3)) for g, c in phantom.gt_classes.items()}
    assert result.num_instances == len(phantom.gt_classes), (
        [(r.class_name, r.voxel_count) for r in result.instances], summary)
    assert min(dice.values()) >= 0.8, summary
    return dice


@pytest.fixture(scope="module")
def predictor(trained) -> SliceWisePredictor:
    return SliceWisePredictor(trained.model, trained.config, PredictorConfig())


@pytest.fixture(scope="module")
def reference(predictor, trained) -> VolumeResult:
    return predictor.predict(trained.phantom.volume)


@pytest.fixture(scope="module")
def busy(trained) -> Phantom:
    """The four consecutive slices with the most distinct instances: cheap inputs for the plumbing tests."""
    gt = trained.phantom.gt_instances
    z0 = int(np.argmax([len(np.unique(gt[z:z + 4])) for z in range(SHAPE[0] - 3)]))
    return sub_phantom(trained.phantom, z0, z0 + 4)


@pytest.fixture(scope="module")
def busy_result(predictor, busy) -> VolumeResult:
    return predictor.predict(busy.volume)


def test_every_instance_found_in_3d_with_dice_above_0_8(reference, trained):
    assert_matches_truth(reference, trained.phantom)
    assert reference.instance_map.dtype == np.uint16 and reference.class_map.dtype == np.uint8
    assert reference.volume is trained.phantom.volume
    classes = {r.id: r.class_id for r in reference.instances}
    lut = np.zeros(max(classes) + 1, dtype=np.uint8)
    lut[list(classes)] = list(classes.values())
    np.testing.assert_array_equal(reference.class_map, lut[reference.instance_map])
    tumours = reference.instances_of("tumour")
    assert all(25 <= r.longest_diameter_mm <= 60 for r in tumours), [r.longest_diameter_mm for r in tumours]
    assert reference.metadata["slices_run"] == SHAPE[0] and reference.metadata["intensity"] == "ct:liver"


def test_finer_grid_is_resampled_for_the_network_and_mapped_back_within_memory_bounds(predictor):
    fine = ct_phantom(upsample=2)  # same anatomy, 1.875 mm pixels: the network sees 3.75 mm
    tracemalloc.start()
    try:
        result = predictor.predict(fine.volume)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.metadata["network_size_yx"] == [SHAPE[1], SHAPE[2]]
    assert result.instance_map.shape == fine.volume.shape
    assert_matches_truth(result, fine)
    float32_size = fine.volume.array.size * 4
    assert peak < 4 * float32_size, f"peak {peak / 2**20:.1f} MiB for a {float32_size / 2**20:.1f} MiB volume"


def test_checkpoint_predictor_and_nifti_output_keep_the_input_geometry(trained, predictor, reference, busy,
                                                                       tmp_path):
    loaded = SliceWisePredictor.from_checkpoint(trained.checkpoint, device="cpu")
    assert loaded.model_cfg == trained.config
    two = sub_phantom(busy, 1, 3).volume
    for a, b in zip(loaded.predict_slices(two)[0], predictor.predict_slices(two)[0]):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert all(np.array_equal(m, n) for m, n in zip(a.masks, b.masks))
    path = write_nifti(reference, tmp_path / "instances.nii.gz", what="instance")
    img = nib.load(path)
    np.testing.assert_array_equal(img.affine, RAS_FROM_LPS @ trained.phantom.volume.affine)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).transpose(2, 1, 0), reference.instance_map)


def test_monai_pipeline_inferer_and_dict_transform(predictor, busy, busy_result, tmp_path):
    vol = busy.volume
    shape_xyz = vol.shape[::-1]
    path = save_volume(vol, tmp_path / "ct.nii.gz")
    pipeline = Compose([LoadVolumed(keys="image"), SliceWisePredictd(keys="image", predictor=predictor,
                                                                     what="instance")])
    d = pipeline({"image": str(path)})
    result = d["pred_result"]
    np.testing.assert_array_equal(result.instance_map, busy_result.instance_map)
    np.testing.assert_array_equal(result.volume.affine, vol.affine)
    assert d["pred"].shape == (1, *shape_xyz)
    np.testing.assert_array_equal(d["pred"].affine.numpy(), RAS_FROM_LPS @ vol.affine)
    np.testing.assert_array_equal(d["pred"][0].numpy().transpose(2, 1, 0), busy_result.instance_map)

    batch = list_data_collate([{"image": d["image"]}])["image"]  # (1, 1, x, y, z) as a DataLoader gives it
    labels = SliceWiseInferer(predictor, what="class")(batch)
    assert labels.shape == (1, 1, *shape_xyz)
    np.testing.assert_array_equal(labels[0, 0].numpy().transpose(2, 1, 0), busy_result.class_map)
    np.testing.assert_array_equal(labels[0].affine.numpy(), RAS_FROM_LPS @ vol.affine)
    np.testing.assert_array_equal(result_to_metatensor(busy_result, "class").numpy(), labels[0].numpy())
    with pytest.raises(DataError, match="MetaTensor"):
        SliceWiseInferer(predictor)(torch.zeros(1, 4, 4, 4))
    with pytest.raises(DataError, match="'image'"):
        predictor.predict({"img": volume_to_metatensor(vol)})


def test_air_slices_are_skipped_and_progress_counts_every_slice(predictor, busy, busy_result):
    vol = busy.volume
    air = np.full((2, *vol.shape[1:]), -1000, dtype=vol.array.dtype)
    affine = vol.affine.copy()
    affine[:3, 3] -= 2 * affine[:3, 2]  # two slices added below: the original voxels keep their positions
    padded = Volume(np.concatenate([air, vol.array, air]), affine, modality="CT")
    done = []
    result = predictor.predict(padded, progress=done.append)
    assert sum(done) == padded.shape[0]
    assert result.metadata["slices_run"] == vol.shape[0]
    assert not result.instance_map[:2].any() and not result.instance_map[-2:].any()
    np.testing.assert_array_equal(result.instance_map[2:-2], busy_result.instance_map)
    np.testing.assert_allclose([r.centroid_mm for r in result.instances],
                               [r.centroid_mm for r in busy_result.instances], atol=1e-9)


def test_flip_tta_merges_views_without_duplicates(trained, reference):
    predictor = SliceWisePredictor(trained.model, trained.config, PredictorConfig(tta_flips=("x",)))
    result = predictor.predict(trained.phantom.volume)
    assert_matches_truth(result, trained.phantom)
    assert [r.class_name for r in result.instances] == [r.class_name for r in reference.instances]


def test_single_slice_input_gives_a_one_slice_result(predictor, trained, tmp_path):
    gt = trained.phantom.gt_instances
    z = max(range(SHAPE[0]), key=lambda k: (len(np.unique(gt[k])), np.count_nonzero(gt[k])))
    one = sub_phantom(trained.phantom, z, z + 1)
    result = predictor.predict(one.volume)
    assert result.instance_map.shape == (1, *SHAPE[1:])
    pred_classes = {r.id: r.class_id for r in result.instances}
    dice = dice_per_instance(one.gt_instances, one.gt_classes, result.instance_map, pred_classes)
    assert result.num_instances == len(one.gt_classes) >= 2 and min(dice.values()) >= 0.8, dice
    path = write_label_image(result, tmp_path / "slice.tif")
    np.testing.assert_array_equal(tifffile.imread(path), result.instance_map[0])


def test_context_slices_reach_a_2_5d_network():
    cfg = tiny_config(labels=("lesion",), in_channels=3, intensity="ct:soft_tissue")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    seen = []
    model.backbone.body.conv1.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    rng = np.random.default_rng(0)
    vol = Volume(rng.integers(-200, 300, size=(3, 32, 32)).astype(np.int16), modality="CT")
    # Only the network input matters here: a threshold no untrained detection reaches skips post-processing.
    SliceWisePredictor(model, cfg, PredictorConfig(batch_size=2, score_threshold=1.0)).predict(vol)
    inputs = torch.cat(seen)[:, :, :32, :32]  # batches are padded to a multiple of 32
    expected = normalise_volume(vol, "ct:soft_tissue")
    for z, channels in enumerate(inputs):
        for c, nz in enumerate((max(z - 1, 0), z, min(z + 1, 2))):
            np.testing.assert_array_equal(channels[c].numpy(), expected[nz])


def test_batch_size_rules():
    cfg = tiny_config()
    assert auto_batch_size(torch.device("cpu"), (512, 512), cfg, amp=False) == CPU_BATCH
    small = batch_size_for_memory(8 * 2**30, (512, 512), cfg, amp=True)
    assert 1 <= batch_size_for_memory(2**30, (512, 512), cfg, amp=True) <= small
    assert batch_size_for_memory(80 * 2**30, (512, 512), cfg, amp=True) == 64
    assert batch_size_for_memory(2**20, (512, 512), cfg, amp=True) == 1
    assert batch_size_for_memory(8 * 2**30, (512, 512), cfg, amp=False) <= small


def test_config_is_validated_and_round_trips():
    cfg = PredictorConfig(score_threshold=0.3, tta_flips=["x", "y"], link_metric="iou")
    assert PredictorConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"score_threshold": 1.5}, {"link_metric": "dice"}, {"tta_flips": ("z",)}, {"batch_size": 0},
                {"intensity": "ct:nonsense"}, {"mask_threshold": 0.0}):
        with pytest.raises(ValueError):
            PredictorConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        PredictorConfig.from_dict({"score_treshold": 0.5})


@pytest.mark.cuda
def test_cuda_with_amp_matches_cpu(trained, reference):
    predictor = SliceWisePredictor.from_checkpoint(trained.checkpoint, device="cuda")
    result = predictor.predict(trained.phantom.volume)
    assert result.metadata["amp"] and result.metadata["batch_size"] > CPU_BATCH
    assert result.num_instances == reference.num_instances
    a, b = result.instance_map > 0, reference.instance_map > 0
    assert 2 * np.count_nonzero(a & b) / (a.sum() + b.sum()) > 0.97
