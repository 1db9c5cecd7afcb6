"""Run the MONAI Label tests inside .venv-monailabel (they need monailabel 0.8.5, pydicom 2 and numpy 1)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.plugins.conftest import PLUGIN_PYTHON, PLUGIN_VENV, PLUGIN_VENV_FILES, ROOT

pytestmark = pytest.mark.monailabel


@pytest.mark.skipif(not PLUGIN_PYTHON.exists(),
                    reason=f"{PLUGIN_VENV.name} is missing: build it with `make {PLUGIN_VENV.name}/.installed`")
def test_plugin_suite_passes_in_plugin_venv() -> None:
    files = [f"tests/plugins/{f}" for f in PLUGIN_VENV_FILES]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.run([str(PLUGIN_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    print(run.stdout[-6000:])
    assert run.returncode == 0, (
        f"plugin suite failed in {PLUGIN_VENV.name}:\n{run.stdout[-8000:]}\n{run.stderr[-3000:]}")
