"""`medmrcnn export-seg`: a label map (NIfTI / NRRD / MHA) on a DICOM series -> DICOM-SEG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmrcnn.labels import LabelMap

NAME = "export-seg"
HELP = "convert a label map on a DICOM series into a DICOM Segmentation (DICOM-SEG) for PACS and viewers"
EPILOG = """\
LABELS.json names the label values: {"liver": 1, "kidney": 2, "tumour": 3} or ["liver", "kidney", "tumour"]
(ids 1..N in order); a medmrcnn JSON report with a "labels" entry works too. Each class needs a coded concept:
the defaults cover common organs, tumour/lesion/cyst/nodule/metastasis, nucleus and cell; add others with
--label-config (format in docs/dicom-seg.md). The label map must be on the reference's voxel grid.
"""


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `export-seg`."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--label", required=True, metavar="LABELMAP", help="class label map: .nii/.nii.gz, .nrrd, .mha/.mhd")
    p.add_argument("--reference", required=True, metavar="DICOM", help="DICOM folder or file the label map was made on")
    p.add_argument("-o", "--output", required=True, metavar="OUT.dcm", help="DICOM-SEG file to write")
    p.add_argument("--labels", metavar="LABELS.json", help="class names of the label values (see below)")
    p.add_argument("--label-config", metavar="CONFIG.json", help="extra or overriding SNOMED concepts and colours")
    p.add_argument("--per-instance", action="store_true",
                   help="one segment per connected object (TrackingID/UID) instead of one per class")
    p.add_argument("--series", metavar="N|UID", help="which series when the reference folder holds several "
                                                      "(index as listed by `medmrcnn inspect`, or SeriesInstanceUID)")
    p.add_argument("--type", default="BINARY", choices=("BINARY", "LABELMAP"), dest="segmentation_type",
                   help="BINARY (default, displayed by every viewer) or LABELMAP (compact; newer viewers)")
    p.add_argument("--algorithm-type", default="AUTOMATIC", choices=("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"),
                   help="AUTOMATIC: a medmrcnn prediction (default); SEMIAUTOMATIC: a prediction a person edited; "
                        "MANUAL: a person's annotation (no algorithm named)")
    p.add_argument("--series-description", default="medmrcnn segmentation", help="SeriesDescription of the SEG")


def read_labels(path: str | Path) -> LabelMap:
    """Class names from LABELS.json: {name: id}, [names] or a report holding {"labels": ...}."""
    from medmrcnn.errors import LabelConfigError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LabelConfigError(f"{path}: cannot read the labels ({e})") from None
    if isinstance(doc, dict) and "labels" in doc:
        doc = doc["labels"]
    if isinstance(doc, list) and all(isinstance(n, str) for n in doc):
        return LabelMap.from_names(doc)
    if isinstance(doc, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in doc.values()):
        try:
            return LabelMap.from_dict(doc)
        except LabelConfigError as e:
            raise LabelConfigError(f"{path}: {e}") from None
    raise LabelConfigError(f'{path}: expected {{"liver": 1, ...}} or ["liver", ...]')


def run(args: argparse.Namespace) -> int:
    """Load the reference series and the label map, write the SEG, print one line."""
    from medmrcnn.dicomseg import write_seg
    from medmrcnn.errors import VolumeLoadError
    from medmrcnn.io import load_volume, read_series, scan, select_series

    series: str | int | None = args.series
    if series is not None and series.isdigit():
        series = int(series)
    try:
        chosen = select_series(args.reference, scan(args.reference), series)
    except VolumeLoadError as e:
        raise VolumeLoadError(e.path, f"{e.reason} (command line: --series N or --series UID)") from None
    reference = read_series(chosen)
    label = load_volume(args.label)
    labels = read_labels(args.labels) if args.labels else None
    out = write_seg(label, reference, args.output, labels, per_instance=args.per_instance,
                    label_config=args.label_config, segmentation_type=args.segmentation_type,
                    algorithm_type=args.algorithm_type, series_description=args.series_description)
    print(f"wrote {out}")
    return 0
