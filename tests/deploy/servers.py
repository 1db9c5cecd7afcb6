"""A real Orthanc (the PACS) and the `medmrcnn serve-dicom` node as processes that tests start, kill and restart."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from tests.cli.helpers import cli_env, medmrcnn_command

NODE_AET, ORTHANC_AET = "MEDMRCNN", "ORTHANC"


def wait_for(what: str, check, timeout_s: float, every_s: float = 0.2) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Orthanc:
    """Orthanc with its DICOM server on; it knows the node as modality "medmrcnn" and takes stores only from it."""

    base: Path
    http_port: int
    dicom_port: int
    node_port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        config = {
            "Name": "medmrcnn-pacs", "StorageDirectory": str(self.base / "db"), "IndexDirectory": str(self.base / "db"),
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomServerEnabled": True, "DicomAet": ORTHANC_AET, "DicomPort": self.dicom_port,
            "DicomAlwaysAllowEcho": False, "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True,
            "DicomModalities": {"medmrcnn": [NODE_AET, "127.0.0.1", self.node_port]},
            "DicomScuTimeout": 30,
        }
        (self.base / "orthanc.json").write_text(json.dumps(config))
        with open(self.base / "orthanc.log", "ab") as log:
            self.proc = subprocess.Popen([ORTHANC_BIN, str(self.base / "orthanc.json")], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("Orthanc to answer", self._up, 60)

    def _up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (self.base / "orthanc.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{self.url}/system", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        _stop(self.proc)

    def rest(self, path: str, body: Any = None, raw: bytes | None = None, timeout_s: float = 120) -> Any:
        """GET (no body) or POST (JSON body or raw bytes) to Orthanc's REST API; the parsed JSON answer."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            payload = r.read()
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload

    def upload(self, paths: list[Path]) -> str:
        """Store files in Orthanc; the Orthanc id of their series."""
        ids = {self.rest("/instances", raw=p.read_bytes())["ParentSeries"] for p in paths}
        assert len(ids) == 1
        return ids.pop()

    def send_to_node(self, orthanc_id: str) -> None:
        """Orthanc C-STOREs a resource to the node (synchronous job); HTTPError when the node refused it."""
        self.rest("/modalities/medmrcnn/store", {"Resources": [orthanc_id], "Synchronous": True})

    def results_for(self, series_uid: str) -> dict[str, list[pydicom.Dataset]]:
        """SEG and SR instances in Orthanc that reference `series_uid`, by modality."""
        found: dict[str, list[pydicom.Dataset]] = {"SEG": [], "SR": []}
        for iid in self.rest("/instances"):
            tags = self.rest(f"/instances/{iid}/simplified-tags")
            if tags.get("Modality") not in found:
                continue
            ds = pydicom.dcmread(__import__("io").BytesIO(self.rest(f"/instances/{iid}/file")))
            refs = ds.ReferencedSeriesSequence if ds.Modality == "SEG" else [
                s for e in ds.CurrentRequestedProcedureEvidenceSequence for s in e.ReferencedSeriesSequence]
            if any(r.SeriesInstanceUID == series_uid for r in refs):
                found[ds.Modality].append(ds)
        return found


ORTHANC_BIN = "/usr/sbin/Orthanc"


@dataclass
class Node:
    """`medmrcnn serve-dicom` in a subprocess on `storage`, sending to Orthanc."""

    storage: Path
    port: int
    orthanc_dicom_port: int
    log: Path
    proc: subprocess.Popen | None = None
    extra: list[str] = field(default_factory=list)

    def start(self) -> None:
        cmd = medmrcnn_command(
            "serve-dicom", "--storage", self.storage, "--host", "127.0.0.1", "--port", self.port,
            "--ae-title", NODE_AET, "--destination", f"{ORTHANC_AET}@127.0.0.1:{self.orthanc_dicom_port}",
            "--quiet-seconds", "2", "--retry-seconds", "1", "--retry-max-seconds", "3", "--device", "cpu",
            "--min-free-gb", "0", *self.extra)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=cli_env(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for("the node to listen", self._listening, 120)

    def _listening(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        return "listening on" in self.log.read_text()

    def kill(self) -> None:
        """SIGKILL: no chance to tidy up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        _stop(self.proc)

    def journal(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of a query on the node's journal (read-only, while it runs)."""
        db = sqlite3.connect(f"file:{self.storage / 'journal.sqlite'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
        finally:
            db.close()

    def state(self, series_uid: str) -> str | None:
        rows = self.journal("SELECT state FROM series WHERE series_uid=?", (series_uid,))
        return rows[0][0] if rows else None


def http_error(call) -> urllib.error.HTTPError:
    """The HTTPError `call()` raises (fails the test if it succeeds)."""
    try:
        call()
    except urllib.error.HTTPError as e:
        return e
    raise AssertionError("the call succeeded; expected an HTTP error")
