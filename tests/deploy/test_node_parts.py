"""The node's parts without a network: what it accepts, its settings, the journal across a crash, the disk bound."""

from __future__ import annotations

import os
import time

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from medmrcnn.deploy import Destination, DicomNode, NodeConfig
from medmrcnn.deploy import journal as J
from medmrcnn.deploy.intake import (
    DOES_NOT_MATCH, SOP_CLASS_NOT_SUPPORTED, Refused, check_instance, series_key, store_instance,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def ct_instance(rows: int = 4, cols: int = 5, ts: str = ExplicitVRLittleEndian) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID, ds.SOPInstanceUID = CT, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = rows, cols, 16, 1
    ds.PixelData = np.zeros((rows, cols), np.uint16).tobytes()
    return ds


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # the malformed UID is the point
def test_images_are_accepted_and_everything_else_refused_with_its_status():
    ds = ct_instance()
    accepted = check_instance(CT, ds, ds.SOPInstanceUID)
    assert (accepted.series_uid, accepted.sop_instance_uid) == (ds.SeriesInstanceUID, ds.SOPInstanceUID)
    cases = [
        ("1.2.840.10008.5.1.4.1.1.66.4", ds, ds.SOPInstanceUID, SOP_CLASS_NOT_SUPPORTED, "Segmentation Storage"),
        (CT, ds, "1.2.3", DOES_NOT_MATCH, "Affected SOP Instance UID"),
    ]
    short = ct_instance()
    short.PixelData = short.PixelData[:10]
    cases.append((CT, short, short.SOPInstanceUID, DOES_NOT_MATCH, "pixel data holds 10 bytes, the header needs 40"))
    no_rows = ct_instance()
    del no_rows.Rows
    cases.append((CT, no_rows, no_rows.SOPInstanceUID, DOES_NOT_MATCH, "without Rows"))
    evil = ct_instance()
    evil.SeriesInstanceUID = "../../etc"  # series and SOP UIDs name files: only valid UIDs pass
    cases.append((CT, evil, evil.SOPInstanceUID, DOES_NOT_MATCH, "malformed SeriesInstanceUID"))
    for sop_class, case, affected, status, reason in cases:
        with pytest.raises(Refused, match=reason) as refused:
            check_instance(sop_class, case, affected)
        assert refused.value.status == status
    compressed = ct_instance(ts=JPEG2000Lossless)
    compressed.PixelData = b"\xff\x4f" * 4  # encapsulated: its size says nothing about the image size
    check_instance(CT, compressed, compressed.SOPInstanceUID)


def test_instances_are_stored_atomically_under_their_series_key(tmp_path):
    ds = ct_instance()
    accepted = check_instance(CT, ds, ds.SOPInstanceUID)
    path, new = store_instance(tmp_path, accepted, b"DICM-bytes")
    assert path == tmp_path / series_key(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm" and new
    assert store_instance(tmp_path, accepted, b"DICM-bytes")[1] is False  # a repeat replaces, not duplicates
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_settings_are_checked():
    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    for bad in ("PACS:104", "PACS@host:0", "A_TITLE_LONGER_THAN_16@h:104", "BACK\\SLASH@h:1"):
        with pytest.raises(ValueError):
            Destination.parse(bad)
    cfg = NodeConfig("/tmp/x", Destination("PACS", "h", 104), retry_initial_s=5, retry_max_s=60)
    assert [cfg.backoff(n) for n in (1, 2, 3, 4, 5, 9)] == [5, 10, 20, 40, 60, 60]
    with pytest.raises(ValueError):
        NodeConfig("/tmp/x", Destination("PACS", "h", 104), port=70000)


def test_the_journal_resumes_what_a_crash_cut_short(tmp_path):
    journal = J.Journal(tmp_path / "j.sqlite")
    assert journal.instance_received("1.2", "m", "k", "1", True) == J.RECEIVING
    assert journal.instance_received("1.2", "m", "k", "1", True) == J.RECEIVING
    assert [r.series_uid for r in journal.promote_quiet(0.0)] == ["1.2"]
    assert journal.set_state("1.2", "m", J.SEGMENTING, expected=(J.QUEUED,))
    journal.close()
    journal = J.Journal(tmp_path / "j.sqlite")  # "restart" after a kill while segmenting
    journal.recover_after_restart()
    assert journal.series("1.2", "m").state == J.QUEUED and journal.series("1.2", "m").instances == 2
    journal.start_delivery("1.2", "m", "results/k", [("SEG", "results/k/seg.dcm", "9.9")])
    (d,) = journal.deliveries("1.2", "m")
    journal.delivery_sending(d)
    journal.close()
    journal = J.Journal(tmp_path / "j.sqlite")  # killed while sending: pending again, the same object
    journal.recover_after_restart()
    (d,) = journal.deliveries("1.2", "m")
    assert (d.state, d.attempts, d.sop_instance_uid) == (J.PENDING, 1, "9.9")
    # A series already segmented takes no more instances (results are never made twice for a series and model).
    assert journal.instance_received("1.2", "m", "k", "1", True) == J.DELIVERING
    assert journal.series("1.2", "m").instances == 2


def test_the_oldest_delivered_series_are_purged_above_the_disk_limit(tmp_path):
    cfg = NodeConfig(tmp_path, Destination("PACS", "h", 104), max_disk_bytes=2500)
    node = DicomNode(cfg, predictor=None, settings={})  # type: ignore[arg-type]
    node.journal = J.Journal(cfg.journal_path)
    for i, state in enumerate((J.DELIVERED, J.FAILED, J.DELIVERED, J.RECEIVING)):
        uid = f"1.{i}"
        node.journal.instance_received(uid, node.model, f"k{i}", "1", True)
        node.journal.set_state(uid, node.model, state)
        (cfg.incoming / f"k{i}").mkdir(parents=True)
        (cfg.incoming / f"k{i}" / "a.dcm").write_bytes(b"x" * 1000)
        time.sleep(0.01)
    node.purge()
    left = sorted(p.name for p in cfg.incoming.iterdir())
    # 4000 bytes > 2500: the two delivered series go, oldest first; the failed one (evidence) and the one still
    # receiving stay.
    assert left == ["k1", "k3"], left
    assert [r.purged for r in node.journal.all_series()] == [1, 0, 1, 0]
    assert os.path.exists(cfg.journal_path)


def test_bad_options_are_usage_errors_and_a_storage_takes_one_node(tmp_path, capsys):
    from medmrcnn.cli import main
    from medmrcnn.deploy import NodeError
    from tests.plugins.monailabel_server import free_port

    assert main(["serve-dicom", "--storage", str(tmp_path)]) == 2
    assert "--destination" in capsys.readouterr().err
    assert main(["serve-dicom", "--storage", str(tmp_path), "--destination", "PACS-at-host"]) == 2
    assert "AETITLE@host:port" in capsys.readouterr().err
    assert main(["serve-dicom", "status", "--storage", str(tmp_path / "nothing")]) == 2
    assert "no node journal" in capsys.readouterr().err
    cfg = NodeConfig(tmp_path / "storage", Destination("PACS", "127.0.0.1", 104), host="127.0.0.1", port=free_port())
    first = DicomNode(cfg, predictor=None, settings={})  # type: ignore[arg-type]
    first.start()
    try:
        with pytest.raises(NodeError, match="another medmrcnn node uses this storage folder"):
            DicomNode(cfg, predictor=None, settings={}).start()  # type: ignore[arg-type]
    finally:
        first.stop()
