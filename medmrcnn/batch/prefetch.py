"""Read ahead: load the next studies in worker threads while the model computes on the current one.

Reading DICOM (file I/O, JPEG decoding) and NIfTI (gzip) releases the GIL, as does torch compute, so threads overlap
them without copying volumes between processes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Loaded(Generic[T, R]):
    """One item and what loading it gave: `value`, or the `error` it raised; `seconds` spent loading."""

    item: T
    value: R | None
    error: BaseException | None
    seconds: float


def _timed(load: Callable[[T], R], item: T) -> Loaded[T, R]:
    start = time.perf_counter()
    try:
        return Loaded(item, load(item), None, time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001 - one bad study must not stop the batch; the caller reports it
        return Loaded(item, None, e, time.perf_counter() - start)


def prefetch(items: Iterable[T], load: Callable[[T], R], depth: int = 1) -> Iterator[Loaded[T, R]]:
    """Yield `Loaded` for each item in order, with up to `depth` items being loaded ahead in threads.

    `depth=0` loads each item only when it is asked for (no threads). Memory holds at most `depth` loaded items
    besides the one being consumed. Pending loads are cancelled when the consumer stops early.
    """
    if depth <= 0:
        for item in items:
            yield _timed(load, item)
        return
    pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="medmrcnn-read")
    pending: deque[Future[Loaded[T, R]]] = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(_timed, load, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
