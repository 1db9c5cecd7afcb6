"""z-stacks of cells linked slice by slice into 3D cells using the stack's physical z step (inference.linking).

Truth per slice is exact (each slice's cross-sections of the true cells), so these tests measure the linking alone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from medmrcnn.inference import CellShape, PredictorConfig, link_instances_across_slices
from medmrcnn.inference.assemble import paint_instances
from medmrcnn.structures import SliceInstances
from medmrcnn.training.metrics import match_cells

PIXEL_UM = 0.5


def sphere_stack(cells: list[tuple[float, float, float, float, float]], z_step_um: float, depth_um: float,
                 side_um: float = 40.0) -> np.ndarray:
    """Instance ids (z, y, x) of ellipsoids (cz, cy, cx, radius_xy, radius_z) in µm sampled at slice centres
    (k + 0.5) * z_step_um and PIXEL_UM pixels; where ellipsoids touch, a voxel goes to the one it lies deeper in."""
    z = (np.arange(int(round(depth_um / z_step_um))) + 0.5) * z_step_um
    yx = (np.arange(int(round(side_um / PIXEL_UM))) + 0.5) * PIXEL_UM
    zz, yy, xx = np.meshgrid(z, yx, yx, indexing="ij")
    depth = np.stack([((zz - cz) / rz) ** 2 + ((yy - cy) ** 2 + (xx - cx) ** 2) / rxy ** 2
                      for cz, cy, cx, rxy, rz in cells])
    labels = np.argmin(depth, axis=0) + 1
    labels[depth.min(axis=0) > 1.0] = 0
    return labels.astype(np.uint16)


def oracle_slices(labels: np.ndarray) -> list[SliceInstances]:
    """A perfect 2D segmentation of every slice (what the network would ideally find)."""
    return [SliceInstances.from_label_image(s, {int(i): 1 for i in np.unique(s) if i}) for s in labels]


def linked_scores(labels: np.ndarray, z_step_um: float, cells: bool) -> dict[str, float]:
    """TP / FP / FN at IoU 0.5 of the 3D cells linked from the oracle slices, plain (overlap + branches) or as cells."""
    slices = oracle_slices(labels)
    shape = CellShape((PIXEL_UM, PIXEL_UM)) if cells else None
    linked = link_instances_across_slices(slices, join_branches=not cells, slice_spacing_mm=z_step_um,
                                          cell_shape=shape)
    return match_cells(labels, paint_instances(slices, linked, labels.shape), (0.5,))[0.5]


# Two columns of three touching nuclei (10 µm across) stacked straight along z, and one nucleus on its own.
COLUMNS = [(5 + 10 * k, 12, 12, 5, 5) for k in range(3)] + [(5 + 10 * k, 12, 27, 5, 5) for k in range(3)] + [
    (12, 32, 20, 5, 5)]


@pytest.mark.parametrize("z_step_um", [2.5, 5.0])
def test_stacked_nuclei_come_out_one_by_one_at_a_coarse_z_step(z_step_um):
    labels = sphere_stack(COLUMNS, z_step_um, 30.0)
    plain = linked_scores(labels, z_step_um, cells=False)
    assert plain["tp"] <= 1 and plain["fn"] >= 6  # overlap linking merges each column into one object
    ours = linked_scores(labels, z_step_um, cells=True)
    assert (ours["tp"], ours["fp"], ours["fn"]) == (7, 0, 0)


def test_the_physical_z_step_decides_where_no_neck_is_sampled():
    # At a 5 µm z step each nucleus is cut twice at the same diameter: no neck shows between stacked nuclei, only
    # the column's height in µm (30 µm for 10 µm wide sections) says it holds three. Told an isotropic stack
    # (z step = pixel size), the same slices stay one tall object.
    labels = sphere_stack(COLUMNS, 5.0, 30.0)
    slices = oracle_slices(labels)
    wrong = link_instances_across_slices(slices, join_branches=False, slice_spacing_mm=PIXEL_UM,
                                         cell_shape=CellShape((PIXEL_UM, PIXEL_UM)))
    assert len(wrong) == 3


def test_an_elongated_nucleus_at_a_fine_z_step_stays_whole():
    cells = [(10, 20, 20, 4, 7), (10, 20, 30, 4, 4)]  # 1.75 times as tall as wide, beside a round one
    labels = sphere_stack(cells, 1.0, 20.0)
    ours = linked_scores(labels, 1.0, cells=True)
    assert (ours["tp"], ours["fp"], ours["fn"]) == (2, 0, 0)


def _stardist_nuclei_3d() -> np.ndarray:
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("synthetic 3D nuclei ship in the stardist wheel: pip install --no-deps stardist")
    import tifffile

    return tifffile.imread(Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / "mask3d.tif")


@pytest.mark.parametrize("every", [1, 2, 4])
def test_stardist_3d_nuclei_are_linked_as_cells_at_anisotropic_steps(every):
    """stardist's synthetic stack (51 densely packed nuclei; z step about twice the pixel size, from the nuclei's
    median extents of 7 slices vs 15 px), every `every`-th slice kept: up to 8 pixels per z step."""
    from skimage.segmentation import relabel_sequential

    labels = relabel_sequential(_stardist_nuclei_3d()[::every])[0]
    z_step = 2.0 * every * PIXEL_UM
    plain = linked_scores(labels, z_step, cells=False)
    ours = linked_scores(labels, z_step, cells=True)
    assert plain["fn"] >= 15  # touching nuclei merged through the slices where they meet
    assert ours["tp"] >= 47 and ours["fp"] <= 3 and ours["fn"] <= 4, ours


def test_microscopy_stacks_get_cell_linking_by_default(tmp_path):
    import tifffile

    from medmrcnn.inference.assemble import assemble_result
    from medmrcnn.io import load_volume
    from medmrcnn.labels import LabelMap

    labels = sphere_stack(COLUMNS, 2.5, 30.0)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, (labels > 0).astype(np.uint16) * 1000, imagej=True, resolution=(1 / PIXEL_UM, 1 / PIXEL_UM),
                     metadata={"axes": "ZYX", "spacing": 2.5, "unit": "um"})
    volume = load_volume(path)
    assert volume.metadata["pixel_size_um"] == pytest.approx([2.5, PIXEL_UM, PIXEL_UM])
    label_map = LabelMap(("nucleus",))
    found = {}
    for mode in (None, False):
        result = assemble_result(volume, oracle_slices(labels), label_map, PredictorConfig(cell_linking=mode))
        found[mode] = match_cells(labels, result.instance_map, (0.5,))[0.5]["tp"]
    assert found == {None: 7, False: 1}
