"""The plugin tests run in two environments.

`.venv-monailabel` (monailabel 0.8.5, pydicom 2, numpy 1) runs test_server.py, test_dicomweb.py,
test_app_units.py, test_interactive.py and test_ohif_browser.py: a real MONAI Label server driven with MONAI Label's
own client, and the OHIF viewer shipped in its wheel driven in headless Chromium (playwright; run alone with
`-m browser`). The project venv runs test_bundle.py and test_in_plugin_venv.py, which runs the plugin-venv files in
that venv (so `make test` covers everything). The plugin-venv run starts in the background with the first test of this folder, so the bundle tests
run while the MONAI Label servers start and work.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "plugins" / "monailabel"
PLUGIN_VENV = ROOT / ".venv-monailabel"
PLUGIN_PYTHON = PLUGIN_VENV / "bin" / "python"
# Run side by side (each starts its own server and mostly waits on it).
PLUGIN_VENV_GROUPS = [["test_server.py"],
                      ["test_dicomweb.py", "test_app_units.py", "test_interactive.py", "test_ohif_browser.py"]]
PLUGIN_VENV_FILES = [f for group in PLUGIN_VENV_GROUPS for f in group]
MAIN_VENV_FILES = ["test_bundle.py", "test_in_plugin_venv.py"]
DELEGATING_TEST = "test_plugin_suite_passes_in_plugin_venv"

IN_PLUGIN_VENV = importlib.util.find_spec("monailabel") is not None
collect_ignore = MAIN_VENV_FILES if IN_PLUGIN_VENV else PLUGIN_VENV_FILES


class PluginSuite:
    """The plugin-venv pytest runs, started in the background; `results()` waits for them."""

    def __init__(self, log_dir: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.runs: list[tuple[subprocess.Popen, IO[str]]] = []
        for i, files in enumerate(PLUGIN_VENV_GROUPS):
            log = open(log_dir / f"group{i}.log", "w+")  # noqa: SIM115 - closed in results()/stop()
            cmd = [str(PLUGIN_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5",
                   *(f"tests/plugins/{f}" for f in files)]
            self.runs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))

    def results(self, timeout: float = 900) -> list[tuple[int, str]]:
        """(exit code, output) of every group once finished."""
        out = []
        for proc, log in self.runs:
            proc.wait(timeout=timeout)
            log.seek(0)
            out.append((proc.returncode, log.read()))
        return out

    def stop(self) -> None:
        """Kill runs still going (an interrupted session) and close the logs."""
        for proc, log in self.runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
            log.close()


@pytest.fixture(scope="session")
def plugin_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginSuite]:
    suite = PluginSuite(tmp_path_factory.mktemp("plugin-venv"))
    yield suite
    suite.stop()


@pytest.fixture(autouse=True, scope="module")
def _start_plugin_suite_early(request: pytest.FixtureRequest) -> None:
    """In the project venv, start the plugin-venv run with this folder's first test if that run is selected."""
    if IN_PLUGIN_VENV or not PLUGIN_PYTHON.exists():
        return
    if any(item.name == DELEGATING_TEST for item in request.session.items):
        request.getfixturevalue("plugin_suite")
