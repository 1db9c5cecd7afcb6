"""Start and stop a real `monailabel start_server` with our app (plugin venv only)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tests.plugins.conftest import APP_DIR

if TYPE_CHECKING:
    from monailabel.client import MONAILabelClient

STARTUP_TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    """A server process started by a test, its URL and its log file."""

    proc: subprocess.Popen
    url: str
    log: Path

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server's log (for failure messages)."""
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the server by its PID (uvicorn shuts down cleanly); its process group is killed if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # A training child the server started may outlive it; it is in the server's process group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_server(studies: Path, log: Path, conf: dict[str, str]) -> RunningServer:
    """Launch `monailabel start_server --app plugins/monailabel` in the background and wait until /info/ answers."""
    bin_dir = Path(sys.executable).parent
    # monailabel creates these in the app folder with check-then-makedirs at start: two servers starting at once
    # (the plugin-venv groups run side by side) on a fresh checkout would race, and one would die.
    for sub in ("model", "lib", "logs", "bin"):
        (APP_DIR / sub).mkdir(exist_ok=True)
    port = free_port()
    cmd = [str(bin_dir / "monailabel"), "start_server", "--app", str(APP_DIR), "--studies", str(studies),
           "--host", "127.0.0.1", "--port", str(port)]
    for key, value in conf.items():
        cmd += ["--conf", key, value]
    # The `monailabel` launcher runs whichever `python` is first on PATH: make it this venv's. The server computes
    # with as many threads as this process, so its results can be compared with the library's bit for bit.
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "MONAI_LABEL_SESSIONS": "false", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = RunningServer(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/info/", timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(1.0)
    server.stop()
    raise RuntimeError(f"server did not answer /info/ within {STARTUP_TIMEOUT_S} s:\n{server.log_tail()}")


def train_and_wait(client: "MONAILabelClient", server: RunningServer, model: str, timeout_s: float = 400) -> None:
    """Start a one-step fine-tuning of `model` through the client and wait until the server reports it DONE."""
    task = client.train_start(model, {"max_epochs": 1, "steps_per_epoch": 1})
    assert task["status"] in ("SUBMITTED", "RUNNING")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.train_status()
        if status["status"] not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1)
    assert status["status"] == "DONE", "\n".join(status.get("details", [])) + server.log_tail()
