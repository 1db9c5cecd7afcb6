"""DICOM Segmentation (DICOM-SEG) export and import with highdicom.

`write_seg` turns a prediction or a label map on a DICOM reference series into a SEG that viewers (OHIF, 3D Slicer)
and PACS accept; `read_seg` reads a SEG back into label maps on the referenced series' grid; `load_label_config`
gives each class its SNOMED CT concept and colour. See docs/dicom-seg.md.
"""

from medmrcnn.dicomseg.concepts import LabelConfig, SegmentConcept, load_label_config
from medmrcnn.dicomseg.reader import ImportedSegmentation, SegmentInfo, read_seg
from medmrcnn.dicomseg.writer import write_seg

__all__ = [
    "ImportedSegmentation", "LabelConfig", "SegmentConcept", "SegmentInfo", "load_label_config", "read_seg",
    "write_seg",
]
