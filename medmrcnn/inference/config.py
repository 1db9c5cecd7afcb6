"""`PredictorConfig`: every choice the slice-wise predictor makes, validated when built."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

LINK_METRICS = ("iou", "overlap")
TTA_FLIPS = ("x", "y")


@dataclass
class PredictorConfig:
    """How a volume is turned into 3D instances (docs/inference.md explains each step).

    Attributes:
        intensity: intensity preset ("ct:liver", "ct:60,200", "percentile", "auto"); None = the model's own preset.
        score_threshold: per-slice detections scoring below this are dropped.
        mask_threshold: mask probability at or above which a pixel belongs to an instance.
        duplicate_overlap: a detection whose mask lies at least this much (intersection / its own area) inside a
            higher-scoring mask of the same class on the same slice is a duplicate and dropped (1.0: only exact
            subsets).
        batch_size: slices per forward pass; None = automatic (from free GPU memory on CUDA, 4 on CPU).
        amp: float16 autocast on CUDA (ignored on CPU).
        skip_empty_slices: slices whose normalised intensities never exceed `empty_slice_max` (e.g. all air under a CT
            window) are not run through the network.
        empty_slice_max: see `skip_empty_slices`; 0.0 means "nothing above the window floor / 1st percentile".
        link_metric: "iou" (intersection / union) or "overlap" (intersection / smaller area, robust where a
            lesion shrinks towards its poles) between masks on adjacent slices.
        link_threshold: minimum link_metric for two same-class masks on adjacent slices to be one 3D instance.
        link_gap_mm: an instance ending on one slice is linked to one starting after missed slices spanning at most
            this many mm (a lesion the detector missed on one 2.5-5 mm slice stays one instance); 0 disables it.
        join_branches: True: a mask left unmatched by the one-to-one matching joins the 3D instance of its best
            overlapping neighbour (a cross-section that splits or merges stays one object); False: it starts a
            separate instance.
        cell_linking: link a z-stack's per-slice masks as cells (inference.linking.split_chain): one-to-one links
            only (no branch joining, no gap bridging), chains cut at necks of their diameter profile and where they
            are longer along z, in the stack's physical z step, than `cell_max_elongation` times their widest
            section. None = on for PNG / TIFF images (read by medmrcnn.io.raster), off for DICOM / NIfTI.
        cell_max_elongation, cell_neck_ratio: see inference.linking.CellShape.
        min_voxels: 3D instances with fewer voxels are removed.
        min_volume_mm3: 3D instances smaller than this volume are removed (both limits apply).
        tta_flips: test-time flips merged with the plain prediction: () none, ("x",), ("y",) or ("x", "y").
        tta_iou: box IoU at which detections from different flips are the same object.
        image_key: key of the image in MONAI dictionaries.
        tile_size: slices larger than this (px, either side) are predicted in overlapping tiles of this size
            (medmrcnn.inference.tiling; memory bounded by the tile), and a crowded slice or tile (predictor.crowded:
            dense cells) is predicted again in tiles of half its side; None = never tile.
        tile_overlap: px shared by neighbouring tiles; should exceed the largest object's diameter.
        class_score_thresholds, class_mask_thresholds: per class name, thresholds replacing `score_threshold` /
            `mask_threshold` for that class (as `medmrcnn calibrate` stores them in a checkpoint).
        wall_classes: names of the model's classes that are walls (a myocardium, a bladder wall, the cortical
            ribbon, a lesion's enhancing rim); their instances are measured for wall thickness.
    """

    intensity: str | None = None
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    duplicate_overlap: float = 0.5
    batch_size: int | None = None
    amp: bool = True
    skip_empty_slices: bool = True
    empty_slice_max: float = 0.0
    link_metric: str = "overlap"
    link_threshold: float = 0.3
    link_gap_mm: float = 5.0
    join_branches: bool = True
    cell_linking: bool | None = None
    cell_max_elongation: float = 2.0
    cell_neck_ratio: float = 0.9
    min_voxels: int = 10
    min_volume_mm3: float = 0.0
    tta_flips: tuple[str, ...] = ()
    tta_iou: float = 0.5
    image_key: str = "image"
    tile_size: int | None = 2048
    tile_overlap: int = 128
    class_score_thresholds: dict[str, float] = field(default_factory=dict)
    class_mask_thresholds: dict[str, float] = field(default_factory=dict)
    wall_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.tta_flips = tuple(self.tta_flips)
        self.wall_classes = tuple(self.wall_classes)
        for name, table in (("class_score_thresholds", self.class_score_thresholds),
                            ("class_mask_thresholds", self.class_mask_thresholds)):
            if any(not 0.0 < float(v) <= 1.0 for v in table.values()):
                raise ValueError(f"{name} must hold thresholds in (0, 1]; got {table}")
        for name in ("score_threshold", "mask_threshold", "duplicate_overlap", "link_threshold", "tta_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if self.mask_threshold <= 0.0:
            raise ValueError("mask_threshold must be above 0 (0 would make every box pixel foreground)")
        if not self.link_gap_mm >= 0.0:
            raise ValueError(f"link_gap_mm must be >= 0 mm; got {self.link_gap_mm}")
        if self.link_threshold <= 0.0 or self.duplicate_overlap <= 0.0:
            raise ValueError("link_threshold and duplicate_overlap must be above 0 (0 would join masks that do not "
                             "touch)")
        if self.tile_size is not None and (self.tile_overlap < 0 or self.tile_size <= 2 * self.tile_overlap):
            raise ValueError(f"tile_size ({self.tile_size}) must exceed twice tile_overlap ({self.tile_overlap}) "
                             "and tile_overlap be >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (auto); got {self.batch_size}")
        if self.link_metric not in LINK_METRICS:
            raise ValueError(f"link_metric must be one of {LINK_METRICS}; got {self.link_metric!r}")
        if not self.cell_max_elongation > 0.0 or not 0.0 < self.cell_neck_ratio <= 1.0:
            raise ValueError(f"cell_max_elongation must be > 0 and cell_neck_ratio in (0, 1]; got "
                             f"{self.cell_max_elongation}, {self.cell_neck_ratio}")
        if self.min_voxels < 0 or self.min_volume_mm3 < 0:
            raise ValueError("min_voxels and min_volume_mm3 must be >= 0")
        if not set(self.tta_flips) <= set(TTA_FLIPS) or len(set(self.tta_flips)) != len(self.tta_flips):
            raise ValueError(f"tta_flips must be distinct axes from {TTA_FLIPS}; got {self.tta_flips}")
        if self.intensity is not None:
            from medmrcnn.transforms import resolve_intensity

            resolve_intensity(self.intensity, "CT")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (what reports record)."""
        d = asdict(self)
        d["tta_flips"] = list(self.tta_flips)
        d["wall_classes"] = list(self.wall_classes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PredictorConfig":
        """Inverse of to_dict; unknown keys are an error so typos do not pass silently."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown predictor config keys: {sorted(unknown)}")
        return cls(**d)


def calibrated_config(thresholds: dict[str, Any] | None, **overrides: Any) -> PredictorConfig:
    """PredictorConfig starting from a checkpoint's calibrated thresholds (ModelConfig.extra["thresholds"], written by
    `medmrcnn calibrate`), then `overrides` (what the user asked for explicitly wins, and a user score threshold
    replaces the per-class ones too)."""
    kw: dict[str, Any] = {}
    if thresholds:
        kw = {"score_threshold": thresholds["score"], "mask_threshold": thresholds["mask"],
              "class_score_thresholds": {n: t["score"] for n, t in thresholds.get("per_class", {}).items()},
              "class_mask_thresholds": {n: t["mask"] for n, t in thresholds.get("per_class", {}).items()}}
        if "score_threshold" in overrides:
            kw["class_score_thresholds"] = {}
    return PredictorConfig(**{**kw, **overrides})
