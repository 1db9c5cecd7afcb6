import numpy as np
import pytest

from medmrcnn.transforms import normalise_volume, parse_ct_window, resolve_intensity, slice_with_context, window
from medmrcnn.volume import Volume


def test_ct_window_maps_hu_to_unit_range():
    hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.int16)
    assert np.allclose(window(hu, 40, 400), [0, 0, 0.5, 1, 1])
    assert parse_ct_window("ct:lung") == (-600.0, 1500.0)
    assert parse_ct_window("ct:60,200") == (60.0, 200.0)
    with pytest.raises(ValueError, match="unknown CT window"):
        parse_ct_window("ct:spleen")


def test_auto_preset_depends_on_modality():
    ct = Volume(np.full((2, 4, 4), 40, np.int16), modality="CT")
    assert resolve_intensity("auto", "CT") == "ct:soft_tissue" and resolve_intensity("auto", "MR") == "percentile"
    assert np.allclose(normalise_volume(ct), 0.5) and normalise_volume(ct).dtype == np.float32
    mr = Volume(np.arange(100, dtype=np.float32).reshape(1, 10, 10), modality="MR")
    out = normalise_volume(mr)
    assert out.min() == 0 and out.max() == 1
    with pytest.raises(ValueError, match="unknown intensity"):
        resolve_intensity("zscore", "MR")


def test_context_stack_replicates_edges():
    a = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    assert slice_with_context(a, 0, 2)[:, 0, 0].tolist() == [0, 0, 0, 1, 2]
    assert slice_with_context(a, 3, 1)[:, 0, 0].tolist() == [2, 3, 3]
    assert slice_with_context(a, 2, 0).shape == (1, 2, 2)
