"""`medmrcnn bench`: speed and memory side by side with torchvision, SimpleITK and highdicom; results as JSON.

Exit codes: 0 every benchmark measured, 1 some failed (recorded in the JSON), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys

NAME = "bench"
HELP = "measure inference, training, DICOM loading, DICOM-SEG export and end to end against plain baselines"
EPILOG = """\
Every figure is measured in the same run as its baseline (interleaved repeats, medians, each measurement in its
own process for its peak memory) and reported as a ratio. --quick is the small run (< 3 min on two CPU cores);
the full CPU run takes 40-60 minutes on a busy two-core machine. Results: JSON (-o) and a table on stdout.
"""


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `bench`."""
    from medmrcnn.bench import BENCHMARKS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--quick", action="store_true", help="small volumes, one repeat (what the test suite runs)")
    p.add_argument("-o", "--output", default="bench_results.json", metavar="JSON",
                   help="results file (default: bench_results.json)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per measurement (default: the CPUs "
                                                            "this process may use)")
    p.add_argument("--only", metavar="LIST", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint measured as the small model (default: the bundled "
                                                     "demo weights)")
    p.add_argument("--cells-weights", metavar="CKPT", help="nuclei checkpoint of the cells benchmark (default: its "
                                                           "architecture with random weights)")
    p.add_argument("--workdir", metavar="DIR", help="where temporary phantoms and series go (default: system temp)")


def run(args: argparse.Namespace) -> int:
    """Run, write the JSON, print the tables."""
    from medmrcnn.bench import BenchSettings, failed_benchmarks, run_benchmarks, write_results
    from medmrcnn.bench.report import results_table, targets_table
    from medmrcnn.runtime import resolve_device

    device = str(resolve_device(args.device))
    try:
        only = tuple(s.strip() for s in args.only.split(",") if s.strip()) if args.only else None
        settings = BenchSettings.for_run(device, quick=args.quick, threads=args.threads, only=only,
                                         demo_weights=args.weights, cells_weights=args.cells_weights)
    except ValueError as e:
        print(f"medmrcnn bench: error: {e}", file=sys.stderr)
        return 2
    doc = run_benchmarks(settings, args.workdir, progress=lambda line: print(f"bench: {line}", file=sys.stderr))
    path = write_results(doc, args.output)
    env = doc["environment"]
    print(f"{env['cpu']}, {settings.threads} threads, {device}; load average {env['load_average_start']} -> "
          f"{env['load_average_end']}")
    print(results_table(doc))
    print()
    print(targets_table(doc))
    print(f"results: {path}")
    failed = failed_benchmarks(doc)
    if failed:
        print(f"medmrcnn bench: failed: {', '.join(failed)} (see {path})", file=sys.stderr)
    return 1 if failed else 0
