"""The MONAI bundle in configs/: `python -m monai.bundle run` gives what `medmrcnn infer` and the library give."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medmrcnn.batch.model import DEMO_WEIGHTS
from medmrcnn.inference import SliceWisePredictor
from medmrcnn.io import load_volume, save_volume
from medmrcnn.modeling import read_checkpoint
from medmrcnn.synthetic import make_ct_phantom
from tests.plugins.conftest import ROOT

pytestmark = pytest.mark.timeout(600)
CONFIGS = ROOT / "configs"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def study_files(output: Path) -> dict[str, Path]:
    """The files of the one study folder under a batch output."""
    (folder,) = [p for p in output.iterdir() if p.is_dir()]
    return {p.name: p for p in folder.iterdir()}


def test_metadata_describes_the_shipped_model() -> None:
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    assert {"intended_use", "network_data_format", "monai_version", "pytorch_version"} <= set(meta)
    labels = json.loads((CONFIGS / "labels.json").read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert {name: int(v) for v, name in channel_def.items()} == labels
    demo = read_checkpoint(DEMO_WEIGHTS).config
    assert [n for n, _ in sorted(labels.items(), key=lambda kv: kv[1]) if n != "background"] == list(demo.labels)
    for name in ("inference.json", "train.json"):
        text = (CONFIGS / name).read_text()
        targets = [v for v in _values(json.loads(text), "_target_")]
        assert targets and all(t.startswith("medmrcnn.") for t in targets), targets


def _values(node: object, key: str):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _values(v, key)


def test_inference_bundle_gives_the_outputs_of_medmrcnn_infer_and_the_library(tmp_path: Path) -> None:
    ph = make_ct_phantom(shape=(3, 192, 192), spacing=(4.0, 1.4, 1.4), n_tumours=1, tumour_diameter_mm=(20, 25),
                         seed=21)
    image = save_volume(ph.volume, tmp_path / "phantom.nii.gz")
    run("-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json"), "--input", str(image),
        "--output_dir", str(tmp_path / "bundle"), "--formats", "nifti,json,csv")
    run("-m", "medmrcnn", "infer", str(image), "-o", str(tmp_path / "cli"), "--formats", "nifti,json,csv", "--quiet")
    bundle, cli = study_files(tmp_path / "bundle"), study_files(tmp_path / "cli")
    assert set(bundle) == set(cli) >= {"labels.nii.gz", "instances.nii.gz", "report.json", "instances.csv"}

    ref = SliceWisePredictor.from_checkpoint(DEMO_WEIGHTS, device="cpu").predict(load_volume(image))
    for name, want in (("labels.nii.gz", ref.class_map), ("instances.nii.gz", ref.instance_map)):
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(bundle[name])))
        assert (got == want).all(), name
        assert (got == sitk.GetArrayFromImage(sitk.ReadImage(str(cli[name])))).all(), name
        assert np.allclose(nib.load(bundle[name]).affine, nib.load(image).affine, atol=1e-4)
    assert ref.num_instances > 0
    report_b, report_c = (json.loads(f["report.json"].read_text()) for f in (bundle, cli))
    assert report_b["instances"] == report_c["instances"] == [r.to_dict() for r in ref.instances]
    assert bundle["instances.csv"].read_text() == cli["instances.csv"].read_text()


def test_train_bundle_runs_medmrcnn_training(tmp_path: Path) -> None:
    run("-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json"),
        "--output_dir", str(tmp_path / "run"), "--overrides#max_steps", "1", "--overrides#epochs", "1",
        "--overrides#data", "%" + str(_write_data_override(tmp_path)))
    ckpt = read_checkpoint(tmp_path / "run" / "last.safetensors")
    assert ckpt.config.labels == ("liver", "kidney", "tumour")
    assert ckpt.extra["step"] == 1


def _write_data_override(tmp_path: Path) -> Path:
    """A data section of two tiny generated volumes, so that one training step stays cheap."""
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"source": "phantom", "phantom": {
        "kind": "ct", "n_train": 1, "n_val": 0, "seed": 7, "slices": [4, 4], "field_of_view_mm": [260, 260],
        "pixel_spacing_mm": [1.4, 1.4], "max_matrix": 256}}))
    return path
