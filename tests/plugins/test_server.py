"""The plugin proven through a real MONAI Label 0.8.5 server, driven by MONAI Label's own client.

One server serves the whole module (starting one costs ~20 s): the shipped demo weights for volumes and a small
checkpoint for 2D cell images. Tests run in file order; fine-tuning is last because it replaces the served model.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException
from PIL import Image

from medmrcnn.batch.model import DEMO_WEIGHTS
from medmrcnn.inference import PredictorConfig, SliceWisePredictor
from medmrcnn.io import load_volume, save_volume
from medmrcnn.modeling import build_model, read_checkpoint, save_checkpoint
from medmrcnn.synthetic import make_ct_phantom, make_microscopy_image
from tests.conftest import tiny_config
from tests.plugins.monailabel_server import RunningServer, start_server, train_and_wait
from tests.masks import dice

pytestmark = [pytest.mark.monailabel, pytest.mark.timeout(600)]

VOLUME = "medmrcnn_volume"
CELLS = "medmrcnn_cells"
INTERACTIVE = "medmrcnn_interactive"  # tested in test_interactive.py
# At the demo model's 1.4 mm pixels (no resampling), 4 mm slices: a small abdomen, kept small for CPU time.
PHANTOM = dict(shape=(8, 192, 192), spacing=(4.0, 1.4, 1.4), n_tumours=3, tumour_diameter_mm=(20.0, 30.0))
SMALL = dict(shape=(3, 160, 160), spacing=(4.0, 1.4, 1.4), n_tumours=1, tumour_diameter_mm=(20.0, 25.0))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Phantom NIfTI files (+ their truth), a microscopy PNG, a corrupt upload and a small cells checkpoint."""
    d = tmp_path_factory.mktemp("data")
    files: dict[str, Path] = {}
    for name, kw, seed in (("ct", PHANTOM, 11), ("small_a", SMALL, 12), ("small_b", SMALL, 13)):
        ph = make_ct_phantom(seed=seed, **kw)
        files[name] = save_volume(ph.volume, d / f"{name}.nii.gz")
        files[f"{name}_truth"] = save_volume(ph.volume.with_array(ph.class_map()), d / f"{name}_label.nii.gz")
        np.save(d / f"{name}_instances.npy", ph.gt_instances)
        (d / f"{name}_classes.json").write_text(json.dumps(ph.gt_classes))
    cells = make_microscopy_image(shape=(96, 96), n_nuclei=8, seed=5)
    Image.fromarray(cells.volume.array[0]).save(d / "cells.png")
    files["cells"] = d / "cells.png"
    files["corrupt"] = d / "corrupt.nii.gz"
    files["corrupt"].write_bytes(b"\x1f\x8b" + b"this is no NIfTI" * 20)
    cfg = tiny_config(labels=("nucleus",))
    files["cells_weights"] = save_checkpoint(d / "cells.safetensors", build_model(cfg), cfg)
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Path]):
    """The real server with our app, stopped by its PID at the end of the module."""
    base = tmp_path_factory.mktemp("server")
    # strategy_max_images 2: each active-learning request scores at most two new images (bounds the test's time).
    conf = {"model_dir": str(base / "model"), "cells_weights": str(data["cells_weights"]), "device": "cpu",
            "strategy_max_images": "2"}
    srv = start_server(base / "studies", base / "server.log", conf)
    srv.model_dir = base / "model"  # type: ignore[attr-defined]
    yield srv
    srv.stop()
    assert not srv.alive()


@pytest.fixture
def client(server: RunningServer, tmp_path: Path) -> MONAILabelClient:
    return MONAILabelClient(server.url, tmpdir=str(tmp_path))


def library_result(path: Path, weights: Path = DEMO_WEIGHTS, **cfg):
    """What medmrcnn itself predicts for a file (the plugin must return exactly this)."""
    return SliceWisePredictor.from_checkpoint(weights, PredictorConfig(**cfg), device="cpu").predict(load_volume(path))


@pytest.fixture(scope="module")
def ct_reference(data: dict[str, Path]):
    """The library's prediction for the main phantom (class and instance maps, instance table)."""
    return library_result(data["ct"])


def test_info_lists_models_labels_trainers_and_strategy(client: MONAILabelClient) -> None:
    info = client.info()
    assert info["name"] == "medmrcnn"
    assert set(info["models"]) == {VOLUME, CELLS, INTERACTIVE}
    assert info["models"][VOLUME]["labels"] == {"liver": 1, "kidney": 2, "tumour": 3}
    assert info["models"][VOLUME]["dimension"] == 3
    assert info["models"][CELLS]["labels"] == {"nucleus": 1} and info["models"][CELLS]["dimension"] == 2
    assert info["labels"] == ["liver", "kidney", "tumour", "nucleus"]
    assert set(info["trainers"]) == {VOLUME, CELLS}
    assert "lowest_confidence" in info["strategies"]


def test_infer_returns_label_on_image_grid_matching_phantom_and_library(
    client: MONAILabelClient, data: dict[str, Path], ct_reference
) -> None:
    assert client.upload_image(str(data["ct"]), image_id="ct")["image"] == "ct"
    label_file, result = client.infer(VOLUME, "ct", {})

    # Geometry: the label is on the image's grid, checked with two independent readers.
    image, label = nib.load(data["ct"]), nib.load(label_file)
    assert label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-4)
    si, sl = sitk.ReadImage(str(data["ct"])), sitk.ReadImage(label_file)
    assert si.GetSize() == sl.GetSize()
    assert np.allclose(si.GetOrigin(), sl.GetOrigin(), atol=1e-4)
    assert np.allclose(si.GetSpacing(), sl.GetSpacing(), atol=1e-5)
    assert np.allclose(si.GetDirection(), sl.GetDirection(), atol=1e-6)
    served = sitk.GetArrayFromImage(sl)  # (z, y, x) like medmrcnn

    # Thin: exactly what the library predicts, and the JSON carries its per-instance table and label names.
    ref = ct_reference
    assert (served == ref.class_map).all()
    assert result["label_names"] == {"liver": 1, "kidney": 2, "tumour": 3}
    assert [r["class_name"] for r in result["instances"]] == [r.class_name for r in ref.instances]
    for got, want in zip(result["instances"], ref.instances, strict=True):
        assert got["volume_ml"] == pytest.approx(want.volume_ml) and got["bbox"] == list(want.bbox)
        assert got["label_value"] == want.class_id
        assert {"score_max", "score_mean", "centroid_mm", "longest_diameter_mm"} <= set(got)

    # And it finds the phantom's organs and tumours.
    truth = nib.load(data["ct_truth"]).get_fdata().astype(int).transpose(2, 1, 0)
    for cls, name, floor in ((1, "liver", 0.75), (2, "kidney", 0.75), (3, "tumour", 0.6)):
        assert dice(served == cls, truth == cls) > floor, f"{name}: Dice {dice(served == cls, truth == cls):.2f}"


def test_instance_label_on_request(client: MONAILabelClient, data: dict[str, Path], ct_reference) -> None:
    label_file, result = client.infer(VOLUME, "ct", {"label_type": "instance", "result_extension": ".nrrd"})
    assert label_file.endswith(".nrrd")
    served = sitk.GetArrayFromImage(sitk.ReadImage(label_file))
    ref = ct_reference
    assert (served == ref.instance_map).all()
    assert result["label_type"] == "instance"
    assert result["label_names"] == {f"{r.class_name} {r.id}": r.id for r in ref.instances}
    assert [r["label_value"] for r in result["instances"]] == [r.id for r in ref.instances]

    # Every phantom instance (liver, each kidney, each tumour) is one served instance of its class.
    gt = np.load(data["ct"].with_name("ct_instances.npy"))
    classes = {int(k): v for k, v in json.loads(data["ct"].with_name("ct_classes.json").read_text()).items()}
    class_of = {r["label_value"]: r["class_id"] for r in result["instances"]}
    matched = set()
    for inst, cls in classes.items():
        truth = gt == inst
        if truth.sum() < 200:  # slivers of a few voxels are not a fair test of a 2D detector
            continue
        ids, counts = np.unique(served[truth], return_counts=True)
        best = int(max(((c, i) for i, c in zip(ids, counts, strict=True) if i != 0), default=(0, 0))[1])
        assert best != 0, f"phantom instance {inst} (class {cls}) not found"
        assert class_of[best] == cls, f"phantom instance {inst}: class {class_of[best]} instead of {cls}"
        assert dice(served == best, truth) > 0.5, f"phantom instance {inst}: Dice {dice(served == best, truth):.2f}"
        assert best not in matched, f"phantom instances merged into served instance {best}"
        matched.add(best)


def test_cells_model_segments_2d_images(client: MONAILabelClient, data: dict[str, Path]) -> None:
    client.upload_image(str(data["cells"]), image_id="cells")
    label_file, result = client.infer(CELLS, "cells", {"score_threshold": 0.05})
    served = sitk.GetArrayFromImage(sitk.ReadImage(label_file))
    ref = library_result(data["cells"], weights=data["cells_weights"], score_threshold=0.05)
    assert served.shape == load_volume(data["cells"]).shape == (1, 96, 96)
    assert (served == ref.class_map).all()
    assert result["image"]["shape"] == [1, 96, 96] and len(result["instances"]) == ref.num_instances
    # A 2D client also gets the per-cell table (µm) and the outlines, matching the label it received.
    assert ref.num_instances > 0
    rows = {row["id"]: row for row in result["cells"]}
    assert set(rows) == {rec["id"] for rec in result["instances"]}
    pixel_um = load_volume(data["cells"]).spacing[1] * 1000.0
    for cid, row in rows.items():
        assert row["pixels"] == int((ref.instance_map == cid).sum())
        assert row["area_um2"] == pytest.approx(row["pixels"] * pixel_um ** 2, rel=1e-3)
    features = result["contours"]["features"]
    assert result["contours"]["type"] == "FeatureCollection" and len(features) == len(rows)
    assert all(f["geometry"]["type"] == "Polygon" and len(f["geometry"]["coordinates"][0]) >= 4 for f in features)


def test_bad_requests_are_refused_uploads_checked_and_the_server_keeps_serving(
    client: MONAILabelClient, server: RunningServer, data: dict[str, Path]
) -> None:
    def status_of(call) -> int:
        with pytest.raises(MONAILabelClientException) as err:
            call()
        return int(err.value.msg.split("Status: ")[1].split(";")[0])

    assert status_of(lambda: client.infer(VOLUME, "no-such-image", {})) == 404
    # A path of the server's own files (here the test's truth file, which exists) is not a datastore image.
    assert status_of(lambda: client.infer(VOLUME, str(data["ct_truth"]), {})) == 404
    assert status_of(lambda: client.infer(VOLUME, "ct", {"allow_irregular": "maybe"})) == 400
    assert status_of(lambda: client.infer(VOLUME, "ct", {"series": 3})) == 422  # a NIfTI holds one series
    assert status_of(lambda: client.upload_image(str(data["corrupt"]), image_id="corrupt")) == 422
    assert "corrupt" not in client.datastore()["objects"]
    assert status_of(lambda: client.infer(VOLUME, "", {}, file=str(data["corrupt"]))) == 422
    assert status_of(lambda: client.infer(VOLUME, "ct", {"label_type": "contour"})) == 400
    assert status_of(lambda: client.infer(VOLUME, "ct", {"score_threshold": 7})) == 400
    assert status_of(lambda: client.save_label("no-such-image", str(data["ct_truth"]))) == 404
    # A label from another image (different grid) and a label with values the model does not know.
    assert status_of(lambda: client.save_label("ct", str(data["small_a_truth"]))) == 422
    assert status_of(lambda: client.save_label("ct", str(data["ct"]))) == 422
    assert "final" not in client.datastore()["objects"]["ct"]["labels"]

    assert server.alive()
    _, loaded = client.infer(VOLUME, "ct", {"series": 0, "allow_irregular": True})  # load options are accepted
    assert loaded["image"]["shape"]
    assert set(client.info()["models"]) == {VOLUME, CELLS, INTERACTIVE}
    label_file, _ = client.infer(CELLS, "cells", {})
    assert nib.load(label_file).shape[:2] == (96, 96)
    # A correct label (the phantom's truth on its grid) is kept as the image's final label.
    assert client.save_label("ct", str(data["ct_truth"]))["label"] == "ct"
    assert "final" in client.datastore()["objects"]["ct"]["labels"]


def test_ten_concurrent_infer_requests_all_return_correct_labels(
    server: RunningServer, data: dict[str, Path], tmp_path: Path
) -> None:
    names = ("small_a", "small_b")
    for name in names:
        MONAILabelClient(server.url, tmpdir=str(tmp_path)).upload_image(str(data[name]), image_id=name)
    results: dict[int, np.ndarray | BaseException] = {}

    def request(i: int) -> None:
        folder = tmp_path / f"r{i}"
        folder.mkdir()
        try:
            label_file, _ = MONAILabelClient(server.url, tmpdir=str(folder)).infer(VOLUME, names[i % 2], {})
            results[i] = sitk.GetArrayFromImage(sitk.ReadImage(label_file))
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=request, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    expected = {name: library_result(data[name]).class_map for name in names}  # while the server works
    for t in threads:
        t.join(timeout=300)
    assert all(e.any() for e in expected.values())
    assert len(results) == 10
    for i, got in results.items():
        assert not isinstance(got, BaseException), f"request {i}: {got}"
        assert (got == expected[names[i % 2]]).all(), f"request {i} returned another image's label"


def test_info_answers_within_a_second_while_two_clients_infer(
    server: RunningServer, data: dict[str, Path], tmp_path: Path
) -> None:
    # MONAI Label 0.8.5 runs /infer inside its event loop: /info/ used to wait for the whole inference. The app
    # re-registers the route so inference runs in a worker thread, one at a time (MONAI_LABEL_INFER_CONCURRENCY unset).
    # A longer study than the others, so that one inference takes seconds even on a fast CI machine.
    busy_ct = save_volume(make_ct_phantom(seed=21, **{**PHANTOM, "shape": (24, 192, 192)}).volume,
                          tmp_path / "busy.nii.gz")
    MONAILabelClient(server.url, tmpdir=str(tmp_path)).upload_image(str(busy_ct), image_id="busy")
    spans: dict[int, tuple[float, float, float]] = {}  # client -> (start, end, server-side inference seconds)

    def infer(i: int) -> None:
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        t0 = time.monotonic()
        _, result = MONAILabelClient(server.url, tmpdir=str(folder)).infer(VOLUME, "busy", {})
        spans[i] = (t0, time.monotonic(), result["latencies"]["total"])

    threads = [threading.Thread(target=infer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    info_latencies = []
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        with urllib.request.urlopen(f"{server.url}/info/", timeout=60) as r:
            assert r.status == 200
        info_latencies.append(time.monotonic() - t0)
        time.sleep(0.2)
    for t in threads:
        t.join()
    assert len(spans) == 2
    busy = max(end for _, end, _ in spans.values()) - min(start for start, _, _ in spans.values())
    # Meaningful: each inference took over a second (a blocked event loop would have held /info/ that long), and
    # /info/ was asked throughout.
    assert min(total for _, _, total in spans.values()) > 1.0, spans
    assert len(info_latencies) >= busy / 1.5, (busy, len(info_latencies))
    print(f"/info/ during {busy:.1f} s of inference: {len(info_latencies)} requests, median "
          f"{1000 * float(np.median(info_latencies)):.0f} ms, max {1000 * max(info_latencies):.0f} ms")
    assert max(info_latencies) < 1.0, f"/info/ took up to {max(info_latencies):.2f} s during {busy:.1f} s of inference"
    # One inference at a time: the two clients together waited at least both inferences' time.
    assert busy >= 0.9 * sum(total for _, _, total in spans.values())


def test_active_learning_picks_the_least_confident_unlabeled_image(
    client: MONAILabelClient, data: dict[str, Path]
) -> None:
    choice = client.next_sample("lowest_confidence", {})
    store = client.datastore()["objects"]
    scores = {k: v["image"]["info"]["medmrcnn_uncertainty"]["uncertainty"] for k, v in store.items()
              if "final" not in v["labels"] and "medmrcnn_uncertainty" in v["image"]["info"]}
    assert len(scores) == 2  # strategy_max_images
    assert choice["id"] == max(sorted(scores), key=scores.get)
    assert choice["uncertainty"] == pytest.approx(scores[choice["id"]])
    # The score is the library's: 1 - mean best score of the instances found at threshold 0.1.
    path = data["cells"] if choice["id"] == "cells" else data[choice["id"]]
    weights = data["cells_weights"] if choice["id"] == "cells" else DEMO_WEIGHTS
    ref = library_result(path, weights=weights, score_threshold=0.1)
    want = 1.0 - np.mean([r.score_max for r in ref.instances]) if ref.instances else 1.0
    assert choice["uncertainty"] == pytest.approx(want, abs=1e-6)


def test_saved_label_and_train_publish_a_checkpoint_the_next_infer_uses(
    client: MONAILabelClient, server: RunningServer, data: dict[str, Path]
) -> None:
    assert client.datastore()["objects"]["ct"]["labels"]["final"]  # saved by the bad-requests test
    train_and_wait(client, server, VOLUME)

    published = server.model_dir / f"{VOLUME}.safetensors"  # type: ignore[attr-defined]
    ckpt = read_checkpoint(published)  # verified: readable and its SHA-256 matches
    assert ckpt.config.labels == ("liver", "kidney", "tumour")
    assert ckpt.extra["train_config"]["init"] == str(DEMO_WEIGHTS)
    assert ckpt.extra["step"] == 1
    demo = read_checkpoint(DEMO_WEIGHTS).state_dict
    assert any(not np.array_equal(ckpt.state_dict[k].numpy(), demo[k].numpy()) for k in demo)

    label_file, result = client.infer(VOLUME, "ct", {})
    assert result["checkpoint"] == {"path": str(published), "fine_tuned": True}
    assert nib.load(label_file).shape == nib.load(data["ct"]).shape
    assert client.info()["train_stats"][VOLUME]["epochs"] == 1
