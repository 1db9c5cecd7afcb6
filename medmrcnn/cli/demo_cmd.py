"""`medmrcnn demo`: segment a synthetic CT study with the bundled demo weights; no network, no arguments."""

from __future__ import annotations

import argparse
import sys

NAME = "demo"
HELP = "write a synthetic CT study as DICOM, segment it with the demo weights, compare with the phantom's truth"
LABELS = {"seg.dcm": "DICOM-SEG", "labels.nii.gz": "NIfTI class labels", "instances.nii.gz": "NIfTI instances",
          "report.json": "JSON report", "overlay.png": "overlay PNG", "instances.csv": "CSV"}


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `demo`."""
    p.add_argument("-o", "--output", default="out/demo", metavar="DIR", help="output folder (default: out/demo)")
    p.add_argument("--weights", metavar="CKPT", help="checkpoint to use instead of the bundled demo weights")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where everything is and the comparison with the truth."""
    from medmrcnn.cli.progress import BatchProgress
    from medmrcnn.demo import DEMO_SHAPE, DEMO_SPACING, run_demo
    from medmrcnn.runtime import resolve_device

    z, y, x = DEMO_SHAPE
    print(f"medmrcnn demo: synthetic abdominal CT, {z} slices of {y} x {x} ({DEMO_SPACING[0]} mm slices, "
          f"{DEMO_SPACING[1]} mm pixels), segmented on {resolve_device(args.device)}", flush=True)
    with BatchProgress(bars=not args.quiet and sys.stderr.isatty(), quiet=True) as progress:
        result = run_demo(args.output, weights=args.weights, device=args.device, events=progress)
    print(f"\n{'input (DICOM series)':<22} {result.dicom_dir}")
    print(f"{'true labels (NIfTI)':<22} {result.truth}")
    for path in result.outputs:
        if path.name in LABELS:
            print(f"{LABELS[path.name]:<22} {path}")
    print(f"{'comparison with truth':<22} {result.report}")
    found = ", ".join(f"{name} {f}/{t}" for name, (f, t) in result.instances.items())
    print(f"\ninstances found (found/true): {found}")
    print(f"{'structure':<12} {'true mL':>9} {'found mL':>9} {'Dice':>6}")
    for f in result.findings:
        print(f"{f.structure:<12} {f.truth_ml:>9.1f} {f.found_ml:>9.1f} {f.dice:>6.2f}")
    weights = args.weights or "bundled demo weights (for the demo only: trained on synthetic phantoms, not for "\
                              "clinical use)"
    print(f"\ndone in {result.seconds:.0f} s; weights: {weights}")
    return 0
