"""Run the MONAI Label tests inside .venv-monailabel (they need monailabel 0.8.5, pydicom 2 and numpy 1)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.plugins.conftest import PLUGIN_PYTHON, PLUGIN_VENV, PLUGIN_VENV_FILES, ROOT

pytestmark = pytest.mark.monailabel


@pytest.mark.skipif(not PLUGIN_PYTHON.exists(),
                    reason=f"{PLUGIN_VENV.name} is missing: build it with `make {PLUGIN_VENV.name}/.installed`")
def test_plugin_suite_passes_in_plugin_venv(tmp_path) -> None:
    # The server module and the others start their own servers and mostly wait on them: run them side by side.
    groups = [PLUGIN_VENV_FILES[:1], PLUGIN_VENV_FILES[1:]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    runs = []
    for i, files in enumerate(groups):
        log = open(tmp_path / f"group{i}.log", "w+")  # noqa: SIM115 - closed below
        cmd = [str(PLUGIN_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5",
               *(f"tests/plugins/{f}" for f in files)]
        runs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for proc, log in runs:
        try:
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
        log.seek(0)
        out = log.read()
        log.close()
        print(out[-4000:])
        if proc.returncode != 0:
            failed.append(out[-8000:])
    assert not failed, f"plugin suite failed in {PLUGIN_VENV.name}:\n" + "\n".join(failed)
