"""Training configs: YAML round trip, typos rejected, relative paths resolved, shipped configs valid."""

from pathlib import Path

import pytest
import yaml

from medmrcnn.errors import DataError
from medmrcnn.training import TrainConfig, load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_round_trip_through_yaml(tmp_path):
    cfg = TrainConfig.from_dict({"model": {"labels": ["a", "b"], "backbone": "resnet18"}, "optim": {"lr": 0.01},
                                 "data": {"phantom": {"kind": "microscopy", "n_nuclei": [3, 5]}}})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    again = load_train_config(path)
    assert again.to_dict() == cfg.to_dict()
    assert again.data.phantom.n_nuclei == (3, 5)
    assert again.model.labels == ("a", "b")


@pytest.mark.parametrize("raw, word", [
    ({"optim": {"lrr": 1}}, "lrr"),
    ({"data": {"phantom": {"kinds": "ct"}}}, "kinds"),
    ({"epoch": 3}, "epoch"),
    ({"amp": "fp8"}, "amp"),
])
def test_invalid_configs_raise_one_line_data_error(tmp_path, raw, word):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=word) as e:
        load_train_config(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_relative_data_paths_resolve_against_the_yaml(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "datalist", "datalist": "../list.json"}}))
    assert load_train_config(path).data.datalist == str((tmp_path / "list.json").resolve())


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_train_config(CONFIGS / name)
    assert cfg.model.labels
