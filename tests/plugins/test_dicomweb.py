"""The plugin on a DICOMweb archive (a real Orthanc with its DICOMweb plugin): DICOM-SEG results and stored labels
written by medmrcnn's exporter, read back from the archive."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import SimpleITK as sitk
from dicomweb_client import DICOMwebClient
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from medmrcnn.batch.model import DEMO_WEIGHTS
from medmrcnn.dicomseg import read_seg
from medmrcnn.inference import SliceWisePredictor
from medmrcnn.io import load_volume, save_volume
from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from tests.dicomseg.seg_tools import assert_dciodvfy_clean
from tests.plugins.monailabel_server import start_server
from tests.plugins.orthanc import HAVE_ORTHANC, MISSING_ORTHANC, running_orthanc, store
from tests.plugins.viewer_params import OHIF_PARAMS, SLICER_PARAMS

pytestmark = [
    pytest.mark.monailabel,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not HAVE_ORTHANC, reason=MISSING_ORTHANC),
]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    """A local Orthanc answering DICOMweb on 127.0.0.1 only."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield url


@pytest.fixture(scope="module")
def study(orthanc: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A phantom CT series stored in the archive, and its truth on the DICOM grid."""
    base = tmp_path_factory.mktemp("study")
    ph = make_ct_phantom(shape=(4, 160, 160), spacing=(4.0, 1.4, 1.4), n_tumours=1, tumour_diameter_mm=(20, 25),
                         seed=31)
    store(orthanc, write_dicom_series(ph.volume, base / "ct"))
    volume = load_volume(base / "ct")
    truth = save_volume(volume.with_array(ph.class_map()), base / "truth.nii.gz")
    return {"dir": base / "ct", "series_uid": volume.series_uid, "truth": truth, "class_map": ph.class_map()}


@pytest.fixture(scope="module")
def server(orthanc: str, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("server")
    os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"] = str(base / "cache")
    try:
        srv = start_server(f"{orthanc}/dicom-web", base / "server.log",  # type: ignore[arg-type]
                           {"model_dir": str(base / "model"), "device": "cpu"})
    finally:
        del os.environ["MONAI_LABEL_DICOMWEB_CACHE_PATH"]
    yield srv
    srv.stop()


def test_infer_on_a_dicomweb_series_returns_our_dicom_seg(server, study: dict, tmp_path: Path) -> None:
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    seg_file, result = client.infer("medmrcnn_volume", study["series_uid"], {})
    assert result["result_format"] == "dicom_seg" and seg_file.endswith(".dcm")
    ds = pydicom.dcmread(seg_file)
    assert ds.Modality == "SEG"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == study["series_uid"]
    assert_dciodvfy_clean(Path(seg_file))
    reference = load_volume(study["dir"])
    ref = SliceWisePredictor.from_checkpoint(DEMO_WEIGHTS, device="cpu").predict(reference)
    imported = read_seg(seg_file, reference=reference)
    names = {i + 1: n for i, n in enumerate(imported.labels.names)}
    got = np.vectorize(lambda v: ref.labels.id_of(names[v]) if v else 0)(imported.class_map.array)
    assert (got == ref.class_map).all()


@pytest.fixture(scope="module")
def reference(study: dict):
    """The library's prediction on the DICOM series and the series' grid as ITK (3D Slicer's reader) sees it."""
    ref = SliceWisePredictor.from_checkpoint(DEMO_WEIGHTS, device="cpu").predict(load_volume(study["dir"]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(study["dir"])))
    return ref, reader.Execute()


def infer_like_ohif(server, series_uid: str, params: dict) -> requests.Response:
    """The request OHIF's MONAI Label panel sends: multipart `params`, `output=image`, the file as the body."""
    return requests.post(f"{server.url}/infer/medmrcnn_volume", params={"image": series_uid, "output": "image"},
                         files={"params": (None, json.dumps(params))}, timeout=300)


def parse_nrrd_like_ohif(body: bytes) -> tuple[dict[str, str], bytes]:
    """Header fields and the raw data after the blank line (OHIF takes these bytes as its Uint8Array)."""
    head, _, data = body.partition(b"\n\n")
    assert head.startswith(b"NRRD")
    fields = dict(line.split(": ", 1) for line in head.decode().splitlines()[1:] if ": " in line)
    return fields, data


def test_ohif_request_gets_a_raw_uint8_nrrd_in_the_viewers_voxel_order(server, study: dict, reference) -> None:
    ref, grid = reference
    r = infer_like_ohif(server, study["series_uid"], dict(OHIF_PARAMS))
    assert r.status_code == 200, r.text[:500]
    fields, data = parse_nrrd_like_ohif(r.content)
    assert fields["type"] in ("uint8", "unsigned char") and fields["encoding"] == "raw"
    assert [int(v) for v in fields["sizes"].split()] == list(grid.GetSize())
    # OHIF ignores the header's geometry: the bytes must already be in the series' (ITK) voxel order.
    served = np.frombuffer(data, dtype=np.uint8).reshape(ref.class_map.shape)
    assert (served == ref.class_map).all() and set(np.unique(served)) >= {1, 3}


def test_ohif_compressed_and_uint16_variants_and_output_dicom_seg(server, study: dict, reference,
                                                                 tmp_path: Path) -> None:
    ref, _ = reference
    fields, data = parse_nrrd_like_ohif(infer_like_ohif(
        server, study["series_uid"], {**OHIF_PARAMS, "result_compress": True, "result_dtype": "uint16"}).content)
    assert fields["encoding"] == "gzip" and fields["type"] in ("uint16", "unsigned short")
    # output=dicom_seg: our own DICOM-SEG (MONAI Label's conversion would need dcmqi and label_info).
    r = requests.post(f"{server.url}/infer/medmrcnn_volume",
                      params={"image": study["series_uid"], "output": "dicom_seg"},
                      files={"params": (None, "{}")}, timeout=300)
    assert r.status_code == 200, r.text[:500]
    (tmp_path / "seg.dcm").write_bytes(r.content)
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == study["series_uid"]
    conflict = infer_like_ohif(server, study["series_uid"], {**OHIF_PARAMS, "result_format": "dicom_seg"})
    assert conflict.status_code == 400 and "conflicts with result_extension" in conflict.text


def test_slicer_request_gets_a_uint8_nrrd_on_the_series_grid(server, study: dict, reference,
                                                            tmp_path: Path) -> None:
    ref, grid = reference
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    label_file, result = client.infer("medmrcnn_volume", study["series_uid"], dict(SLICER_PARAMS))
    assert label_file.endswith(".nrrd") and result["result_format"] == "nifti"
    label = sitk.ReadImage(label_file)  # 3D Slicer reads the result with SimpleITK
    assert label.GetPixelID() == sitk.sitkUInt8
    assert label.GetSize() == grid.GetSize()
    assert np.allclose(label.GetOrigin(), grid.GetOrigin(), atol=1e-3)
    assert np.allclose(label.GetSpacing(), grid.GetSpacing(), atol=1e-4)
    assert np.allclose(label.GetDirection(), grid.GetDirection(), atol=1e-6)
    assert (sitk.GetArrayFromImage(label) == ref.class_map).all()
    # Slicer names segments by `label_names` sorted by value.
    assert result["label_names"] == {"liver": 1, "kidney": 2, "tumour": 3}


def test_final_label_is_stored_in_the_archive_as_dicom_seg(server, orthanc: str, study: dict, tmp_path: Path) -> None:
    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    with pytest.raises(MONAILabelClientException, match="Status: 422"):
        client.save_label(study["series_uid"], str(study["dir"] / os.listdir(study["dir"])[0]))
    edited = "original" in client.datastore()["objects"][study["series_uid"]]["labels"]  # our prediction was saved
    client.save_label(study["series_uid"], str(study["truth"]))

    web = DICOMwebClient(f"{orthanc}/dicom-web")
    segs = web.search_for_series(search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    seg = pydicom.Dataset.from_json(segs[0])
    (instance,) = web.retrieve_series(str(seg.StudyInstanceUID), str(seg.SeriesInstanceUID))
    instance.save_as(tmp_path / "stored.dcm")
    assert instance.ReferencedSeriesSequence[0].SeriesInstanceUID == study["series_uid"]
    algorithm = {s.SegmentAlgorithmType for s in instance.SegmentSequence}
    assert algorithm == {"SEMIAUTOMATIC" if edited else "MANUAL"}
    imported = read_seg(tmp_path / "stored.dcm", reference=load_volume(study["dir"]))
    order = {i + 1: ("liver", "kidney", "tumour").index(n) + 1 for i, n in enumerate(imported.labels.names)}
    got = np.vectorize(lambda v: order[v] if v else 0)(imported.class_map.array)
    assert (got == study["class_map"]).all()


def test_viewer_files_in_sub_folders_are_served(server) -> None:
    # MONAI Label 0.8.5 answers every nested OHIF file with index.html; the app's route fix serves the file.
    r = requests.get(f"{server.url}/ohif/assets/images/CT-AAA.png", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    page = requests.get(f"{server.url}/ohif/monai-label?StudyInstanceUIDs=1.2.3", timeout=30)
    assert page.status_code == 200 and page.text.lstrip().lower().startswith("<!doctype html")
    assert requests.get(f"{server.url}/ohif/..%2F..%2F..%2Fconfig.py", timeout=30).text == page.text
