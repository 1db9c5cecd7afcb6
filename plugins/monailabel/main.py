"""medmrcnn as a MONAI Label app: slice-wise Mask R-CNN instance segmentation for viewers (3D Slicer, OHIF).

    monailabel start_server --app plugins/monailabel --studies <folder or DICOMweb URL> [--conf key value ...]

Models: `medmrcnn_volume` (CT/MR volumes; default the shipped demo weights: liver, kidney, tumour) and
`medmrcnn_cells` (2D microscopy; with `--conf cells_weights`). Trainers fine-tune them on the datastore's final
labels; strategy `lowest_confidence` picks the next image to annotate. Options: docs/plugin.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monailabel.config import settings as server_settings
from monailabel.datastore.dicom import DICOMwebClientX
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.random import Random

import medmrcnn
from lib.datastore import CheckedLocalDatastore, SegDICOMWebDatastore
from lib.errors import not_found
from lib.infer import MedMRCNNInfer
from lib.interactive import InteractiveInfer
from lib.models import ModelSlot
from lib.routes import apply_server_fixes
from lib.settings import PluginSettings
from lib.strategy import LowestConfidence
from lib.train import MedMRCNNTrain

log = logging.getLogger(__name__)

VOLUME_MODEL = "medmrcnn_volume"
CELLS_MODEL = "medmrcnn_cells"
INTERACTIVE_MODEL = "medmrcnn_interactive"


class MedMRCNNApp(MONAILabelApp):
    """The MONAI Label app: thin wiring of medmrcnn's loader, predictor, exporter and trainer into MONAI Label tasks."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.settings = PluginSettings.from_conf(conf or {}, app_dir)
        s = self.settings
        self.slots = {
            VOLUME_MODEL: ModelSlot(VOLUME_MODEL, s.weights, s.model_dir, s.device, dimension=3),
            CELLS_MODEL: ModelSlot(CELLS_MODEL, s.cells_weights, s.model_dir, s.device, dimension=2),
        }
        for name, slot in self.slots.items():
            if not slot.is_available():
                log.warning("model %s is off: no checkpoint (%s)", name, slot.weights or "--conf cells_weights")
        super().__init__(app_dir=app_dir, studies=studies, conf=conf or {}, name="medmrcnn",
                         description="Slice-wise Mask R-CNN instance segmentation (tumours, organs, cells)",
                         version=medmrcnn.__version__)
        apply_server_fixes(server_settings.MONAI_LABEL_INFER_CONCURRENCY)

    def _volume_labels(self) -> Any:
        return self.slots[VOLUME_MODEL].load().labels

    def _known_values(self) -> set[int]:
        """Label values a saved label may hold: those returned by any served model."""
        return {v for slot in self.slots.values() if slot.is_available()
                for v in self.settings.labels.for_model(slot.load().labels).values()}

    def init_datastore(self) -> Datastore:
        """A folder datastore that checks uploads, or a DICOMweb one whose final labels are our DICOM-SEGs."""
        if self.studies.startswith(("http://", "https://")):
            return self.init_remote_datastore()
        return CheckedLocalDatastore(
            self.studies, extensions=server_settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=server_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=server_settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            known_values=self._known_values,
        )

    def _init_dicomweb_datastore(self) -> Datastore:
        # MONAI Label's own version downloads dcmqi from the internet for its SEG conversion; ours needs none.
        url = self.studies.rstrip("/")
        log.info("DICOMweb datastore: %s", url)
        client = DICOMwebClientX(
            url=url, qido_url_prefix=server_settings.MONAI_LABEL_QIDO_PREFIX,
            wado_url_prefix=server_settings.MONAI_LABEL_WADO_PREFIX,
            stow_url_prefix=server_settings.MONAI_LABEL_STOW_PREFIX,
        )
        cache = (server_settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
        return SegDICOMWebDatastore(
            client=client, search_filter=server_settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER, cache_path=cache,
            fetch_by_frame=server_settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
            convert_to_nifti=server_settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI,
            labels=self.settings.labels, model_labels=self._volume_labels, label_config=self.settings.label_config,
        )

    @property
    def _dicom_datastore(self) -> bool:
        return self.studies.startswith(("http://", "https://"))

    def init_infers(self) -> dict[str, InferTask]:
        """One infer task per model that has a checkpoint."""
        dicom = self._dicom_datastore
        return {
            VOLUME_MODEL: MedMRCNNInfer(self.slots[VOLUME_MODEL], self.settings, dimension=3, dicom_datastore=dicom,
                                        description="Tumours and organs in CT/MR volumes (slice-wise, linked in 3D)"),
            CELLS_MODEL: MedMRCNNInfer(self.slots[CELLS_MODEL], self.settings, dimension=2, dicom_datastore=dicom,
                                       description="Cells / nuclei in 2D microscopy images"),
            INTERACTIVE_MODEL: InteractiveInfer(self.slots[VOLUME_MODEL], self.slots[CELLS_MODEL], self.settings,
                                                dicom_datastore=dicom),
        }

    def init_trainers(self) -> dict[str, TrainTask]:
        """A fine-tuning task per model that has a checkpoint to start from."""
        return {name: MedMRCNNTrain(slot, self.settings) for name, slot in self.slots.items() if slot.is_available()}

    def init_strategies(self) -> dict[str, Strategy]:
        """Model-uncertainty sampling (each image scored by the model of its dimension) and MONAI Label's random."""
        s = self.settings
        slots = list(self.slots.values())
        return {
            "lowest_confidence": LowestConfidence(slots, s.strategy_threshold, s.strategy_max_images),
            "random": Random(),
        }

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's infer, but an image id the datastore does not know is a 404 naming that id."""
        image = request.get("image")
        store = datastore or self.datastore()
        if isinstance(image, str) and image and not os.path.exists(image) and not store.get_image_uri(image):
            raise not_found(f"image {image!r} is not in the datastore (upload it first or send the file)")
        return super().infer(request, datastore)
