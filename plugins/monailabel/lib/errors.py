"""medmrcnn's typed errors as HTTP answers, so a client gets one line saying what is wrong (not a bare 500)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException

from medmrcnn.errors import (
    CheckpointError,
    DataError,
    ExportError,
    GeometryMismatchError,
    LabelConfigError,
    MedMRCNNError,
    VolumeLoadError,
)

log = logging.getLogger(__name__)

# Unreadable or inconsistent input is the client's to fix (422); a broken checkpoint is the server's (503).
_STATUS = (
    (VolumeLoadError, 422),
    (GeometryMismatchError, 422),
    (DataError, 422),
    (LabelConfigError, 400),
    (ExportError, 422),
    (CheckpointError, 503),
    (MedMRCNNError, 400),
)


def http_error(error: MedMRCNNError | ValueError) -> HTTPException:
    """The HTTPException (status + one-line detail) for a medmrcnn error or a bad request option (ValueError: 400)."""
    status = next((code for cls, code in _STATUS if isinstance(error, cls)), 400)
    return HTTPException(status_code=status, detail=str(error).splitlines()[0] if str(error) else type(error).__name__)


def not_found(what: str) -> HTTPException:
    """404 with a one-line detail."""
    return HTTPException(status_code=404, detail=what)


@contextmanager
def as_http_errors(action: str, options: bool = False) -> Iterator[None]:
    """Turn medmrcnn errors raised inside the block (and ValueErrors when it parses `options`) into HTTP errors."""
    catch: tuple[type[Exception], ...] = (MedMRCNNError, ValueError) if options else (MedMRCNNError,)
    try:
        yield
    except catch as e:
        err = http_error(e)
        log.warning("%s refused (%d): %s", action, err.status_code, err.detail)
        raise err from None
