"""`medmrcnn export-model`: a checkpoint as TorchScript and ONNX for Triton / MONAI Deploy, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys

NAME = "export-model"
HELP = "export a checkpoint to TorchScript (model.pt) and ONNX (model.onnx) with model.json, checked against PyTorch"
EPILOG = """\
The exported network takes one preprocessed slice (float32 C x H x W, see model.json) and returns boxes, labels,
scores and masks. After writing, each file is run on phantom slices (ONNX with onnxruntime on the CPU) and compared
with PyTorch; a difference beyond the tolerances fails the export (exit 1). docs/deployment.md#portable-models
"""


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `export-model`."""
    from medmrcnn.deploy.portable import EXPORT_FORMATS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for model.pt / model.onnx / model.json")
    p.add_argument("--weights", metavar="CKPT", help="medmrcnn .safetensors checkpoint (default: the demo weights)")
    p.add_argument("--formats", default=",".join(EXPORT_FORMATS), metavar="LIST",
                   help=f"comma-separated, any of {', '.join(EXPORT_FORMATS)} (default: both)")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")


def run(args: argparse.Namespace) -> int:
    """Export, then compare each exported file with PyTorch on phantom slices."""
    from medmrcnn.batch.model import DEMO_WEIGHTS
    from medmrcnn.deploy.portable import compare_with_pytorch, export_model, phantom_slices
    from medmrcnn.modeling.checkpoint import read_checkpoint

    weights = args.weights or DEMO_WEIGHTS
    formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    written = export_model(weights, args.output, formats)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    if args.no_check:
        return 0
    images = phantom_slices(read_checkpoint(weights).config)
    ok = True
    for fmt in formats:
        parity = compare_with_pytorch(weights, written[fmt], images)
        good = parity.within()
        ok &= good
        counts = ", ".join(f"{a}/{b}" for a, b in parity.detections)
        print(f"{fmt} vs PyTorch on {len(images)} phantom slices: detections {counts}; max |diff| boxes "
              f"{parity.box_px:.2g} px, scores {parity.score:.2g}, masks {parity.mask:.2g} -> "
              f"{'ok' if good else 'BEYOND TOLERANCE'}")
    if not ok:
        print("medmrcnn export-model: the exported model differs from PyTorch beyond tolerance", file=sys.stderr)
    return 0 if ok else 1
