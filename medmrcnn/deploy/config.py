"""Settings of the DICOM node: who it is on the network, where results go, how long it waits, how much disk it uses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # 16 printable characters, no backslash (PS3.5 AE VR)


def check_ae_title(title: str, what: str = "AE title") -> str:
    """`title` stripped, or ValueError saying why it is not a valid AE title."""
    stripped = title.strip()
    if not _AE_TITLE.match(stripped):
        raise ValueError(f"{what} {title!r} must be 1-16 printable characters without a backslash")
    return stripped


@dataclass(frozen=True)
class Destination:
    """The AE results are C-STOREd to (usually the PACS)."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """From "AETITLE@host:port"; ValueError says what is wrong."""
        m = re.match(r"^([^@]+)@(.+):(\d+)$", text.strip())
        if not m:
            raise ValueError(f"destination {text!r} must look like AETITLE@host:port (e.g. PACS@10.0.0.5:104)")
        port = int(m.group(3))
        if not 0 < port < 65536:
            raise ValueError(f"destination port {port} is not 1-65535")
        return cls(check_ae_title(m.group(1), "destination AE title"), m.group(2), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass
class NodeConfig:
    """How the node runs (docs/deployment.md).

    Attributes:
        storage: folder of the queue (incoming/), results (results/) and the journal (journal.sqlite).
        destination: where SEG and SR go.
        ae_title, host, port: the node's own AE title and listening address.
        allowed_callers: calling AE titles accepted (empty: any).
        quiet_s: a series is complete after this many seconds without a new instance.
        retry_initial_s, retry_max_s: delivery back-off: first wait, doubling up to this.
        give_up_s: a result not delivered after this long is failed.
        max_disk_bytes: queue + results above this: the oldest finished series' files are purged (0: no limit).
        min_free_bytes: below this much free disk, new instances are refused with "out of resources".
        max_associations: simultaneous associations served.
    """

    storage: Path
    destination: Destination
    ae_title: str = "MEDMRCNN"
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_callers: tuple[str, ...] = ()
    quiet_s: float = 30.0
    retry_initial_s: float = 10.0
    retry_max_s: float = 600.0
    give_up_s: float = 72 * 3600.0
    max_disk_bytes: int = 0
    min_free_bytes: int = 1 << 30
    max_associations: int = 10
    poll_s: float = field(default=0.5, repr=False)

    def __post_init__(self) -> None:
        self.storage = Path(self.storage)
        self.ae_title = check_ae_title(self.ae_title)
        self.allowed_callers = tuple(check_ae_title(a, "allowed calling AE title") for a in self.allowed_callers)
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not 1-65535")
        if self.quiet_s < 0 or self.retry_initial_s <= 0 or self.retry_max_s < self.retry_initial_s:
            raise ValueError("quiet time must be >= 0 and the retry waits > 0 (maximum >= initial)")
        if self.max_associations < 1:
            raise ValueError("max associations must be >= 1")

    @property
    def incoming(self) -> Path:
        """The queue of received instances, one folder per series."""
        return self.storage / "incoming"

    @property
    def results(self) -> Path:
        """Segmentation outputs, one folder per series and model."""
        return self.storage / "results"

    @property
    def journal_path(self) -> Path:
        """The SQLite journal."""
        return self.storage / "journal.sqlite"

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failed attempts (doubling, capped)."""
        return min(self.retry_max_s, self.retry_initial_s * 2 ** max(0, attempts - 1))
