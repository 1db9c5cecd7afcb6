"""Benchmarks: medmrcnn measured side by side against torchvision, SimpleITK, highdicom and the hardware limit.

`run_benchmarks(BenchSettings.for_run(device, quick))` returns one JSON-ready document (machine, versions, date,
figures, ratios, targets); `medmrcnn bench` is its command line. See docs/benchmarks.md.
"""

from medmrcnn.bench.measure import BenchmarkError
from medmrcnn.bench.runner import failed_benchmarks, run_benchmarks, write_results
from medmrcnn.bench.settings import BENCHMARKS, BenchSettings

__all__ = ["BENCHMARKS", "BenchSettings", "BenchmarkError", "failed_benchmarks", "run_benchmarks", "write_results"]
