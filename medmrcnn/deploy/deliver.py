"""Send result objects to the destination AE by C-STORE (pynetdicom SCU), one association per series."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pynetdicom import AE
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medmrcnn.deploy.config import Destination

log = logging.getLogger(__name__)

# Success, and the storage warnings that still mean "stored" (coercion, elements discarded, does not match).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryError(Exception):
    """The destination could not be reached or did not take the objects (one line)."""


def send_files(destination: Destination, calling_ae: str, files: Sequence[Path],
               timeout_s: float = 60.0) -> dict[Path, str | None]:
    """C-STORE every file in one association; returns per file None (stored) or the destination's refusal.

    Raises DeliveryError when no association can be made (down, refused, unreachable).
    """
    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        syntaxes = [str(ds.file_meta.TransferSyntaxUID) for ds in datasets if str(ds.SOPClassUID) == sop_class]
        ae.add_requested_context(sop_class, list(dict.fromkeys([*syntaxes, ExplicitVRLittleEndian,
                                                                ImplicitVRLittleEndian])))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise DeliveryError(f"association rejected by {destination} (does it know this node's AE title "
                                f"{calling_ae}, host and port?)")
        raise DeliveryError(f"no association with {destination}: down or not reachable")
    results: dict[Path, str | None] = {}
    try:
        for path, ds in zip(files, datasets):
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status and "Status" in status else None
            if code in STORED:
                results[path] = None
            elif code is None:
                results[path] = f"no answer from {destination} (connection lost or timed out)"
            else:
                comment = f": {status.ErrorComment}" if "ErrorComment" in status else ""
                results[path] = f"{destination} answered status 0x{code:04X}{comment}"
    finally:
        if assoc.is_established:
            assoc.release()
    return results
