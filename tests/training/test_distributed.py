"""DDP: `torchrun --nproc_per_node=2 -m medmrcnn train` on CPU (gloo) finishes and rank 0 alone writes."""

import json
import os
import subprocess
import sys

import torch
import yaml

from medmrcnn.modeling import read_checkpoint
from medmrcnn.training.state import load_state
from tests.training.conftest import micro_train_config


def test_two_process_gloo_run_writes_one_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = micro_train_config(out, epochs=1, steps_per_epoch=3, batch_size=1, threads=1, data__phantom__n_train=4,
                             data__phantom__n_val=1, device="cpu")
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "medmrcnn", "train", "--config", str(tmp_path / "ddp.yaml"), "--no-progress"],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "best.safetensors", "config.yaml", "data_report.json", "last.safetensors", "metrics.json", "tb", "train_state.pt"]
    assert len(list((out / "tb").iterdir())) == 1  # one event file: only rank 0 logs
    state = load_state(out / "train_state.pt")
    assert len(state["rng"]) == 2 and state["step"] == 3
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # each rank its own sampling stream
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 1 and "val" in metrics[0]
    ckpt = read_checkpoint(out / "last.safetensors")
    assert ckpt.extra["step"] == 3
    assert json.loads(proc.stdout[proc.stdout.index("{"):])["steps"] == 3  # printed once, by rank 0
