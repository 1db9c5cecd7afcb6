"""`medmrcnn serve-dicom`: the DICOM node (receive from a PACS, segment, send SEG + SR back); `status`: its journal."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

NAME = "serve-dicom"
HELP = "run a DICOM node that segments what a PACS sends and stores SEG + SR back ('serve-dicom status': its queue)"
EPILOG = """\
The node accepts C-ECHO and C-STORE of CT / MR / PET images (other objects are refused with status 0x0122 and a
reason), queues them under STORAGE, segments each series once no new instance came for --quiet-seconds (as
`medmrcnn infer --formats sr` would) and sends the DICOM-SEG and SR to --destination, retrying with back-off.
Killed at any moment it resumes on restart; a series' results are sent once per model. Logs name series by a
short key, never by patient. `medmrcnn serve-dicom status --storage STORAGE` prints the journal. docs/deployment.md
"""


def configure(p: argparse.ArgumentParser) -> None:
    """Options of `serve-dicom`."""
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("action", nargs="?", choices=("run", "status"), default="run",
                   help="run the node (default) or print the status of the node on --storage")
    p.add_argument("--storage", required=True, metavar="DIR", help="queue, results and journal folder")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    node = p.add_argument_group("network")
    node.add_argument("--destination", metavar="AET@HOST:PORT", help="where results go, e.g. PACS@10.0.0.5:104 "
                                                                     "(required to run)")
    node.add_argument("--ae-title", default="MEDMRCNN", help="the node's AE title (default: MEDMRCNN)")
    node.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    node.add_argument("--port", type=int, default=11112, help="DICOM port (default: 11112)")
    node.add_argument("--allow-caller", action="append", default=[], metavar="AET",
                      help="accept associations only from this calling AE title (repeatable; default: any)")
    node.add_argument("--max-associations", type=int, default=10, metavar="N", help="at once (default: 10)")
    q = p.add_argument_group("queue and delivery")
    q.add_argument("--quiet-seconds", type=float, default=30.0, metavar="S",
                   help="a series is complete after S seconds without a new instance (default: 30)")
    q.add_argument("--retry-seconds", type=float, default=10.0, metavar="S",
                   help="first wait after a failed delivery, doubling (default: 10)")
    q.add_argument("--retry-max-seconds", type=float, default=600.0, metavar="S", help="longest wait (default: 600)")
    q.add_argument("--give-up-hours", type=float, default=72.0, metavar="H",
                   help="a result not delivered after H hours is failed (default: 72)")
    q.add_argument("--max-disk-gb", type=float, default=0.0, metavar="GB",
                   help="purge the oldest finished series above this (default: 0 = no limit)")
    q.add_argument("--min-free-gb", type=float, default=1.0, metavar="GB",
                   help="refuse new instances (out of resources) below this much free disk (default: 1)")
    m = p.add_argument_group("model (as for `medmrcnn infer`)")
    m.add_argument("--weights", metavar="CKPT", help="medmrcnn .safetensors checkpoint (default: the demo weights)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    m.add_argument("--batch-size", type=int, metavar="N", help="slices per forward pass (default: automatic)")
    m.add_argument("--window", metavar="PRESET", help="intensity preset (default: the model's own)")
    m.add_argument("--score-threshold", type=float, metavar="S", help="minimum detection score (default: 0.5)")
    m.add_argument("--allow-irregular", action="store_true", help="accept series with gaps / uneven spacing")
    m.add_argument("--label-config", metavar="JSON", help="SNOMED concepts and colours per class for the SEG")


def _status(args: argparse.Namespace) -> int:
    from medmrcnn.deploy.status import node_status, status_text

    status = node_status(args.storage)
    print(json.dumps(status, indent=2) if args.json else status_text(status))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM / Ctrl-C, or print its status."""
    if args.action == "status":
        return _status(args)
    from medmrcnn.batch import load_predictor
    from medmrcnn.deploy import Destination, DicomNode, NodeConfig

    if not args.destination:
        print("medmrcnn serve-dicom: error: --destination AET@HOST:PORT is required", file=sys.stderr)
        return 2
    try:
        config = NodeConfig(
            storage=Path(args.storage), destination=Destination.parse(args.destination), ae_title=args.ae_title,
            host=args.host, port=args.port, allowed_callers=tuple(args.allow_caller), quiet_s=args.quiet_seconds,
            retry_initial_s=args.retry_seconds, retry_max_s=args.retry_max_seconds,
            give_up_s=args.give_up_hours * 3600, max_disk_bytes=int(args.max_disk_gb * 1e9),
            min_free_bytes=int(args.min_free_gb * 1e9), max_associations=args.max_associations)
        predictor, settings = load_predictor(args.weights, device=args.device, batch_size=args.batch_size,
                                             window=args.window, score_threshold=args.score_threshold)
    except ValueError as e:
        print(f"medmrcnn serve-dicom: error: {e}", file=sys.stderr)
        return 2
    if not args.debug:
        logging.getLogger("medmrcnn.deploy").setLevel(logging.INFO)
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    node = DicomNode(config, predictor, settings, allow_irregular=args.allow_irregular,
                     label_config=args.label_config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node.start()
    print(f"medmrcnn serve-dicom: {config.ae_title} listening on {config.host}:{config.port}, results to "
          f"{config.destination}", file=sys.stderr, flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    node.stop()
    return 0
