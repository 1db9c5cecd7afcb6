"""Active learning: pick the unlabeled image the model is least sure about (lowest mean instance score)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.models import ModelSlot

log = logging.getLogger(__name__)

# Image-info key under which a score is kept, with the checkpoint it was measured with (stale after fine-tuning).
INFO_KEY = "medmrcnn_uncertainty"


def image_uncertainty(result: Any) -> float:
    """1 - mean of the instances' best slice scores, in [0, 1]; 1.0 when nothing was detected.

    Low-scoring (borderline) detections raise it; an image where the model finds nothing it is sure of scores 1.
    """
    scores = [float(rec.score_max) for rec in result.instances]
    return round(1.0 - sum(scores) / len(scores), 6) if scores else 1.0


class LowestConfidence(Strategy):
    """Next image to annotate: the unlabeled one with the highest `image_uncertainty`.

    Each image is scored by the served model of its dimension (volumes / 2D images), with a low detection threshold
    so borderline detections count. Scores are kept in the datastore's image info with the checkpoint they were
    measured with; each request scores at most `max_images` new images (random order), so a large datastore is
    covered over successive requests without a long wait.
    """

    def __init__(self, slots: Sequence[ModelSlot], threshold: float = 0.1, max_images: int = 8, seed: int = 0) -> None:
        super().__init__("Unlabeled image with the lowest mean instance score (model uncertainty)")
        self.slots = {slot.dimension: slot for slot in slots}
        self.threshold = threshold
        self.max_images = max_images
        self._rng = random.Random(seed)

    def _score(self, image_uri: str) -> tuple[float, str] | None:
        """(uncertainty, checkpoint stamp) of one image; None when no served model handles its dimension."""
        from medmrcnn.inference import PredictorConfig, SliceWisePredictor
        from medmrcnn.io import load_volume

        volume = load_volume(image_uri)
        slot = self.slots.get(2 if volume.is_2d else 3)
        if slot is None or not slot.is_available():
            return None
        loaded = slot.load()
        predictor = SliceWisePredictor(loaded.model, loaded.config, PredictorConfig(score_threshold=self.threshold))
        result = predictor.predict(volume)
        return image_uncertainty(result), self._stamp(slot)

    @staticmethod
    def _stamp(slot: ModelSlot) -> str:
        loaded = slot.load()
        return f"{slot.name}:{loaded.checkpoint}@{loaded.stamp[0]}"

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        """{"id": image id, "uncertainty": score, ...} of the chosen image, or None when there is none to propose."""
        from medmrcnn.errors import MedMRCNNError

        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        current = {self._stamp(s) for s in self.slots.values() if s.is_available()}
        scores: dict[str, float] = {}
        unscored = []
        for image_id in images:
            kept = datastore.get_image_info(image_id).get(INFO_KEY) or {}
            if kept.get("checkpoint") in current:
                scores[image_id] = float(kept["uncertainty"])
            else:
                unscored.append(image_id)
        self._rng.shuffle(unscored)
        for image_id in unscored[: self.max_images]:
            try:
                measured = self._score(datastore.get_image_uri(image_id))
            except MedMRCNNError as e:
                log.warning("active learning: %s skipped (%s)", image_id, e)
                continue
            if measured is None:
                continue
            scores[image_id] = measured[0]
            datastore.update_image_info(image_id, {INFO_KEY: {"checkpoint": measured[1], "uncertainty": measured[0]}})
        if not scores:
            return None
        chosen = max(sorted(scores), key=lambda k: scores[k])
        log.info("active learning: %s (uncertainty %.3f; %d of %d scored)", chosen, scores[chosen], len(scores),
                 len(images))
        return {"id": chosen, "uncertainty": scores[chosen], "scored": len(scores), "unlabeled": len(images)}
