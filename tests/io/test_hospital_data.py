"""What hospital archives hold, on real files (pydicom, pydicom-data, nibabel test data) and series derived from them:
gantry tilt, a series over sibling folders, MONOCHROME1, NaN voxels, intensity presets, -o naming a file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medmrcnn.batch.discovery import discover_studies
from medmrcnn.errors import DataError
from medmrcnn.geometry import orthogonal_grid, reorientation_to
from medmrcnn.io import load_volume, save_volume, scan
from medmrcnn.transforms import check_intensity_fit, training_intensity
from medmrcnn.volume import Volume
from tests.io.crosscheck import PYDICOM_FILES, tilted_series

CT5N = PYDICOM_FILES / "dicomdirtests" / "98892001" / "CT5N"
CR1 = PYDICOM_FILES / "dicomdirtests" / "77654033" / "CR1" / "6154"


@pytest.fixture(scope="module")
def tilted(tmp_path_factory) -> Path:
    """The real CT5N series as acquired with a 15 degree gantry tilt."""
    out = tmp_path_factory.mktemp("tilted")
    tilted_series(CT5N, out, 15.0)
    return out


def test_tilted_ct_reports_the_distance_between_planes(tilted):
    (info,) = scan(tilted)
    assert info.spacing[0] == pytest.approx(2.5, abs=1e-4)  # not 2.5 / cos(15 deg) = 2.588
    v = load_volume(tilted)
    assert v.spacing[0] == pytest.approx(2.5, abs=1e-4)
    assert np.linalg.norm(v.affine[:3, 2]) == pytest.approx(2.5 / np.cos(np.radians(15)), abs=1e-3)


def test_tilted_ct_label_map_opens_in_simpleitk_and_nibabel_at_the_acquired_positions(tilted, tmp_path):
    v = load_volume(tilted)
    labels = v.with_array((v.array > 0).astype(np.uint8) + (v.array > 40).astype(np.uint8))
    path = save_volume(labels, tmp_path / "labels.nii.gz")
    image = sitk.ReadImage(str(path))  # raised "orthonormal direction cosines" before
    written = sitk.GetArrayFromImage(image)
    assert written.shape == orthogonal_grid(v.affine, v.shape)[1] and set(np.unique(written)) <= {0, 1, 2}
    # Each written voxel, placed by SimpleITK's own geometry, holds the label of the acquired voxel nearest to it
    # within its slice plane (nearest neighbour: at most half a pixel away); voxels no slice covers are 0.
    inverse = np.linalg.inv(v.affine)
    covered = 0
    for k, j, i in np.ndindex(*written.shape):
        point = image.TransformIndexToPhysicalPoint([i, j, k])
        x, y, z = (inverse @ [*point, 1.0])[:3]
        assert z == pytest.approx(k, abs=1e-4)  # same plane
        src = (k, int(np.floor(y + 0.5)), int(np.floor(x + 0.5)))
        if 0 <= src[1] < v.shape[1] and 0 <= src[2] < v.shape[2]:
            covered += 1
            assert written[k, j, i] == labels.array[src]
        else:
            assert written[k, j, i] == 0
    assert covered == labels.array.size
    # nibabel gives the same grid (RAS), and our reader reads it back unchanged.
    img = nib.load(str(path))
    back = load_volume(path)
    assert np.allclose(np.diag([-1, -1, 1, 1]) @ img.affine, back.affine, atol=1e-4)
    assert np.array_equal(back.array, written)


def test_series_spread_over_sibling_folders_is_assembled_whole(tmp_path):
    files = sorted(CT5N.iterdir())
    for i, f in enumerate(files):
        folder = tmp_path / "export" / ("DIR000" if i < 3 else "DIR001")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f.name)
    (study,) = discover_studies([tmp_path / "export"])
    assert study.error is None and study.info.shape == (5, 16, 16) and study.n_slices == 5
    assert study.source == tmp_path / "export"


def test_monochrome1_is_inverted_to_monochrome2(tmp_path):
    ds = pydicom.dcmread(CR1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    v = load_volume(CR1)
    top = (1 << int(ds.BitsStored)) - 1
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    assert np.allclose(v.array[0], (top - ds.pixel_array.astype(np.float64)) * slope + intercept, atol=1e-3)
    assert v.metadata["photometric_interpretation"] == "MONOCHROME2" and v.metadata["inverted_from"] == "MONOCHROME1"
    assert any("MONOCHROME1" in w for w in v.warnings)
    gdcm = sitk.GetArrayFromImage(sitk.ReadImage(str(CR1)))  # GDCM applies the same inversion
    assert np.allclose(gdcm.reshape(v.array.shape), v.array)


def test_nan_and_inf_voxels_are_replaced_with_a_note(tmp_path):
    source = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    img = nib.load(source)
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[10:12, 20:25, 5] = np.nan
    data[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "registered.nii.gz")
    v = load_volume(tmp_path / "registered.nii.gz")
    assert np.isfinite(v.array).all() and v.array.min() == np.nanmin(data[np.isfinite(data)])
    assert any("11 NaN / inf voxels" in w and "replaced by the smallest finite value" in w for w in v.warnings)
    data[:] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "empty.nii.gz")
    with pytest.raises(Exception, match="no finite voxel value"):
        load_volume(tmp_path / "empty.nii.gz")


def test_auto_intensity_is_resolved_at_training_time():
    assert training_intensity("auto", ["OT", "OT"]) == "percentile"  # NIfTI CT: the modality is unknown
    assert training_intensity("auto", ["CT"]) == "ct:soft_tissue"
    assert training_intensity("ct:liver", ["MR"]) == "ct:liver"
    with pytest.raises(DataError, match="several modalities"):
        training_intensity("auto", ["CT", "MR"])


def test_serving_refuses_or_warns_when_the_image_contradicts_the_preset():
    mr = load_volume(PYDICOM_FILES / "MR_small.dcm")
    with pytest.raises(DataError, match="modality MR given to a model trained with the CT window"):
        check_intensity_fit("ct:soft_tissue", mr)
    assert "forced with --intensity" in check_intensity_fit("ct:soft_tissue", mr, explicit=True)[0]
    assert check_intensity_fit("percentile", mr) == []
    ct = load_volume(PYDICOM_FILES / "CT_small.dcm")
    assert check_intensity_fit("ct:soft_tissue", ct) == []
    unknown = Volume(mr.array, mr.affine)  # an MR saved as NIfTI: modality unknown, values are not HU
    assert "do not look like Hounsfield units" in check_intensity_fit("ct:soft_tissue", unknown)[0]
    assert "does not record the intensity preset" in check_intensity_fit("auto", ct)[0]


def test_reorientation_round_trip_keeps_physical_positions():
    ct = load_volume(CT5N)
    sagittal = ct.affine[:, [2, 0, 1, 3]]  # the same voxels described as a sagittal stack
    array = np.ascontiguousarray(np.transpose(ct.array, (1, 2, 0)))  # (z, y, x) <- columns permuted
    r = reorientation_to(sagittal, "LPS")
    assert np.array_equal(r.apply(array), ct.array) and np.allclose(r.affine(sagittal, array.shape), ct.affine)
    assert np.array_equal(r.undo(r.apply(array)), array)


def test_infer_output_naming_an_existing_file_is_a_usage_error(tmp_path):
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    done = subprocess.run([sys.executable, "-m", "medmrcnn", "infer", str(CT5N), "-o", str(existing)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "an existing file, not a folder" in lines[0]
    assert existing.read_text() == "keep me"


def test_absurd_resampling_is_refused_before_anything_is_allocated():
    from medmrcnn.inference import PredictorConfig, SliceWisePredictor
    from medmrcnn.modeling import build_model
    from tests.conftest import tiny_config

    cfg = tiny_config(pixel_spacing_mm=0.01, intensity="percentile")
    predictor = SliceWisePredictor(build_model(cfg).eval(), cfg, PredictorConfig())
    ct = load_volume(PYDICOM_FILES / "CT_small.dcm")  # 128 x 128 pixels of 0.66 mm -> 8467 x 8467 at 0.01 mm
    with pytest.raises(DataError, match=r"would be resampled to 8467x8467 for the model's 0.01 mm pixels"):
        predictor.predict(ct)


def test_model_trained_with_a_ct_window_refuses_an_mr_series():
    from medmrcnn.inference import PredictorConfig, SliceWisePredictor
    from medmrcnn.modeling import build_model
    from tests.conftest import tiny_config

    cfg = tiny_config(intensity="ct:soft_tissue")
    mr = load_volume(PYDICOM_FILES / "MR_small.dcm")
    with pytest.raises(DataError, match="modality MR given to a model trained with the CT window"):
        SliceWisePredictor(build_model(cfg).eval(), cfg, PredictorConfig()).predict(mr)
    forced = SliceWisePredictor(build_model(cfg).eval(), cfg, PredictorConfig(intensity="percentile")).predict(mr)
    assert forced.metadata["intensity"] == "percentile" and forced.metadata["intensity_warnings"] == []


def _derived(source: Path, out: Path, **changes) -> None:
    """Copies of a real series' files with attributes changed and new SOPInstanceUIDs."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(source.iterdir()):
        ds = pydicom.dcmread(f)
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(out / f"{f.name}_{'_'.join(f'{k}{v}' for k, v in changes.items() if k != 'ImageType')}")


def test_echoes_under_one_series_uid_are_split_and_each_segmented(tmp_path):
    _derived(CT5N, tmp_path / "mr", EchoNumbers=1)
    _derived(CT5N, tmp_path / "mr", EchoNumbers=2)
    infos = [i for i in scan(tmp_path / "mr") if i.is_image]
    assert sorted(i.subseries for i in infos) == ["echo 1", "echo 2"] and all(i.shape == (5, 16, 16) for i in infos)
    studies = discover_studies([tmp_path / "mr"])
    assert len(studies) == 2 and len({s.name for s in studies}) == 2 and all(s.error is None for s in studies)
    assert all("echo" in s.name for s in studies)
    from medmrcnn.batch.discovery import reload_series

    again = reload_series(studies[1].info)  # the batch re-reads a study's own files when its turn comes
    assert again.subseries == studies[1].info.subseries and again.shape == (5, 16, 16)


def test_localizer_among_axial_slices_is_split_off(tmp_path):
    shutil.copytree(CT5N, tmp_path / "ct")
    scout = pydicom.dcmread(sorted(CT5N.iterdir())[0])
    scout.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.save_as(tmp_path / "ct" / "scout")
    infos = sorted((i for i in scan(tmp_path / "ct") if i.is_image), key=lambda i: i.shape)
    assert [i.shape for i in infos] == [(1, 16, 16), (5, 16, 16)] and all(i.error is None for i in infos)
    assert infos[0].orientation == "PIR" and infos[1].orientation == "LPS"


def test_projection_image_outputs_are_written_and_the_seg_left_out_with_a_note(tmp_path):
    from medmrcnn.batch.outputs import write_outputs
    from medmrcnn.inference import PredictorConfig
    from medmrcnn.inference.assemble import assemble_result
    from medmrcnn.labels import LabelMap
    from medmrcnn.structures import SliceInstances

    cr = load_volume(CR1)  # a CR radiograph: no ImagePositionPatient
    found = np.zeros(cr.shape[1:], dtype=np.int32)
    found[4:10, 3:9] = 1
    slices = [SliceInstances.from_label_image(found, {1: 1}, {1: 0.9})]
    result = assemble_result(cr, slices, LabelMap(("lesion",)), PredictorConfig(min_voxels=1))
    assert result.num_instances == 1
    written, notes = write_outputs(result, cr, tmp_path, ("nifti", "seg", "json"))
    assert written == ["labels.nii.gz", "instances.nii.gz", "report.json"] and not (tmp_path / "seg.dcm").exists()
    assert any(n.startswith("no DICOM-SEG:") and "no patient position" in n for n in notes)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.nii.gz")))
    assert labels.reshape(found.shape).tolist() == (found > 0).astype(np.uint8).tolist()


def test_sagittal_stack_is_segmented_as_axial_slices_and_returned_on_its_own_grid():
    from medmrcnn.inference import PredictorConfig, SliceWisePredictor
    from medmrcnn.modeling import build_model
    from tests.conftest import tiny_config

    import torch

    cfg = tiny_config(intensity="ct:soft_tissue")
    torch.manual_seed(0)
    predictor = SliceWisePredictor(build_model(cfg).eval(), cfg, PredictorConfig(
        score_threshold=0.0, min_voxels=1, batch_size=2, skip_empty_slices=False))
    axial = load_volume(CT5N)
    # The same voxels stored as a sagittal stack: array axes (x, z, y) -> slices along x ("PIL"-like layouts).
    sagittal = Volume(np.ascontiguousarray(np.transpose(axial.array, (2, 0, 1))), axial.affine[:, [1, 2, 0, 3]],
                      modality="CT")
    assert sagittal.shape == (16, 5, 16)
    want, got = predictor.predict(axial), predictor.predict(sagittal)
    assert want.num_instances > 0
    assert got.metadata["reoriented"].endswith("-> LPS") and "reoriented" not in want.metadata
    assert got.instance_map.shape == sagittal.shape and got.volume is sagittal
    assert np.array_equal(got.class_map, np.transpose(want.class_map, (2, 0, 1)))
    assert np.array_equal(got.instance_map, np.transpose(want.instance_map, (2, 0, 1)))
    for a, b in zip(want.instances, got.instances, strict=True):
        assert np.allclose(a.centroid_mm, b.centroid_mm) and a.voxel_count == b.voxel_count
        assert b.bbox == (a.bbox[2], a.bbox[0], a.bbox[1], a.bbox[5], a.bbox[3], a.bbox[4])


def test_checkpoint_of_an_auto_intensity_training_records_the_concrete_preset(tmp_path):
    from medmrcnn.modeling import read_checkpoint
    from medmrcnn.training import train
    from tests.training.conftest import micro_train_config

    cfg = micro_train_config(tmp_path / "run", steps_per_epoch=1, data__phantom__n_train=2)
    assert cfg.model.intensity == "auto"
    result = train(cfg, progress=False)
    assert read_checkpoint(result.last).config.intensity == "percentile"  # microscopy phantoms: not CT
    assert "intensity: percentile" in (tmp_path / "run" / "config.yaml").read_text()
