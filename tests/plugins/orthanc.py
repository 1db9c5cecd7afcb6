"""A throw-away Orthanc (Debian's `orthanc` + `orthanc-dicomweb`) answering DICOMweb on 127.0.0.1 (plugin venv tests)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.plugins.monailabel_server import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
HAVE_ORTHANC = Path(ORTHANC).exists() and DICOMWEB_PLUGIN.exists()
MISSING_ORTHANC = ("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb; "
                   "`make .venv-monailabel/.installed` does it as root)")


@contextmanager
def running_orthanc(base: Path) -> Iterator[str]:
    """Start Orthanc with its database under `base`; yield its URL; stop it by its PID."""
    port = free_port()
    config = {"Name": "medmrcnn-test", "StorageDirectory": str(base / "db"), "IndexDirectory": str(base / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False}}
    (base / "orthanc.json").write_text(json.dumps(config))
    with open(base / "orthanc.log", "wb") as log:
        proc = subprocess.Popen([ORTHANC, str(base / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/system", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, (base / "orthanc.log").read_text()[-3000:]
                time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def store(url: str, paths: Iterable[Path]) -> None:
    """Store DICOM files in the Orthanc at `url` (its REST API)."""
    for path in paths:
        req = urllib.request.Request(f"{url}/instances", data=path.read_bytes(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
