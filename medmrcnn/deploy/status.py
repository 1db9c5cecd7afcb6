"""What `medmrcnn serve-dicom status` shows: queue, in progress, delivered, failed with reasons, disk use."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medmrcnn.deploy import journal as J
from medmrcnn.deploy.node import folder_bytes, lock_is_held
from medmrcnn.errors import MedMRCNNError


def node_status(storage: str | Path, events: int = 20) -> dict[str, Any]:
    """The journal of the node on `storage` as a dict (JSON-ready). Series are named by key, never by patient."""
    storage = Path(storage)
    path = storage / "journal.sqlite"
    if not path.is_file():
        raise MedMRCNNError(f"{storage}: no node journal here (journal.sqlite); is this the --storage of a node?")
    journal = J.Journal(path, readonly=True)
    try:
        rows = journal.all_series()
        series = []
        for r in rows:
            deliveries = journal.deliveries(r.series_uid, r.model)
            series.append({
                "key": r.key, "model": r.model, "state": r.state, "instances": r.instances, "reason": r.reason,
                "received": _iso(r.first_received), "updated": _iso(r.updated), "purged": bool(r.purged),
                "deliveries": [{"kind": d.kind, "state": d.state, "attempts": d.attempts, "last_error": d.last_error,
                                "next_attempt": _iso(d.next_attempt) if d.state == J.PENDING else None,
                                "delivered": _iso(d.delivered_at) if d.delivered_at else None}
                               for d in deliveries],
            })
        recent = [{"time": _iso(t), "key": k, "kind": kind, "message": m} for t, k, kind, m in journal.events(events)]
    finally:
        journal.close()
    return {
        "storage": str(storage),
        "running": lock_is_held(storage),
        "counts": {s: sum(r.state == s for r in rows) for s in J.STATES},
        "disk_bytes": folder_bytes(storage / "incoming") + folder_bytes(storage / "results"),
        "series": series,
        "events": recent,
    }


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t)) if t else None


def status_text(status: dict[str, Any]) -> str:
    """A few lines for a person: counts, series not finished, failures with reasons, recent refusals."""
    c = status["counts"]
    lines = [f"node on {status['storage']}: {'running' if status['running'] else 'not running'}; "
             f"{status['disk_bytes'] / 1e6:.1f} MB on disk",
             "queue: " + ", ".join(f"{c[s]} {s}" for s in J.STATES)]
    for s in status["series"]:
        if s["state"] in J.FINISHED and s["state"] != J.FAILED:
            continue
        detail = s["reason"]
        if s["state"] == J.DELIVERING:
            detail = "; ".join(f"{d['kind']} {d['state']} after {d['attempts']} attempts"
                               + (f" ({d['last_error']})" if d["last_error"] else "") for d in s["deliveries"])
        lines.append(f"  {s['key']} {s['state']:<10} {s['instances']:>5} instances  {detail}".rstrip())
    refused = [e for e in status["events"] if e["kind"] == "refused"]
    if refused:
        lines.append("recent refusals:")
        lines += [f"  {e['time']} {e['message']}" for e in refused[:10]]
    return "\n".join(lines)
