"""The app's `--conf` parsing and label-value mapping, without a server (plugin venv)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from medmrcnn.batch.model import DEMO_WEIGHTS
from medmrcnn.errors import LabelConfigError
from medmrcnn.labels import LabelMap
from tests.plugins.conftest import APP_DIR, ROOT
from tests.plugins.viewer_params import OHIF_PARAMS, SLICER_PARAMS

pytestmark = pytest.mark.monailabel

MODEL = LabelMap.from_names(["liver", "kidney", "tumour"])


@pytest.fixture(scope="module")
def settings_module():
    # MONAI Label imports the app with its folder on sys.path (as package-less `lib`); do the same.
    sys.path.insert(0, str(APP_DIR))
    try:
        yield importlib.import_module("lib.settings")
    finally:
        sys.path.remove(str(APP_DIR))


def test_defaults_serve_the_demo_weights_and_keep_model_label_ids(settings_module, tmp_path: Path) -> None:
    s = settings_module.PluginSettings.from_conf({"server_mode": "true"}, tmp_path)
    assert s.weights == DEMO_WEIGHTS and s.cells_weights is None
    assert s.model_dir == tmp_path.resolve() / "model"
    assert s.labels.for_model(MODEL) == {"liver": 1, "kidney": 2, "tumour": 3}
    assert (s.labels.lut(MODEL) == [0, 1, 2, 3]).all()


def test_conf_values_are_parsed_and_checked(settings_module, tmp_path: Path) -> None:
    s = settings_module.PluginSettings.from_conf(
        {"score_threshold": "0.7", "window": "ct:liver", "train_epochs": "3", "device": "cpu"}, tmp_path)
    assert (s.score_threshold, s.window, s.train_epochs, s.device) == (0.7, "ct:liver", 3, "cpu")
    with pytest.raises(ValueError, match=r"unknown --conf keys \['score_treshold'\]"):
        settings_module.PluginSettings.from_conf({"score_treshold": "0.7"}, tmp_path)
    with pytest.raises(ValueError, match="score_threshold must be in"):
        settings_module.PluginSettings.from_conf({"score_threshold": "1.5"}, tmp_path)
    with pytest.raises(ValueError, match="train_epochs"):
        settings_module.PluginSettings.from_conf({"train_epochs": "many"}, tmp_path)
    with pytest.raises(ValueError, match="unknown CT window"):
        settings_module.PluginSettings.from_conf({"window": "ct:abdomenn"}, tmp_path)
    with pytest.raises(ValueError, match="cells_weights .* file not found"):
        settings_module.PluginSettings.from_conf({"cells_weights": str(tmp_path / "none.safetensors")}, tmp_path)


def test_custom_label_values_map_both_ways(settings_module, tmp_path: Path) -> None:
    labels = settings_module.parse_labels('{"tumour": 1, "liver": 5}')
    assert labels.for_model(MODEL) == {"tumour": 1, "liver": 5}
    class_map = np.array([[0, 1, 2, 3]])
    out = labels.lut(MODEL)[class_map]
    assert out.tolist() == [[0, 5, 0, 1]]  # kidney is not returned
    assert labels.to_model(out, MODEL).tolist() == [[0, 1, 0, 3]]
    assert settings_module.parse_labels("liver, kidney").for_model(MODEL) == {"liver": 1, "kidney": 2}
    with pytest.raises(LabelConfigError, match="does not predict"):
        settings_module.parse_labels('{"spleen": 1}').for_model(MODEL)
    with pytest.raises(LabelConfigError, match="share a label value"):
        settings_module.parse_labels('{"liver": 1, "kidney": 1}')
    with pytest.raises(LabelConfigError, match="positive integer"):
        settings_module.parse_labels('{"liver": 0.5}')


def test_bundle_labels_file_is_accepted_and_matches_the_demo_model(settings_module) -> None:
    from medmrcnn.modeling import read_checkpoint

    labels = settings_module.parse_labels(str(ROOT / "configs" / "labels.json"))
    demo = LabelMap.from_names(read_checkpoint(DEMO_WEIGHTS).config.labels)
    assert labels.for_model(demo) == demo.to_dict()
    channel_def = json.loads((ROOT / "configs" / "metadata.json").read_text())["network_data_format"]["outputs"][
        "pred"]["channel_def"]
    assert {name: int(v) for v, name in channel_def.items() if name != "background"} == demo.to_dict()


@pytest.fixture(scope="module")
def infer_module(settings_module):
    sys.path.insert(0, str(APP_DIR))
    try:
        yield importlib.import_module("lib.infer")
    finally:
        sys.path.remove(str(APP_DIR))


@pytest.mark.parametrize("dicom", [False, True])
def test_viewer_requests_get_the_label_volume_they_read(infer_module, settings_module, tmp_path: Path,
                                                        dicom: bool) -> None:
    settings = settings_module.PluginSettings.from_conf({}, tmp_path)
    for params in (OHIF_PARAMS, SLICER_PARAMS):
        o = infer_module.InferOptions.from_request(params, settings, dicom_datastore=dicom)
        assert (o.result_format, o.extension, o.dtype, o.compress) == ("nifti", ".nrrd", "uint8", False)
    # Even with a DICOM-SEG default configured, a viewer asking for .nrrd gets .nrrd.
    seg_default = settings_module.PluginSettings.from_conf({"result_format": "dicom_seg"}, tmp_path)
    assert infer_module.InferOptions.from_request(OHIF_PARAMS, seg_default, dicom).extension == ".nrrd"


def test_dicom_seg_only_when_asked_or_by_default_on_dicomweb(infer_module, settings_module, tmp_path: Path) -> None:
    opts = infer_module.InferOptions.from_request
    settings = settings_module.PluginSettings.from_conf({}, tmp_path)
    assert opts({}, settings, dicom_datastore=True).result_format == "dicom_seg"
    assert opts({}, settings, dicom_datastore=False).extension == ".nii.gz"
    assert opts({"result_extension": ".dcm"}, settings, False).result_format == "dicom_seg"
    assert opts({"result_format": "dicom_seg"}, settings, False).extension == ".dcm"
    assert opts({"result_format": "nifti"}, settings, True).extension == ".nii.gz"
    nifti_default = settings_module.PluginSettings.from_conf({"result_format": "nifti"}, tmp_path)
    assert opts({}, nifti_default, dicom_datastore=True).result_format == "nifti"


@pytest.mark.parametrize(("params", "message"), [
    ({"result_format": "dicom_seg", "result_extension": ".nrrd"}, "conflicts with result_extension '.nrrd'"),
    ({"result_format": "nifti", "result_extension": ".dcm"}, "conflicts with result_extension .dcm"),
    ({"result_extension": ".png"}, "result_extension must be one of"),
    ({"result_format": "png"}, "result_format must be one of"),
    ({"result_dtype": "float32"}, "result_dtype must be one of"),
    ({"result_compress": "maybe"}, "result_compress must be true or false"),
    ({"restore_label_idx": "sometimes"}, "restore_label_idx must be true or false"),
    ({"label_type": "semantic"}, "label_type must be one of"),
])
def test_bad_or_conflicting_result_options_are_named(infer_module, settings_module, tmp_path: Path,
                                                     params: dict, message: str) -> None:
    settings = settings_module.PluginSettings.from_conf({}, tmp_path)
    with pytest.raises(ValueError, match=message):
        infer_module.InferOptions.from_request(params, settings, dicom_datastore=True)


def test_result_dtype_and_compression(infer_module, settings_module, tmp_path: Path) -> None:
    from medmrcnn.errors import ExportError

    settings = settings_module.PluginSettings.from_conf({}, tmp_path)
    opts = infer_module.InferOptions.from_request
    assert opts({"result_compress": "true"}, settings, False).compress is True
    assert opts({"result_compress": 0}, settings, False).compress is False
    small, big = np.array([0, 3]), np.array([0, 300])
    assert opts({}, settings, False).label_dtype(small) == np.uint8
    assert opts({}, settings, False).label_dtype(big) == np.uint16
    assert opts({"result_dtype": "uint16"}, settings, False).label_dtype(small) == np.uint16
    with pytest.raises(ExportError, match="uint8 cannot hold label value 300"):
        opts({"result_dtype": "uint8"}, settings, False).label_dtype(big)
