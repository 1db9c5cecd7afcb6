"""Run the MONAI Label tests inside .venv-monailabel (they need monailabel 0.8.5, pydicom 2 and numpy 1)."""

from __future__ import annotations

import pytest

from tests.plugins.conftest import PLUGIN_PYTHON, PLUGIN_VENV, PluginSuite

pytestmark = pytest.mark.monailabel


@pytest.mark.skipif(not PLUGIN_PYTHON.exists(),
                    reason=f"{PLUGIN_VENV.name} is missing: build it with `make {PLUGIN_VENV.name}/.installed`")
def test_plugin_suite_passes_in_plugin_venv(plugin_suite: PluginSuite) -> None:
    results = plugin_suite.results()
    for _, output in results:
        print(output[-4000:])
    failed = [output[-8000:] for code, output in results if code != 0]
    assert not failed, f"plugin suite failed in {PLUGIN_VENV.name}:\n" + "\n".join(failed)
