"""Resumable training state: one file, written atomically, read back with torch.load(weights_only=True).

`train_state.pt` holds the model weights, optimiser, scheduler, AMP scaler, position in the run (epoch, batch,
optimiser step), best score so far and every process's RNG state; all plain tensors, numbers, strings and
containers, so loading never unpickles arbitrary objects. The user-facing weights are the `.safetensors` files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmrcnn.errors import CheckpointError
from medmrcnn.fileio import atomic_path

STATE_FORMAT = "medmrcnn-train-state-1"


def capture_rng() -> dict[str, Any]:
    """This process's RNG states (torch CPU and CUDA, Python, NumPy global) as weights_only-loadable values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": json.dumps(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of capture_rng."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write the training state atomically: a kill at any moment leaves the previous file intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, **state}, tmp)
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state written by save_state (no arbitrary pickles); CheckpointError names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state to resume from (run without --resume first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError: all mean "not a state we wrote"
        raise CheckpointError(f"{path}: unreadable training state ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a medmrcnn training state")
    return state
