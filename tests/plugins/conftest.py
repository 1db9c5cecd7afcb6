"""The plugin tests run in two environments.

`.venv-monailabel` (monailabel 0.8.5, pydicom 2, numpy 1) runs test_server.py, test_dicomweb.py and
test_app_units.py: a real MONAI Label server driven with MONAI Label's own client. The project venv runs
test_bundle.py and test_in_plugin_venv.py, which runs the plugin-venv files in that venv (so `make test` covers
everything).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "plugins" / "monailabel"
PLUGIN_VENV = ROOT / ".venv-monailabel"
PLUGIN_PYTHON = PLUGIN_VENV / "bin" / "python"
PLUGIN_VENV_FILES = ["test_server.py", "test_dicomweb.py", "test_app_units.py"]
MAIN_VENV_FILES = ["test_bundle.py", "test_in_plugin_venv.py"]

IN_PLUGIN_VENV = importlib.util.find_spec("monailabel") is not None
collect_ignore = MAIN_VENV_FILES if IN_PLUGIN_VENV else PLUGIN_VENV_FILES
