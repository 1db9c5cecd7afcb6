"""`medmrcnn_interactive` through a real MONAI Label 0.8.5 server, driven by MONAI Label's client with params shaped
exactly as 3D Slicer's MONAILabel module (and OHIF's panel) send them, on a CT phantom with known truth.

Slicer sends clicks as [i, j, k] voxel indices (i column, j row, k slice; its RAS -> IJK of the control point,
rounded) and the ROI as [i0, i1, j0, j1, k0, k1]: its RAS min and max corners mapped to IJK and rounded, so along
axes that run against RAS a pair comes high to low. `slicer_roi` below does that conversion from first principles.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from scipy import ndimage

from medmrcnn.io import save_volume
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.volume import Volume
from tests.plugins.monailabel_server import RunningServer, start_server, train_and_wait
from tests.masks import centre, dice

pytestmark = [pytest.mark.monailabel, pytest.mark.timeout(600)]

MODEL = "medmrcnn_interactive"
VOLUME = "medmrcnn_volume"
# At the demo model's 1.4 mm pixels; seed 11: tumours 4 and 5 side by side in the liver, tumour 6 in kidney 2.
PHANTOM = dict(shape=(16, 192, 192), spacing=(4.0, 1.4, 1.4), n_tumours=3, tumour_diameter_mm=(20.0, 30.0), seed=11)
AUTO_THRESHOLD = "0.99"  # the automatic model's threshold on this server (--conf score_threshold)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slicer_point(zyx: tuple[int, int, int]) -> list[int]:
    """A control point on voxel (z, y, x) as Slicer sends it: [i, j, k]."""
    return [int(zyx[2]), int(zyx[1]), int(zyx[0])]


def slicer_roi(affine_lps: np.ndarray, mask: np.ndarray, margin: int = 3) -> list[int]:
    """Slicer's "roi" for an ROI node drawn around `mask` (z, y, x) with `margin` voxels in-plane: the ROI's RAS
    min / max corners (voxel edges) mapped through RAS -> IJK and rounded, as [i_min, i_max, j_min, j_max, ...]."""
    sl = ndimage.find_objects(mask.astype(np.uint8))[0]
    lo = np.array([sl[2].start - margin, sl[1].start - margin, sl[0].start], dtype=float) - 0.5
    hi = np.array([sl[2].stop - 1 + margin, sl[1].stop - 1 + margin, sl[0].stop - 1], dtype=float) + 0.5
    ijk_to_ras = LPS_TO_RAS @ affine_lps
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    ras = corners @ ijk_to_ras.T
    ras_min, ras_max = ras.min(0), ras.max(0)
    ras_to_ijk = np.linalg.inv(ijk_to_ras)
    ijk_min = [round(float(v)) for v in ras_to_ijk @ ras_min]
    ijk_max = [round(float(v)) for v in ras_to_ijk @ ras_max]
    return [v for pair in zip(ijk_min[:3], ijk_max[:3]) for v in pair]


def status_of(call) -> tuple[int, str]:
    """(HTTP status, body) of a request the server refuses."""
    with pytest.raises(MONAILabelClientException) as err:
        call()
    msg = err.value.msg
    return int(msg.split("Status: ")[1].split(";")[0]), msg


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The phantom (NIfTI + truth), a copy with tumour 5 faded towards the liver, and one slice as a 2D image."""
    d = tmp_path_factory.mktemp("data")
    ph = make_ct_phantom(**PHANTOM)
    out = {"gt": ph.gt_instances, "affine": ph.volume.affine}
    out["ct"] = save_volume(ph.volume, d / "ct.nii.gz")
    out["ct_truth"] = save_volume(ph.volume.with_array(ph.class_map()), d / "ct_label.nii.gz")
    arr = ph.volume.array.copy()
    t5 = ph.gt_instances == 5
    arr[t5] = 60 + (arr[t5] - 60) * 0.27  # 6 HU from the liver instead of 20-50: the automatic model's score drops
    out["faded"] = save_volume(ph.volume.with_array(arr), d / "faded.nii.gz")
    out["slice"] = save_volume(Volume(ph.volume.array[11:12].copy(), ph.volume.affine, modality="CT"),
                               d / "slice.nii.gz")
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data: dict):
    base = tmp_path_factory.mktemp("server")
    conf = {"model_dir": str(base / "model"), "device": "cpu", "score_threshold": AUTO_THRESHOLD}
    srv = start_server(base / "studies", base / "server.log", conf)
    srv.model_dir = base / "model"  # type: ignore[attr-defined]
    client = MONAILabelClient(srv.url, tmpdir=str(base))
    for name in ("ct", "faded", "slice"):
        client.upload_image(str(data[name]), image_id=name)
    yield srv
    srv.stop()
    assert not srv.alive()


@pytest.fixture
def client(server: RunningServer, tmp_path: Path) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path))


def served(label_file: str, image: Path) -> np.ndarray:
    """The returned label as (z, y, x), after checking it lies on the image's grid."""
    img, lab = nib.load(image), nib.load(label_file)
    assert lab.shape == img.shape and np.allclose(lab.affine, img.affine, atol=1e-4)
    return np.asarray(lab.dataobj).transpose(2, 1, 0)


def test_info_types_the_model_for_point_and_box_tools(client: MONAILabelClient) -> None:
    info = client.info()["models"][MODEL]
    assert info["type"] == "deepgrow"  # Slicer: SmartEdit/Deepgrow points + ROI; OHIF: "Point Prompts"
    assert info["dimension"] == 3 and info["labels"] == {"liver": 1, "kidney": 2, "tumour": 3}


def test_slicer_roi_around_a_kidney_returns_that_kidney_in_3d(client: MONAILabelClient, data: dict) -> None:
    gt = data["gt"]
    roi = slicer_roi(data["affine"], gt == 2)
    assert roi[0] > roi[1] and roi[2] > roi[3] and roi[4] < roi[5]  # LPS images: i and j come high to low
    label_file, result = client.infer(MODEL, "ct", {"label": "kidney", "foreground": [], "background": [],
                                                    "roi": roi})
    label = served(label_file, data["ct"])
    assert set(np.unique(label)) == {0, 2}  # just the object, with the kidney's label value
    assert dice(label == 2, gt == 2) >= 0.9 and not ((label > 0) & (gt == 3)).any()
    assert result["mode"] == "box" and result["label_names"] == {"kidney": 2}
    (row,) = result["instances"]
    assert row["class_name"] == "kidney" and row["label_value"] == 2
    assert row["voxel_count"] == int((label == 2).sum())
    z = np.flatnonzero((gt == 2).any(axis=(1, 2)))
    assert abs(row["slice_range"][0] - z[0]) <= 1 and abs(row["slice_range"][1] - z[-1]) <= 1
    assert row["volume_ml"] > 0 and row["longest_diameter_mm"] > 20 and 0.3 < row["score_max"] <= 1

    # The next prompt on the same slices runs the heads only.
    _, again = client.infer(MODEL, "ct", {"label": "kidney", "roi": roi})
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] > 0


def test_click_in_a_tumour_returns_that_tumour_only(client: MONAILabelClient, data: dict) -> None:
    gt = data["gt"]
    for tumour in (4, 5):  # OHIF's Point Prompts send no "label": the class is the model's
        label_file, result = client.infer(MODEL, "ct", {"foreground": [slicer_point(centre(gt == tumour))],
                                                        "background": []})
        label = served(label_file, data["ct"]) > 0
        assert result["instances"][0]["class_name"] == "tumour"
        assert dice(label, gt == tumour) >= 0.85
        assert (label & ~ndimage.binary_dilation(gt == tumour, iterations=2)).sum() < 0.01 * label.sum()


def test_click_finds_a_tumour_the_automatic_model_scored_below_its_threshold(
    client: MONAILabelClient, data: dict
) -> None:
    t5 = data["gt"] == 5
    auto_file, auto = client.infer(VOLUME, "faded", {"label_type": "instance"})
    auto_label = served(auto_file, data["faded"])
    assert not any(dice(auto_label == r["id"], t5) > 0.1 for r in auto["instances"])  # dropped at 0.99
    label_file, result = client.infer(MODEL, "faded", {"label": "tumour", "foreground": [slicer_point(centre(t5))]})
    label = served(label_file, data["faded"]) == 3
    assert dice(label, t5) >= 0.7 and result["instances"][0]["score_max"] < float(AUTO_THRESHOLD)
    assert (label & ~ndimage.binary_dilation(t5, iterations=2)).sum() < 0.05 * label.sum()


def test_background_click_removes_a_neighbour_inside_the_roi(client: MONAILabelClient, data: dict) -> None:
    gt = data["gt"]
    roi = slicer_roi(data["affine"], (gt == 4) | (gt == 5), margin=2)
    plain_file, _ = client.infer(MODEL, "ct", {"label": "tumour", "roi": roi, "foreground": [], "background": []})
    plain = served(plain_file, data["ct"]) > 0
    assert dice(plain, gt == 4) >= 0.85  # the box holds two tumours; the model's first choice is tumour 4
    label_file, _ = client.infer(MODEL, "ct", {"label": "tumour", "roi": roi, "foreground": [],
                                               "background": [slicer_point(centre(gt == 4))]})
    label = served(label_file, data["ct"]) > 0
    assert not (label & (gt == 4)).any() and dice(label, gt == 5) >= 0.85


def test_ohif_class_prompt_selects_the_class_inside_the_roi(client: MONAILabelClient, data: dict) -> None:
    gt = data["gt"]
    label_file, result = client.infer(MODEL, "ct", {"label_prompt": [3], "roi": slicer_roi(data["affine"], gt == 2)})
    assert result["instances"][0]["class_name"] == "tumour"  # the tumour inside kidney 2, not the kidney
    assert dice(served(label_file, data["ct"]) == 3, gt == 6) >= 0.6


def test_ohif_class_prompts_on_the_automatic_model_return_just_those_classes(
    client: MONAILabelClient, data: dict
) -> None:
    label_file, result = client.infer(VOLUME, "ct", {"label_prompt": [2]})  # OHIF "Class Prompts": kidney
    label = served(label_file, data["ct"])
    assert set(np.unique(label)) == {0, 2}
    assert len(result["instances"]) >= 2 and {r["class_name"] for r in result["instances"]} == {"kidney"}
    assert status_of(lambda: client.infer(VOLUME, "ct", {"label_prompt": [7]}))[0] == 400


def test_2d_image_click_returns_the_object(client: MONAILabelClient, data: dict) -> None:
    kidney = data["gt"][11:12] == 3
    label_file, result = client.infer(MODEL, "slice", {"foreground": [slicer_point(centre(kidney))]})
    label = served(label_file, data["slice"])
    assert label.shape == (1, 192, 192) and result["instances"][0]["class_name"] == "kidney"
    assert dice(label == 2, kidney) >= 0.9


def test_bad_prompts_get_a_4xx_with_a_reason_and_the_server_keeps_serving(
    client: MONAILabelClient, server: RunningServer, data: dict
) -> None:
    gt = data["gt"]
    roi = slicer_roi(data["affine"], gt == 2)
    inverted = [roi[1], roi[0], *roi[2:]]
    empty = [roi[0], roi[0], *roi[2:]]
    cases = [
        ({"foreground": [[500, 10, 3]]}, 422, "outside the image"),
        ({"foreground": [[10, 10, 3]], "background": [[10, 10, 16]]}, 422, "outside the image"),
        ({"roi": inverted, "label": "kidney"}, 400, "inverted along i"),
        ({"roi": empty, "label": "kidney"}, 422, "empty"),
        ({"roi": roi, "label": "spleen"}, 400, "not one of this model's labels"),
        ({"foreground": [["a", 10, 3]]}, 400, "three numbers"),
        ({"roi": [1, 2, 3]}, 400, "six numbers"),
        ({"label_prompt": [9], "roi": roi}, 400, "label_prompt value 9"),
        ({"label": "kidney"}, 422, "give a box or at least one foreground click"),
    ]
    for params, status, reason in cases:
        code, msg = status_of(lambda p=params: client.infer(MODEL, "ct", p))
        assert code == status and reason in msg, (params, msg)
    assert server.alive()
    _, result = client.infer(MODEL, "ct", {"label": "kidney", "roi": roi})
    assert result["instances"][0]["class_name"] == "kidney"


def test_corrected_label_fine_tunes_and_the_next_prompt_uses_the_new_checkpoint(
    client: MONAILabelClient, server: RunningServer, data: dict
) -> None:
    roi = slicer_roi(data["affine"], data["gt"] == 3)
    _, before = client.infer(MODEL, "ct", {"label": "kidney", "roi": roi})
    assert before["checkpoint"]["fine_tuned"] is False
    assert client.save_label("ct", str(data["ct_truth"]))["label"] == "ct"  # the clinician's corrected label
    train_and_wait(client, server, VOLUME)

    published = server.model_dir / f"{VOLUME}.safetensors"  # type: ignore[attr-defined]
    label_file, after = client.infer(MODEL, "ct", {"label": "kidney", "roi": roi})
    assert after["checkpoint"] == {"path": str(published), "fine_tuned": True}
    # The old model's features were dropped: all the cache holds now was computed for this prompt.
    assert after["cache"]["misses"] > 0 and after["cache"]["slices"] == after["cache"]["misses"]
    assert client.info()["models"][MODEL]["checkpoint"] == str(published)
    assert dice(served(label_file, data["ct"]) == 2, data["gt"] == 3) >= 0.8
