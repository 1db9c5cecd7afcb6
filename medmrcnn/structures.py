"""Small structure types shared by inference, linking and export (see docs/data-contract.md for conventions)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass
class SliceInstances:
    """Instances found on one 2D slice, each mask stored cropped to its own box (compact, never full-frame).

    Attributes:
        image_size: (height, width) of the slice in pixels.
        boxes: int64[N, 4] xyxy px with exclusive x1/y1: the window of each mask, tight around its pixels.
        scores: float32[N] detection scores in [0, 1].
        labels: int64[N] class ids 1..C.
        masks: N bool arrays; masks[i] has shape (y1 - y0, x1 - x0) of boxes[i].
    """

    image_size: tuple[int, int]
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    masks: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.boxes = np.asarray(self.boxes, dtype=np.int64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if not len(self.scores) == len(self.labels) == len(self.masks) == n:
            raise ValueError(
                f"SliceInstances: {n} boxes, {len(self.scores)} scores, {len(self.labels)} labels, "
                f"{len(self.masks)} masks"
            )
        h, w = self.image_size
        for b, m in zip(self.boxes, self.masks):
            if m.shape != (b[3] - b[1], b[2] - b[0]) or b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
                raise ValueError(f"SliceInstances: mask {m.shape} does not fit box {b.tolist()} in image {h}x{w}")

    @classmethod
    def from_label_image(cls, instances: np.ndarray, classes: dict[int, int],
                         scores: dict[int, float] | None = None) -> "SliceInstances":
        """Compact instances of a (y, x) instance-id image; `classes` maps id -> class id (other ids are ignored)."""
        boxes, labels, masks, kept_scores = [], [], [], []
        for i, sl in enumerate(ndimage.find_objects(instances), start=1):
            if sl is None or i not in classes:
                continue
            boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
            masks.append(instances[sl] == i)
            labels.append(classes[i])
            kept_scores.append(1.0 if scores is None else scores[i])
        return cls(instances.shape, np.array(boxes).reshape(-1, 4), kept_scores, labels, masks)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Sequence[int] | np.ndarray | slice) -> "SliceInstances":
        """The instances selected by an index array, boolean mask or slice, all fields together."""
        idx = np.arange(len(self))[index]
        return SliceInstances(self.image_size, self.boxes[idx], self.scores[idx], self.labels[idx],
                              [self.masks[i] for i in idx])

    def area(self) -> np.ndarray:
        """int64[N] pixel count of each mask."""
        return np.array([int(m.sum()) for m in self.masks], dtype=np.int64)

    def full_mask(self, i: int) -> np.ndarray:
        """bool (height, width) mask of instance i on the whole slice (for display and tests, not bulk use)."""
        out = np.zeros(self.image_size, dtype=bool)
        x0, y0, x1, y1 = self.boxes[i]
        out[y0:y1, x0:x1] = self.masks[i]
        return out

    def intersection(self, other: "SliceInstances") -> np.ndarray:
        """int64[N, M] pixels shared by instance i of self and instance j of other (same image grid)."""
        inter = np.zeros((len(self), len(other)), dtype=np.int64)
        i, j, count = self.overlaps(other)
        inter[i, j] = count
        return inter

    def overlaps(self, other: "SliceInstances") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, pixels) of every pair (instance i of self, instance j of other) sharing at least one pixel.

        Candidate pairs come from a sweep over boxes sorted by x0, so the cost follows the pairs whose boxes
        overlap, not N x M: tens of thousands of cells of a whole-slide image stay cheap.
        """
        pairs: list[tuple[int, int, int]] = []
        if len(self) and len(other):
            order = np.argsort(other.boxes[:, 0], kind="stable")
            ox0 = other.boxes[order, 0]
            widest = int((other.boxes[:, 2] - other.boxes[:, 0]).max())
            for i, ai in enumerate(self.boxes):
                lo, hi = np.searchsorted(ox0, ai[0] - widest, "right"), np.searchsorted(ox0, ai[2], "left")
                cand = order[lo:hi]
                b = other.boxes[cand]
                x0, y0 = np.maximum(b[:, 0], ai[0]), np.maximum(b[:, 1], ai[1])
                x1, y1 = np.minimum(b[:, 2], ai[2]), np.minimum(b[:, 3], ai[3])
                for k in np.flatnonzero((x1 > x0) & (y1 > y0)):
                    j, bj = int(cand[k]), b[k]
                    ma = self.masks[i][y0[k] - ai[1]:y1[k] - ai[1], x0[k] - ai[0]:x1[k] - ai[0]]
                    mb = other.masks[j][y0[k] - bj[1]:y1[k] - bj[1], x0[k] - bj[0]:x1[k] - bj[0]]
                    n = int(np.count_nonzero(ma & mb))
                    if n:
                        pairs.append((i, j, n))
        if not pairs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        i, j, n = (np.array(c, dtype=np.int64) for c in zip(*pairs))
        return i, j, n

    @property
    def nbytes(self) -> int:
        """Host memory held by the arrays (masks included), in bytes."""
        return int(self.boxes.nbytes + self.scores.nbytes + self.labels.nbytes + sum(m.nbytes for m in self.masks))
