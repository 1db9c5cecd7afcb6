"""Running the `medmrcnn` command in a subprocess, and reading a batch's output folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a `medmrcnn` subprocess: this checkout importable, 1 torch thread per process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def medmrcnn_command(*args: str | Path) -> list[str]:
    """argv running the `medmrcnn` CLI with this Python."""
    return [sys.executable, "-m", "medmrcnn", *map(str, args)]


def run_cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `medmrcnn ARGS...` to completion and capture its output."""
    return subprocess.run(medmrcnn_command(*args), env=cli_env(), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def summary_rows(out: Path) -> dict[str, dict[str, str]]:
    """summary.csv as {study name: row}."""
    with open(out / "summary.csv", newline="") as f:
        return {row["study"]: row for row in csv.DictReader(f)}


def summary_doc(out: Path) -> dict:
    """summary.json."""
    return json.loads((out / "summary.json").read_text())


def complete_studies(out: Path) -> list[str]:
    """Names of the study folders whose outputs are complete (their manifest exists)."""
    return sorted(p.parent.name for p in out.glob("*/study.json") if not p.parent.name.startswith("."))
