"""`medmrcnn export-model`: TorchScript and ONNX of the demo weights give PyTorch's detections and masks; onnxruntime
on the CPU runs the ONNX file without medmrcnn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="pip install 'medmrcnn[export]'")
ort = pytest.importorskip("onnxruntime", reason="pip install 'medmrcnn[export]'")

from medmrcnn.batch.model import DEMO_WEIGHTS  # noqa: E402 - after the optional imports are checked
from medmrcnn.cli import main  # noqa: E402
from medmrcnn.deploy.portable import SliceDetector, compare_with_pytorch, phantom_slices  # noqa: E402
from medmrcnn.modeling.checkpoint import load_model  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    assert main(["export-model", "-o", str(out)]) == 0  # exports, then checks both files against PyTorch
    return out


@pytest.fixture(scope="module")
def slices():
    model, cfg = load_model(DEMO_WEIGHTS)
    return SliceDetector(model), phantom_slices(cfg, n=3)


def test_onnx_on_onnxruntime_gives_pytorchs_detections_and_masks(exported, slices):
    detector, images = slices
    proto = onnx.load(str(exported / "model.onnx"))
    onnx.checker.check_model(proto)
    card = json.loads({p.key: p.value for p in proto.metadata_props}["medmrcnn"])
    assert card["labels"] == {"liver": 1, "kidney": 2, "tumour": 3}
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    found = 0
    for image in images:  # not the size the model was traced at: H and W are dynamic
        with torch.no_grad():
            boxes, labels, scores, masks = (t.numpy() for t in detector(torch.from_numpy(image)))
        o_boxes, o_labels, o_scores, o_masks = session.run(None, {"image": image.astype(np.float32)})
        assert o_masks.shape == masks.shape and masks.shape[2:] == image.shape[1:]
        np.testing.assert_array_equal(o_labels, labels)
        np.testing.assert_allclose(o_boxes, boxes, atol=1e-2)
        np.testing.assert_allclose(o_scores, scores, atol=1e-4)
        np.testing.assert_allclose(o_masks, masks, atol=1e-3)
        assert np.array_equal(o_masks > 0.5, masks > 0.5)
        found += len(scores)
    assert found >= 3  # the comparison is about real detections, not empty outputs


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_loads_without_medmrcnn_classes_and_matches(exported, slices):
    detector, images = slices
    files = {"medmrcnn.json": ""}
    module = torch.jit.load(str(exported / "model.pt"), _extra_files=files)
    assert json.loads(files["medmrcnn.json"])["preprocessing"]["intensity"] == "ct:soft_tissue"
    parity = compare_with_pytorch(DEMO_WEIGHTS, exported / "model.pt", images)
    assert parity.within(box_px=1e-3, score=1e-5, mask=1e-4), parity
    with torch.no_grad():
        assert len(module(torch.from_numpy(images[0]))) == 4


def test_model_card_and_bad_formats(exported, capsys):
    card = json.loads((exported / "model.json").read_text())
    assert card["files"] == {"torchscript": "model.pt", "onnx": "model.onnx"}
    assert card["inputs"]["image"]["shape"] == [1, "H", "W"]
    assert main(["export-model", "-o", str(exported / "x"), "--formats", "tflite"]) == 2
    assert "unknown export format" in capsys.readouterr().err
