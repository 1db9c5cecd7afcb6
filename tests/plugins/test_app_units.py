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
