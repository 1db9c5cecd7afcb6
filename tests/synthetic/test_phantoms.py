import numpy as np
import pydicom
import SimpleITK as sitk

from medmrcnn.synthetic import CT_LABELS, make_ct_phantom, make_microscopy_image
from medmrcnn.synthetic.dicom_series import write_dicom_series


def test_ct_phantom_is_seeded_and_has_realistic_content():
    a = make_ct_phantom(shape=(40, 128, 128), spacing=(2.5, 2.8, 2.8), seed=5)
    b = make_ct_phantom(shape=(40, 128, 128), spacing=(2.5, 2.8, 2.8), seed=5)
    assert np.array_equal(a.volume.array, b.volume.array) and np.array_equal(a.gt_instances, b.gt_instances)
    v = a.volume
    assert v.array.dtype == np.int16 and v.modality == "CT"
    assert v.array.min() <= -950 and 400 <= np.percentile(v.array, 99.99) <= 800  # air .. bone
    classes = np.array(list(a.gt_classes.values()))
    assert (classes == CT_LABELS.id_of("liver")).sum() == 1
    assert (classes == CT_LABELS.id_of("kidney")).sum() == 2
    assert (classes == CT_LABELS.id_of("tumour")).sum() >= 3
    liver = a.gt_instances == 1
    assert abs(float(v.array[liver].mean()) - 60) < 10
    for inst, cls in a.gt_classes.items():
        if cls == CT_LABELS.id_of("tumour"):
            n = (a.gt_instances == inst).sum()
            diameter = 2 * (3 * n * v.voxel_volume_ml * 1000 / (4 * np.pi)) ** (1 / 3)
            assert 4 <= diameter <= 50, diameter
    assert set(np.unique(a.class_map())) <= {0, 1, 2, 3}


def test_microscopy_has_touching_nuclei():
    ph = make_microscopy_image(shape=(128, 128), n_nuclei=25, seed=1)
    lab = ph.gt_instances[0]
    assert ph.volume.shape == (1, 128, 128) and ph.volume.array.dtype == np.uint16
    assert len(ph.gt_classes) >= 15
    # touching: some nucleus pixel has a 4-neighbour of another nucleus
    right = (lab[:, :-1] > 0) & (lab[:, 1:] > 0) & (lab[:, :-1] != lab[:, 1:])
    assert right.any()
    fg = ph.volume.array[0][lab > 0].mean()
    bg = ph.volume.array[0][lab == 0].mean()
    assert fg > 3 * bg


def test_dicom_series_geometry_matches_simpleitk(tmp_path):
    ph = make_ct_phantom(shape=(12, 64, 80), spacing=(2.5, 0.7, 0.7), seed=2)
    paths = write_dicom_series(ph.volume, tmp_path, shuffle_names=True)
    assert len(paths) == 12
    ds = pydicom.dcmread(paths[0])
    assert ds.Modality == "CT" and ds.RescaleIntercept == -1024 and ds.SOPClassUID.name == "CT Image Storage"
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(tmp_path))
    reader.SetFileNames(files)
    img = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(img), ph.volume.array)
    assert np.allclose(img.GetSpacing(), ph.volume.spacing_xyz, atol=1e-4)
    assert np.allclose(img.GetOrigin(), ph.volume.origin, atol=1e-4)
    assert np.allclose(np.array(img.GetDirection()).reshape(3, 3), ph.volume.direction, atol=1e-6)
