"""Measurements in isolated child processes: one child per measurement, so each peak-memory figure is its own.

Children are forked from a multiprocessing *forkserver* that imported torch and medmrcnn once and never computed:
a child starts in well under a second, and never inherits an OpenMP pool or a CUDA context from a parent that
used them (forking such a parent can hang). Inside the child, `Probe.section()` brackets the timed work:
wall time (after `torch.cuda.synchronize` on CUDA, with CUDA events as a cross-check), CPU time of the process
(how much of the machine it actually got), peak host RSS (`ru_maxrss`) and peak CUDA memory (`max_memory_allocated`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from medmrcnn.errors import MedMRCNNError

log = logging.getLogger(__name__)

# Modules the forkserver imports once, so that children start without paying for them.
PRELOAD = ["torch", "torchvision", "medmrcnn.bench.fixtures", "medmrcnn.bench.inference", "medmrcnn.bench.training",
           "medmrcnn.bench.dicom", "medmrcnn.bench.end_to_end", "medmrcnn.bench.flops", "medmrcnn.bench.prompts"]
_MB = 2**20


class BenchmarkError(MedMRCNNError):
    """A benchmark could not be measured (a child process failed, hung or returned nonsense)."""


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; elsewhere the peak so far, an upper bound)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _ru_maxrss_bytes()


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Probe:
    """Times one section of work in a child process and records its memory peaks (see module docstring)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: float | None = None
        self.cpu_seconds: float | None = None
        self.gpu_seconds: float | None = None
        self.rss_before: int | None = None

    def synchronize(self) -> None:
        """Wait for queued CUDA work (a no-op on the CPU), so that wall times cover the work itself."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        """The timed work. Only one section per child counts (a later one replaces an earlier one)."""
        import torch

        cuda = self.device.startswith("cuda")
        events = None
        self.synchronize()
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            events[0].record()
        self.rss_before = current_rss_bytes()
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        yield
        self.synchronize()
        self.seconds = time.perf_counter() - t0
        self.cpu_seconds = _cpu_seconds() - cpu0
        if events is not None:
            events[1].record()
            events[1].synchronize()
            self.gpu_seconds = events[0].elapsed_time(events[1]) / 1000.0

    def record(self) -> dict[str, Any]:
        """What was measured: seconds, cpu_seconds, host_peak_mb, host_peak_increase_mb, cuda_peak_mb, gpu_seconds."""
        peak = _ru_maxrss_bytes()
        increase = None if self.rss_before is None else round(max(0, peak - self.rss_before) / _MB, 1)
        out: dict[str, Any] = {
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            # The whole child: interpreter, imports, model, data and the measured work.
            "host_peak_mb": round(peak / _MB, 1),
            # What the measured work added on top of what the child held just before it (ru_maxrss cannot be
            # reset, so a setup step that peaked higher would hide part of it; setups here peak lower).
            "host_peak_increase_mb": increase,
            "cuda_peak_mb": None,
            "gpu_seconds": self.gpu_seconds,
        }
        if self.device.startswith("cuda"):
            import torch

            out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(self.device) / _MB, 1)
        return out


Task = Callable[[dict[str, Any], Probe], dict[str, Any]]


def _child_main(conn: Connection, task: Task, spec: dict[str, Any], device: str, threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
        probe = Probe(device)
        out = task(spec, probe)
        conn.send(("ok", {**probe.record(), **out}))
    except BaseException:  # noqa: BLE001 - everything goes back to the parent, which raises it as one error
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


_context: Any = None


def _forkserver() -> Any:
    global _context
    if _context is None:
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


@dataclass
class IsolatedRunner:
    """Runs measurement tasks, each in its own child process.

    Attributes:
        device: "cpu" or "cuda[:N]" (passed to every task).
        threads: torch CPU threads in every child (the same for baseline and medmrcnn).
        timeout_s: a child running longer is killed and its measurement fails.
    """

    device: str
    threads: int
    timeout_s: float = 3600.0

    def run(self, task: Task, spec: dict[str, Any]) -> dict[str, Any]:
        """`task(spec, probe)` in a fresh child; returns its dict merged with the probe's record."""
        ctx = _forkserver()
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_main, args=(child, task, spec, self.device, self.threads), daemon=True)
        proc.start()
        child.close()
        name = getattr(task, "__name__", str(task))
        try:
            if not parent.poll(self.timeout_s):
                proc.kill()
                raise BenchmarkError(f"{name}: no result within {self.timeout_s:.0f} s (child killed)")
            status, payload = parent.recv()
        except EOFError:
            proc.join(timeout=30)
            raise BenchmarkError(
                f"{name}: the measuring process died (exit code {proc.exitcode}: killed for memory, or a script "
                "started benchmarks without an `if __name__ == '__main__':` guard)"
            ) from None
        finally:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
            parent.close()
        if status != "ok":
            log.debug("%s failed in its child:\n%s", name, payload)
            raise BenchmarkError(f"{name}: {payload.strip().splitlines()[-1]}")
        if not isinstance(payload.get("seconds"), (int, float)) or payload["seconds"] <= 0:
            raise BenchmarkError(f"{name}: the child measured no time (seconds={payload.get('seconds')!r})")
        return payload
