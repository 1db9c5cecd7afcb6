"""`medmrcnn infer`: segment every study under the inputs (batch; resumable; torchrun-sharded)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "infer"
HELP = "segment every study (DICOM series, NIfTI/NRRD/MHA, PNG/TIFF) under the inputs into OUTDIR"
EPILOG = """\
INPUT may be DICOM folders (searched recursively: every image series is one study), NIfTI / NRRD / MHA files,
PNG / TIFF images, quoted globs ('scans/**/*.nii.gz') or a .txt/.lst file listing paths, one a line.
Each study gets OUTDIR/<name>/ (written under a hidden name, renamed when complete); re-running skips complete
studies. OUTDIR/summary.csv and summary.json list every study. Exit code: 0 all studies done, 1 some failed,
2 usage error. Under torchrun each rank takes its share of the studies; rank 0 writes the summary.
"""


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `infer`."""
    from medmrcnn.batch.outputs import AUTO, AUTO_MEDICAL, AUTO_MICROSCOPY, FORMATS

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM folder, image file, glob or list file")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created if needed)")
    p.add_argument("--weights", metavar="CKPT", help="medmrcnn .safetensors checkpoint (default: the demo weights, "
                                                     "for trying the tool only)")
    p.add_argument("--formats", default=AUTO, metavar="LIST",
                   help=f"comma-separated outputs, any of {', '.join(FORMATS)}, or {AUTO} (default): "
                        f"{','.join(AUTO_MEDICAL)} for DICOM / NIfTI / NRRD / MHA, {','.join(AUTO_MICROSCOPY)} for "
                        "PNG / TIFF microscopy. seg (DICOM-SEG) and sr (DICOM SR measurement report; implies seg, "
                        "one segment per instance) are written for DICOM inputs with findings")
    p.add_argument("--channel", type=int, metavar="C",
                   help="channel to segment in multi-channel TIFFs (C axis) or RGB images (0 = R), as Cellpose's "
                        "--chan (default: channel 0, luma for RGB)")
    p.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, metavar="N", help="slices per forward pass (default: automatic)")
    p.add_argument("--window", metavar="PRESET",
                   help="intensity preset, e.g. ct:soft_tissue, ct:liver, ct:40,400 (centre,width HU), percentile "
                        "(default: the one the model was trained with)")
    p.add_argument("--score-threshold", type=float, metavar="S", help="minimum detection score 0..1 (default: 0.5)")
    p.add_argument("--tile-size", type=int, metavar="PX",
                   help="images larger than this are segmented in overlapping tiles of PX x PX (memory bounded by the "
                        "tile; default: 2048); tiles crowded with cells are halved on their own, and giving the size "
                        "that fits saves those probing passes")
    p.add_argument("--tile-overlap", type=int, metavar="PX",
                   help="pixels shared by neighbouring tiles; more than the largest cell's diameter (default: 128)")
    p.add_argument("--overwrite", action="store_true", help="redo studies whose outputs are already complete")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="studies read ahead in background threads while one is segmented (0: none; default: 1)")
    p.add_argument("--allow-irregular", action="store_true",
                   help="accept DICOM series with missing slices / uneven spacing (outputs keep each slice's true position "
                        "on a regular grid)")
    p.add_argument("--label-config", metavar="JSON", help="SNOMED concepts and colours per class for DICOM-SEG")
    p.add_argument("--quiet", action="store_true", help="no progress bars (failures and the summary line still print)")


def _usage_error(message: str) -> int:
    print(f"medmrcnn infer: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Load the model, run the batch with progress bars, print failures, the summary line and where it is."""
    from medmrcnn.batch import BatchOptions, Shard, expand_inputs, load_predictor, parse_formats, run_batch
    from medmrcnn.cli.progress import BatchProgress

    try:
        formats = parse_formats(args.formats)
    except ValueError as e:
        return _usage_error(str(e))
    if args.workers < 0 or (args.batch_size is not None and args.batch_size < 1):
        return _usage_error("--workers must be >= 0 and --batch-size >= 1")
    if Path(args.output).exists() and not Path(args.output).is_dir():
        return _usage_error(f"-o {args.output}: an existing file, not a folder; name a folder for the results")
    if args.channel is not None and args.channel < 0:
        return _usage_error("--channel must be >= 0")
    expand_inputs(args.inputs)  # a missing input or an empty glob is a usage error, found before the model loads
    shard = Shard.from_env()
    shard.share_cpu_threads()
    try:
        predictor, settings = load_predictor(args.weights, device=shard.device(args.device),
                                             batch_size=args.batch_size, window=args.window,
                                             score_threshold=args.score_threshold, tile_size=args.tile_size,
                                             tile_overlap=args.tile_overlap)
    except ValueError as e:
        return _usage_error(str(e))
    options = BatchOptions(Path(args.output), formats, overwrite=args.overwrite, workers=args.workers,
                           allow_irregular=args.allow_irregular, channel=args.channel,
                           label_config=args.label_config,
                           settings={**settings, "formats": list(formats), "label_config": args.label_config,
                                     "channel": args.channel})
    bars = not args.quiet and sys.stderr.isatty() and shard.rank == 0
    with BatchProgress(bars, args.quiet, rank=shard.rank if shard.distributed else None) as progress:
        summary = run_batch(args.inputs, predictor, options, class_names=predictor.model_cfg.labels,
                            events=progress)
    if shard.rank == 0:
        print(summary.line())
        print(f"results: {options.output}  (summary: {options.output / 'summary.csv'})")
    return summary.exit_code
