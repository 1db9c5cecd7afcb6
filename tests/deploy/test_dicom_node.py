"""`medmrcnn serve-dicom` beside a real Orthanc (Debian package) as the PACS, with the demo weights on small phantoms.

The tests run in order on one Orthanc and one node storage: a study goes PACS -> node -> SEG + SR back into the PACS;
a non-image object and a corrupt instance are refused with a reason while another study goes through; the node is
SIGKILLed while segmenting and its results still arrive exactly once; the PACS is down while results are pending
and they arrive once it is back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from tests.cli.helpers import run_cli
from tests.deploy.servers import NODE_AET, ORTHANC_BIN, Node, Orthanc, http_error, wait_for
from tests.export.test_sr import assert_dciodvfy_has_no_errors
from tests.plugins.monailabel_server import free_port

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not Path(ORTHANC_BIN).exists() and not shutil.which("Orthanc"),
                       reason="Orthanc is not installed (apt-get install orthanc; the Makefile does it as root)"),
]
PATIENT_NAME, PATIENT_ID = "Secretname^Testpatient", "PID-7731-SECRET"
RESULT_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    base = tmp_path_factory.mktemp("pacs")
    pacs = Orthanc(base, free_port(), free_port(), free_port())
    pacs.start()
    yield pacs
    pacs.stop()


@pytest.fixture(scope="module")
def node(orthanc, tmp_path_factory):
    base = tmp_path_factory.mktemp("node")
    dicom_node = Node(base / "storage", orthanc.node_port, orthanc.dicom_port, base / "node.log")
    dicom_node.start()
    yield dicom_node
    dicom_node.stop()
    log = dicom_node.log.read_text()
    assert PATIENT_NAME.split("^")[0] not in log and PATIENT_ID not in log, "the node logged patient identifiers"


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studies")


def phantom_study(folder: Path, slices: int = 12) -> tuple[list[Path], str]:
    """A small CT phantom series the demo weights find organs and tumours in; (files, SeriesInstanceUID)."""
    ph = make_ct_phantom(shape=(slices, 96, 96), spacing=(48.0 / slices, 2.5, 2.5), n_tumours=2, seed=3)
    paths = write_dicom_series(ph.volume, folder, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    return paths, str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)


def wait_for_results(orthanc: Orthanc, series_uid: str) -> dict[str, list[pydicom.Dataset]]:
    """Wait until Orthanc holds a SEG and an SR referencing the series; then both lists."""
    return wait_for("a SEG and an SR in Orthanc", lambda: (r := orthanc.results_for(series_uid))["SEG"] and r["SR"]
                    and r, RESULT_TIMEOUT_S, every_s=1.0)


def check_results(results: dict[str, list[pydicom.Dataset]], series_uid: str, tmp_path: Path) -> None:
    """Exactly one SEG and one SR; both dciodvfy-clean; every SR measurement references a segment of that SEG."""
    assert len(results["SEG"]) == 1 and len(results["SR"]) == 1, {k: len(v) for k, v in results.items()}
    seg, sr = results["SEG"][0], results["SR"][0]
    for name, ds in (("seg.dcm", seg), ("sr.dcm", sr)):
        ds.save_as(tmp_path / name, enforce_file_format=True)
        assert_dciodvfy_has_no_errors(tmp_path / name)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    numbers = {int(s.SegmentNumber) for s in seg.SegmentSequence}
    refs = [item.ReferencedSOPSequence[0] for group in sr.ContentSequence if group.ValueType == "CONTAINER"
            for sub in group.get("ContentSequence", []) for item in sub.get("ContentSequence", [])
            if "ReferencedSOPSequence" in item and "ReferencedSegmentNumber" in item.ReferencedSOPSequence[0]]
    assert refs and all(r.ReferencedSOPInstanceUID == seg.SOPInstanceUID for r in refs)
    assert {int(r.ReferencedSegmentNumber) for r in refs} == numbers


def node_status(node: Node) -> dict:
    run = run_cli("serve-dicom", "status", "--storage", node.storage, "--json", timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_study_sent_by_the_pacs_comes_back_as_seg_and_sr(orthanc, node, studies, tmp_path):
    assert orthanc.rest("/modalities/medmrcnn/echo", {}) is not None  # C-ECHO: Orthanc -> node
    paths, series_uid = phantom_study(studies / "a")
    orthanc.send_to_node(orthanc.upload(paths))
    check_results(wait_for_results(orthanc, series_uid), series_uid, tmp_path)
    wait_for("the journal to say delivered", lambda: node.state(series_uid) == "delivered", 30)
    # Same weights and options as `medmrcnn infer --formats sr` give the same segments.
    infer = run_cli("infer", studies / "a", "-o", tmp_path / "infer", "--formats", "sr", "--device", "cpu", "--quiet")
    assert infer.returncode == 0, infer.stderr
    (mine,) = (tmp_path / "infer").glob("*/seg.dcm")
    theirs = orthanc.results_for(series_uid)["SEG"][0]
    ours = pydicom.dcmread(mine)
    assert [s.SegmentLabel for s in ours.SegmentSequence] == [s.SegmentLabel for s in theirs.SegmentSequence]
    assert ours.PixelData == theirs.PixelData
    status = node_status(node)
    assert status["running"] and status["counts"]["delivered"] == 1


def corrupt_instance(source: Path, out: Path) -> Path:
    """A CT instance of a new series whose pixel data holds half the bytes its header asks for."""
    ds = pydicom.dcmread(source)
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(out, enforce_file_format=True)
    return out


def test_non_image_and_corrupt_instances_are_refused_with_a_reason_while_the_rest_goes_on(orthanc, node, studies,
                                                                                          tmp_path):
    paths, series_uid = phantom_study(studies / "b")
    orthanc.send_to_node(orthanc.upload(paths))
    # While that study waits and is segmented: the SEG of the first study (not an image) and a corrupt CT instance.
    seg_series = orthanc.rest("/series")
    seg_id = next(s for s in seg_series if orthanc.rest(f"/series/{s}")["MainDicomTags"].get("Modality") == "SEG")
    assert http_error(lambda: orthanc.send_to_node(seg_id)).code == 500
    bad = corrupt_instance(paths[0], tmp_path / "corrupt.dcm")
    assert http_error(lambda: orthanc.send_to_node(orthanc.upload([bad]))).code == 500
    check_results(wait_for_results(orthanc, series_uid), series_uid, tmp_path)
    refused = [e["message"] for e in node_status(node)["events"] if e["kind"] == "refused"]
    assert any("Segmentation Storage" in m and "not an image SOP class" in m for m in refused), refused
    assert any("pixel data holds" in m for m in refused), refused
    assert node.state(str(pydicom.dcmread(bad, stop_before_pixels=True).SeriesInstanceUID)) is None


def test_killed_while_segmenting_the_node_resumes_and_delivers_once(orthanc, node, studies, tmp_path):
    paths, series_uid = phantom_study(studies / "c", slices=48)  # long enough to be caught while segmenting
    orthanc.send_to_node(orthanc.upload(paths))
    wait_for("segmentation to start", lambda: node.state(series_uid) == "segmenting", 60, every_s=0.05)
    # While the study is segmented the node serves several associations at once.
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    associations = [ae.associate("127.0.0.1", node.port, ae_title=NODE_AET) for _ in range(3)]
    assert all(a.is_established for a in associations)
    assert [int(a.send_c_echo().Status) for a in associations] == [0, 0, 0]
    for a in associations:
        a.release()
    assert node.state(series_uid) == "segmenting"
    node.kill()
    assert node.state(series_uid) == "segmenting" and not orthanc.results_for(series_uid)["SEG"]
    node.start()
    check_results(wait_for_results(orthanc, series_uid), series_uid, tmp_path)
    wait_for("the journal to say delivered", lambda: node.state(series_uid) == "delivered", 30)
    sent = node.journal("SELECT kind, attempts, state FROM deliveries WHERE series_uid=?", (series_uid,))
    assert sorted(sent) == [("SEG", 1, "delivered"), ("SR", 1, "delivered")]
    assert not list(node.storage.glob("results/*/.partial-*"))  # what the kill cut short was cleared


def test_results_wait_for_the_pacs_and_arrive_when_it_is_back(orthanc, node, studies, tmp_path):
    paths, series_uid = phantom_study(studies / "d")
    orthanc.send_to_node(orthanc.upload(paths))
    orthanc.stop()
    attempts = "SELECT MIN(attempts), MAX(last_error) FROM deliveries WHERE series_uid=?"
    wait_for("two failed delivery attempts", lambda: (node.journal(attempts, (series_uid,))[0][0] or 0) >= 2,
             RESULT_TIMEOUT_S)
    assert "not reachable" in node.journal(attempts, (series_uid,))[0][1]
    assert node.state(series_uid) == "delivering"
    orthanc.start()
    check_results(wait_for_results(orthanc, series_uid), series_uid, tmp_path)
    wait_for("the journal to say delivered", lambda: node.state(series_uid) == "delivered", 30)
    text = run_cli("serve-dicom", "status", "--storage", node.storage)
    assert "4 delivered" in text.stdout and "0 failed" in text.stdout, text.stdout
