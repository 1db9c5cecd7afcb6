"""`DicomNode`: a DICOM listener that queues what a PACS sends, segments complete series and sends results back.

Three kinds of threads share the journal: pynetdicom's association threads (C-ECHO, C-STORE: check, write to the
queue atomically, record), one segmentation worker (quiet series -> `segment_series`, the `medmrcnn infer` path)
and one delivery worker (C-STORE of SEG + SR with back-off, then disk purge). Every step is recorded before the
next starts, so a node killed at any moment resumes where it was (docs/deployment.md).
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from medmrcnn.batch import BatchOptions
from medmrcnn.batch.runner import Segmenter
from medmrcnn.deploy import journal as J
from medmrcnn.deploy.config import NodeConfig
from medmrcnn.deploy.deliver import DeliveryError, send_files
from medmrcnn.deploy.intake import (
    CANNOT_UNDERSTAND, OUT_OF_RESOURCES, Refused, check_instance, series_key, store_instance,
)
from medmrcnn.deploy.pipeline import NODE_FORMATS, SegmentationFailed, model_key, segment_series
from medmrcnn.errors import MedMRCNNError

log = logging.getLogger(__name__)


class NodeError(MedMRCNNError):
    """The node cannot start (storage locked by another node, port in use, ...)."""


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


class DicomNode:
    """The node; `start()` listens and starts the workers, `stop()` ends them (the queue stays on disk)."""

    def __init__(self, config: NodeConfig, predictor: Segmenter, settings: dict[str, Any], *,
                 allow_irregular: bool = False, label_config: str | Path | None = None) -> None:
        self.config, self.predictor = config, predictor
        self.settings = {**settings, "formats": list(NODE_FORMATS), "label_config": label_config}
        self.model = model_key(self.settings)
        self.allow_irregular, self.label_config = allow_irregular, label_config
        self.stopping = threading.Event()
        self.journal: J.Journal | None = None
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._lock_file: Any = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Lock the storage, recover the journal, listen, start the workers. Raises NodeError."""
        cfg = self.config
        cfg.storage.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(cfg.storage / "node.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise NodeError(f"{cfg.storage}: another medmrcnn node uses this storage folder") from e
        self.journal = J.Journal(cfg.journal_path)
        self.journal.recover_after_restart()
        self._adopt_unrecorded()
        ae = AE(ae_title=cfg.ae_title)
        ae.maximum_associations = cfg.max_associations
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 120
        if cfg.allowed_callers:
            ae.require_calling_aet = list(cfg.allowed_callers)
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:  # all, so that non-images get a C-STORE status with the reason
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        try:
            self._server = ae.start_server((cfg.host, cfg.port), block=False, evt_handlers=[
                (evt.EVT_C_ECHO, self._on_echo), (evt.EVT_C_STORE, self._on_store)])
        except OSError as e:
            raise NodeError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from e
        for target, name in ((self._segment_loop, "segment"), (self._deliver_loop, "deliver")):
            thread = threading.Thread(target=target, name=f"medmrcnn-node-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("listening as %s on %s:%d; results to %s; model %s", cfg.ae_title, cfg.host, cfg.port,
                 cfg.destination, self.model)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop listening and let the workers finish their current step (at most `timeout_s`)."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout_s)
        if self.journal is not None:
            self.journal.close()
        if self._lock_file is not None:
            self._lock_file.close()
        log.info("stopped")

    def _adopt_unrecorded(self) -> None:
        """Queue folders whose instances were written but not journalled (a kill between the two)."""
        assert self.journal is not None
        for folder in sorted(p for p in self.config.incoming.glob("*") if p.is_dir()):
            files = sorted(folder.glob("*.dcm"))
            if not files:
                continue
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
            uid = str(ds.SeriesInstanceUID)
            if self.journal.series(uid, self.model) is None and folder.name == series_key(uid):
                for _ in files:
                    self.journal.instance_received(uid, self.model, folder.name, str(ds.StudyInstanceUID), True)
                log.info("series %s: %d instances found in the queue without a journal entry", folder.name,
                         len(files))

    # --- DICOM services -----------------------------------------------------------------------------------------
    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> Any:
        """C-STORE: check, store in the queue, journal; a refusal answers its status with an ErrorComment."""
        assert self.journal is not None
        sop_class = str(event.context.abstract_syntax)
        caller = event.assoc.requestor.ae_title
        ds = None
        try:
            try:
                ds = event.dataset
                ds.file_meta = event.file_meta
                accepted = check_instance(sop_class, ds, str(event.request.AffectedSOPInstanceUID))
            except Refused:
                raise
            except Exception as e:  # noqa: BLE001 - whatever pydicom raises on bytes it cannot decode
                ds = None
                raise Refused(CANNOT_UNDERSTAND, f"refused: the data set cannot be decoded ({type(e).__name__})")
            key = series_key(accepted.series_uid)
            row = self.journal.series(accepted.series_uid, self.model)
            if row is not None and row.state not in (J.RECEIVING, J.QUEUED):
                self.journal.event(key, "late", f"instance from {caller} arrived after the series was {row.state}; "
                                                "not segmented again (raise --quiet-seconds if series arrive slowly)")
                return 0x0000
            self._ensure_space()
            _, new = store_instance(self.config.incoming, accepted, event.encoded_dataset())
            state = self.journal.instance_received(accepted.series_uid, self.model, key, accepted.study_uid, new)
            if row is None:
                log.info("series %s: receiving from %s", key, caller)
            if state not in (J.RECEIVING, J.QUEUED):  # started while this instance was being written
                self.journal.event(key, "late", f"instance arrived while the series was {state}")
            return 0x0000
        except Refused as r:
            uid = ds.get("SeriesInstanceUID", "") if ds is not None else ""
            key = series_key(str(uid)) if uid else "-"
            log.warning("C-STORE from %s, series %s: %s (status 0x%04X)", caller, key, r, r.status)
            self.journal.event(key, "refused", f"from {caller}: {r}")
            status = pydicom.Dataset()
            status.Status = r.status
            status.ErrorComment = str(r)[:64]
            return status
        except OSError as e:
            log.error("C-STORE from %s: cannot write to the queue: %s", caller, e.strerror or e)
            return OUT_OF_RESOURCES

    def _ensure_space(self) -> None:
        """Purge if over the limits; refuse (out of resources) when the disk stays too full."""
        cfg = self.config
        if shutil.disk_usage(cfg.storage).free >= cfg.min_free_bytes:
            return
        self.purge(force=True)
        if shutil.disk_usage(cfg.storage).free < cfg.min_free_bytes:
            raise Refused(OUT_OF_RESOURCES, "refused: the node's disk is full")

    # --- segmentation -------------------------------------------------------------------------------------------
    def _segment_loop(self) -> None:
        assert self.journal is not None
        while not self.stopping.is_set():
            for row in self.journal.promote_quiet(self.config.quiet_s):
                log.info("series %s: complete (%d instances), queued", row.key, row.instances)
            queued = self.journal.all_series(J.QUEUED)
            if not queued:
                self.stopping.wait(self.config.poll_s)
                continue
            self.segment(queued[0])

    def segment(self, row: J.SeriesRow) -> None:
        """Segment one queued series and record the objects to send (or why there are none)."""
        assert self.journal is not None
        if not self.journal.set_state(row.series_uid, row.model, J.SEGMENTING, expected=(J.QUEUED,)):
            return  # more instances arrived meanwhile: it waits for the quiet time again
        log.info("series %s: segmenting", row.key)
        output = self.config.results / f"{row.key}-{row.model}"
        options = BatchOptions(output, NODE_FORMATS, workers=0, allow_irregular=self.allow_irregular,
                               label_config=self.label_config, settings=self.settings)
        start = time.perf_counter()
        try:
            result = segment_series(self.config.incoming / row.key, output, self.predictor, options)
        except (SegmentationFailed, MedMRCNNError) as e:
            self._fail(row, f"not segmented: {' '.join(str(e).split())}")
            return
        except Exception as e:  # noqa: BLE001 - one bad series must not stop the node
            log.debug("series %s failed", row.key, exc_info=True)
            self._fail(row, f"not segmented: {type(e).__name__}: {' '.join(str(e).split())}")
            return
        seconds = time.perf_counter() - start
        folder = str(result.folder.relative_to(self.config.storage)) if result.folder else ""
        if not result.objects:
            why = "; ".join(result.notes) or "no result objects"
            self.journal.set_state(row.series_uid, row.model, J.DONE, reason=f"nothing to send: {why}",
                                   result_dir=folder)
            log.info("series %s: segmented in %.1f s, nothing to send (%s)", row.key, seconds, why)
            return
        objects = [(kind, str(Path(file).relative_to(self.config.storage)), uid) for kind, file, uid in result.objects]
        self.journal.start_delivery(row.series_uid, row.model, folder, objects)
        log.info("series %s: segmented in %.1f s; %s to deliver", row.key, seconds,
                 " + ".join(kind for kind, _, _ in result.objects))

    def _fail(self, row: J.SeriesRow, reason: str) -> None:
        assert self.journal is not None
        self.journal.set_state(row.series_uid, row.model, J.FAILED, reason=reason)
        self.journal.event(row.key, "failed", reason)
        log.warning("series %s: %s", row.key, reason)

    # --- delivery -----------------------------------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        assert self.journal is not None
        while not self.stopping.is_set():
            due = self.journal.due_series()
            for row in due:
                if self.stopping.is_set():
                    break
                self.deliver(row)
            if not due:
                self.stopping.wait(self.config.poll_s)

    def deliver(self, row: J.SeriesRow) -> None:
        """Send the series' pending objects in one association; record each outcome; retry later on failure."""
        assert self.journal is not None
        cfg = self.config
        now = time.time()
        pending = [d for d in self.journal.deliveries(row.series_uid, row.model)
                   if d.state == J.PENDING and d.next_attempt <= now]
        for d in pending:
            self.journal.delivery_sending(d)
        try:
            outcome = send_files(cfg.destination, cfg.ae_title, [cfg.storage / d.file for d in pending])
            errors = {d.file: outcome[cfg.storage / d.file] for d in pending}
        except (DeliveryError, OSError, ValueError) as e:
            errors = {d.file: " ".join(str(e).split()) for d in pending}
        for d in pending:
            error = errors[d.file]
            if error is None:
                self.journal.delivery_done(d)
                continue
            first = d.first_attempt or now
            give_up = now - first >= cfg.give_up_s
            self.journal.delivery_failed(d, error, None if give_up else now + cfg.backoff(d.attempts + 1))
            log.warning("series %s: %s not delivered (attempt %d): %s%s", row.key, d.kind, d.attempts + 1, error,
                        "; giving up" if give_up else "")
        states = {d.state for d in self.journal.deliveries(row.series_uid, row.model)}
        if states == {J.DELIVERED}:
            self.journal.set_state(row.series_uid, row.model, J.DELIVERED)
            log.info("series %s: delivered to %s", row.key, cfg.destination)
            self.purge()
        elif J.FAILED in states and J.PENDING not in states:
            reason = f"not delivered to {cfg.destination} within {cfg.give_up_s / 3600:.1f} h: " + "; ".join(
                d.last_error for d in self.journal.deliveries(row.series_uid, row.model) if d.state == J.FAILED)
            self._fail(row, reason)

    # --- disk ---------------------------------------------------------------------------------------------------
    def purge(self, force: bool = False) -> None:
        """Delete the files of the oldest finished series while the storage is over its limit (`force`: one)."""
        assert self.journal is not None
        cfg = self.config
        if not cfg.max_disk_bytes and not force:
            return
        used = folder_bytes(cfg.incoming) + folder_bytes(cfg.results)
        finished = [r for r in self.journal.all_series(J.DELIVERED, J.DONE, J.FAILED) if not r.purged]
        finished.sort(key=lambda r: (r.state == J.FAILED, r.updated))  # delivered first: failed ones are evidence
        for r in finished:
            if not force and used <= cfg.max_disk_bytes:
                break
            freed = 0
            for folder in (cfg.incoming / r.key, cfg.results / f"{r.key}-{r.model}"):
                freed += folder_bytes(folder)
                shutil.rmtree(folder, ignore_errors=True)
            used -= freed
            self.journal.mark_purged(r.series_uid, r.model)
            self.journal.event(r.key, "purged", f"{r.state} series purged: {freed / 1e6:.1f} MB freed")
            log.info("series %s: purged (%.1f MB)", r.key, freed / 1e6)
            force = False


def lock_is_held(storage: Path) -> bool:
    """True when a running node holds `storage` (for the status command)."""
    path = Path(storage) / "node.lock"
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False

