"""3D instances from per-slice instances: optimal matching of overlapping masks on adjacent slices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from medmrcnn.inference.config import LINK_METRICS
from medmrcnn.structures import SliceInstances

# Subtracted per rank so that among equal overlaps the matching prefers earlier (higher-scoring) detections.
_TIE_BREAK = 1e-9


@dataclass
class LinkedInstance:
    """One 3D instance: the per-slice instances it is made of.

    Attributes:
        members: (z, i) pairs, i indexing slices[z], sorted by z then i.
        class_id: class of every member (linking never joins different classes).
        scores: per-member detection scores, in `members` order.
        voxel_count: sum of the members' mask areas (before overlaps with other instances are resolved).
    """

    members: list[tuple[int, int]]
    class_id: int
    scores: list[float]
    voxel_count: int

    @property
    def slice_range(self) -> tuple[int, int]:
        """(first, last) slice index, inclusive."""
        return self.members[0][0], self.members[-1][0]


@dataclass(frozen=True)
class CellShape:
    """What one slice-wise-linked cell may look like in physical units (split_chain).

    Attributes:
        pixel_spacing_mm: (y, x) pixel size, in the same unit as the slice spacing.
        max_elongation: a cell spans at most this many times its widest cross-section's equivalent diameter
            along z (nuclei are roughly round: 2 leaves room for elongated ones and for a thick optical section).
        neck_ratio: a slice whose equivalent diameter is below this fraction of the widest cross-sections on
            both sides of it is a neck between two cells (1.0 = any dip).
    """

    pixel_spacing_mm: tuple[float, float]
    max_elongation: float = 2.0
    neck_ratio: float = 0.9


def split_chain(members: list[tuple[int, int]], slices: Sequence[SliceInstances], areas: Sequence[np.ndarray],
                slice_spacing_mm: float, shape: CellShape) -> list[list[tuple[int, int]]]:
    """Split a chain of linked masks ((z, i) sorted by z) into the convex cells it is made of.

    A convex cell's cross-section diameter is a concave function of z (Brunn-Minkowski), so a dip in the chain's
    equivalent-diameter profile (below `neck_ratio` of the widest sections on both sides) is where one cell ends and
    the next begins: the chain is cut there (between the two slices of a two-slice neck, else on the side of the
    neck whose link has the lower IoU) and both parts are checked again. And a cell is at most `max_elongation`
    times as long along z, in the stack's physical z step, as its widest section: a longer chain is cut into as
    many parts as its height holds cells as tall as it is wide, near equal spacing at the weakest links (lowest
    IoU between the masks of adjacent slices). Returns the parts, each sorted by z.
    """
    out, todo = [], [members]
    while todo:
        chain = todo.pop()
        zs = sorted({z for z, _ in chain})
        if len(zs) < 2:
            out.append(chain)
            continue
        sy, sx = shape.pixel_spacing_mm
        diameter = np.array([2.0 * np.sqrt(sum(areas[z][i] for zz, i in chain if zz == z) * sy * sx / np.pi)
                             for z in zs])
        links = np.array([_link_iou(chain, slices, areas, a, b) for a, b in zip(zs[:-1], zs[1:])])
        cut = None  # index into links: the chain is cut between zs[cut] and zs[cut + 1]
        depth = np.array([1.0] + [diameter[k] / min(diameter[:k].max(), diameter[k + 1:].max())
                                  for k in range(1, len(zs) - 1)] + [1.0])
        if depth.min() < shape.neck_ratio:
            k = int(np.argmin(depth))
            # A neck two slices deep (two cells' poles facing each other) is cut between its two slices; a
            # one-slice neck goes with the neighbour it overlaps better.
            valley = [j for j in (k - 1, k) if depth[j] < shape.neck_ratio and depth[j + 1] < shape.neck_ratio]
            if valley:
                cut = min(valley, key=lambda j: max(diameter[j], diameter[j + 1]))
            else:
                cut = k - 1 if links[k - 1] < links[k] else k
        elif (zs[-1] - zs[0]) * slice_spacing_mm > shape.max_elongation * diameter.max():
            # Cells as tall as they are wide, stacked: as many as the chain's height holds, at their weakest links.
            parts = min(max(2, round(len(zs) * slice_spacing_mm / diameter.max())), len(zs))
            cuts = _stack_cuts(links, parts)
            out += [[m for m in chain if zs[a] <= m[0] <= zs[b]]
                    for a, b in zip([0] + [c + 1 for c in cuts], cuts + [len(zs) - 1])]
            continue
        if cut is None:
            out.append(chain)
            continue
        todo += [[m for m in chain if m[0] > zs[cut]], [m for m in chain if m[0] <= zs[cut]]]
    return sorted(out, key=lambda c: c[0])


def _stack_cuts(links: np.ndarray, parts: int) -> list[int]:
    """Indices of `parts - 1` links that cut a chain into runs of about equal length, each moved by up to one link
    towards the weakest link (lowest IoU) nearby; increasing."""
    n = len(links) + 1
    cuts: list[int] = []
    for p in range(1, parts):
        ideal = round(p * n / parts) - 1
        lo, hi = (cuts[-1] + 1 if cuts else 0), len(links) - (parts - p)  # leave a link for each later cut
        near = [k for k in range(max(lo, ideal - 1), min(hi, ideal + 1) + 1)] or [min(max(lo, ideal), hi)]
        cuts.append(min(near, key=lambda k: (round(float(links[k]), 6), abs(k - ideal))))
    return cuts


def _link_iou(chain: list[tuple[int, int]], slices: Sequence[SliceInstances], areas: Sequence[np.ndarray],
              za: int, zb: int) -> float:
    """IoU of the chain's masks on slice za with its masks on slice zb."""
    ia, ib = [i for z, i in chain if z == za], [i for z, i in chain if z == zb]
    inter = float(slices[za][ia].intersection(slices[zb][ib]).sum())
    union = float(areas[za][ia].sum() + areas[zb][ib].sum()) - inter
    return inter / union if union > 0 else 0.0


class _DisjointSets:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:  # path compression keeps long chains cheap
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def mask_similarity(a: SliceInstances, b: SliceInstances, metric: str = "overlap") -> np.ndarray:
    """float64[N, M] similarity of masks on two slices of the same grid; 0 between different classes.

    metric: "iou" = intersection / union; "overlap" = intersection / smaller area (1 when one mask lies
    inside the other, so a lesion that shrinks towards its pole stays linked).
    """
    if metric not in LINK_METRICS:
        raise ValueError(f"metric must be one of {LINK_METRICS}; got {metric!r}")
    inter = a.intersection(b).astype(np.float64)
    area_a, area_b = a.area()[:, None].astype(np.float64), b.area()[None, :].astype(np.float64)
    if metric == "iou":
        denom = area_a + area_b - inter
    else:
        denom = np.minimum(area_a, area_b)
    sim = np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)
    sim[a.labels[:, None] != b.labels[None, :]] = 0.0
    return sim


def _bridge_gaps(slices: Sequence[SliceInstances], distance: int, metric: str, threshold: float,
                 offsets: np.ndarray, sets: _DisjointSets, has_next: np.ndarray, has_prev: np.ndarray) -> None:
    """Join instances ending on slice z with instances starting on slice z + distance (optimal matching)."""
    for z in range(len(slices) - distance):
        a, b = slices[z], slices[z + distance]
        ends = np.flatnonzero(~has_next[offsets[z]:offsets[z] + len(a)])
        starts = np.flatnonzero(~has_prev[offsets[z + distance]:offsets[z + distance] + len(b)])
        if not len(ends) or not len(starts):
            continue
        sim = mask_similarity(a, b, metric)[np.ix_(ends, starts)]
        valid = sim >= threshold
        if not valid.any():
            continue
        rows, cols = linear_sum_assignment(np.where(valid, sim, 0.0), maximize=True)
        for i, j in zip(rows, cols):
            if valid[i, j]:
                sets.union(offsets[z] + int(ends[i]), offsets[z + distance] + int(starts[j]))
                has_next[offsets[z] + int(ends[i])] = True
                has_prev[offsets[z + distance] + int(starts[j])] = True


def link_instances_across_slices(
    slices: Sequence[SliceInstances],
    *,
    metric: str = "overlap",
    threshold: float = 0.3,
    join_branches: bool = True,
    min_voxels: int = 0,
    min_volume_mm3: float = 0.0,
    voxel_volume_mm3: float = 1.0,
    max_gap_mm: float = 0.0,
    slice_spacing_mm: float = 1.0,
    cell_shape: CellShape | None = None,
) -> list[LinkedInstance]:
    """Join per-slice instances of adjacent slices into 3D instances.

    Between slices z and z+1, masks of the same class with `mask_similarity` >= `threshold` are candidate links;
    an optimal one-to-one matching (Hungarian, scipy's linear_sum_assignment, maximising total similarity; ties go
    to the earlier, higher-scoring detection) links chains. A mask the matching leaves unpaired although it
    overlaps a neighbour is a split or a merge of a cross-section: with `join_branches` it joins that neighbour's
    3D instance (its best-overlapping one), otherwise it starts (or ends) an instance of its own.

    Args:
        slices: one SliceInstances per slice, in z order.
        metric, threshold: see mask_similarity.
        join_branches: see above.
        min_voxels, min_volume_mm3: 3D instances below either size are removed as fragments.
        voxel_volume_mm3: volume of one voxel, for min_volume_mm3.
        max_gap_mm, slice_spacing_mm: a mask whose instance ends on slice z (nothing linked on z + 1) is matched,
            the same way, with masks starting an instance on slice z + 1 + g, for g missed slices spanning at most
            `max_gap_mm` (g x slice_spacing_mm): a lesion the detector missed on one slice stays one instance. The
            missed slices are not painted.
        cell_shape: split linked chains that cannot be one convex cell (split_chain); None = keep every chain.
    Returns:
        3D instances ordered by first slice, then by their first member's index on that slice.
    """
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in slices])]).astype(int)
    sets = _DisjointSets(int(offsets[-1]))
    has_next = np.zeros(int(offsets[-1]), dtype=bool)  # linked to a mask on the following slice
    has_prev = np.zeros(int(offsets[-1]), dtype=bool)
    for z in range(len(slices) - 1):
        a, b = slices[z], slices[z + 1]
        if not len(a) or not len(b):
            continue
        sim = mask_similarity(a, b, metric)
        valid = sim >= threshold
        if not valid.any():
            continue
        rank = np.arange(len(a))[:, None] + np.arange(len(b))[None, :]
        gain = np.where(valid, sim - _TIE_BREAK * rank, 0.0)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        matched = [(i, j) for i, j in zip(rows, cols) if valid[i, j]]
        for i, j in matched:
            sets.union(offsets[z] + i, offsets[z + 1] + j)
        has_next[offsets[z] + np.flatnonzero(valid.any(axis=1))] = True
        has_prev[offsets[z + 1] + np.flatnonzero(valid.any(axis=0))] = True
        if join_branches:
            paired_a = {i for i, _ in matched}
            paired_b = {j for _, j in matched}
            for i in range(len(a)):
                if i not in paired_a and valid[i].any():
                    sets.union(offsets[z] + i, offsets[z + 1] + int(np.argmax(sim[i])))
            for j in range(len(b)):
                if j not in paired_b and valid[:, j].any():
                    sets.union(offsets[z + 1] + j, offsets[z] + int(np.argmax(sim[:, j])))

    max_missed = int(np.floor(max_gap_mm / slice_spacing_mm + 1e-6)) if slice_spacing_mm > 0 else 0
    for missed in range(1, max_missed + 1):
        _bridge_gaps(slices, missed + 1, metric, threshold, offsets, sets, has_next, has_prev)

    groups: dict[int, list[tuple[int, int]]] = {}
    for z, s in enumerate(slices):
        for i in range(len(s)):
            groups.setdefault(sets.find(offsets[z] + i), []).append((z, i))
    areas = [s.area() for s in slices]
    chains = list(groups.values())  # dict order = order of first member, i.e. by (z, i)
    if cell_shape is not None:
        chains = [part for members in chains for part in split_chain(members, slices, areas, slice_spacing_mm,
                                                                     cell_shape)]
    out = []
    for members in chains:
        count = int(sum(areas[z][i] for z, i in members))
        if count < min_voxels or count * voxel_volume_mm3 < min_volume_mm3:
            continue
        z0, i0 = members[0]
        out.append(LinkedInstance(
            members=members, class_id=int(slices[z0].labels[i0]),
            scores=[float(slices[z].scores[i]) for z, i in members], voxel_count=count,
        ))
    return out
