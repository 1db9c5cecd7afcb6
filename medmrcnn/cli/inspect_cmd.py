"""`medmrcnn inspect PATH`: what `load_volume` would find, from headers only (no pixel decoding).

Exit codes: 0 when at least one image series can be loaded, 1 when none can, 2 for bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json

NAME = "inspect"
HELP = ("list the image series under a DICOM folder or image file (modality, shape, spacing, orientation, UID, "
        "warnings) without decoding pixels")


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `inspect`."""
    p.add_argument("path", help="DICOM file or folder (searched recursively), NIfTI, NRRD, MHA/MHD, PNG or TIFF")
    p.add_argument("--json", action="store_true", help="print JSON (one object per series) instead of a table")


def _row(index: str, info) -> str:
    shape = "x".join(str(s) for s in info.shape) if info.shape else "?"
    spacing = " x ".join(f"{s:.4g}" for s in info.spacing) if info.spacing else "?"
    name = (info.series_uid or str(info.paths[0])) + (f" [{info.subseries}]" if info.subseries else "")
    desc = f"  '{info.description}'" if info.description and info.description != info.paths[0].name else ""
    return (f"{index:>3}  {info.kind:<16} {info.modality:<5} {shape:<14} {spacing:<22} {info.orientation or '?':<6} "
            f"{info.n_files:>5}  {name}{desc}")


def run(args: argparse.Namespace) -> int:
    """Print one line per series (plus its notes), or JSON."""
    from medmrcnn.io import scan

    infos = scan(args.path)
    index = 0
    records, lines = [], []
    lines.append(f"{'#':>3}  {'kind':<16} {'mod':<5} {'shape z,y,x':<14} {'spacing z,y,x mm':<22} {'orient':<6} "
                 f"{'files':>5}  series")
    for info in infos:
        label = str(index) if info.is_image else "-"
        index += info.is_image
        records.append({"index": int(label) if info.is_image else None, **info.to_dict()})
        lines.append(_row(label, info))
        if info.n_volumes > 1:
            lines.append(f"{'':>5}note: {info.n_volumes} volumes in one file; choose one with frame=")
        lines += [f"{'':>5}{'note' if not info.is_image else 'warning'}: {w}" for w in info.warnings]
        if info.irregular:
            lines.append(f"{'':>5}irregular: {info.irregular} (loads only with allow_irregular=True)")
        if info.error:
            lines.append(f"{'':>5}error: {info.error}")
    print(json.dumps(records, indent=2) if args.json else "\n".join(lines))
    loadable = [i for i in infos if i.is_image and not i.error]
    return 0 if loadable else 1
