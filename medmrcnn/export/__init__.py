"""Writers for prediction results: NIfTI label maps, JSON report, CSV table, PNG overlay montage, label images
(TIFF / PNG), and for microscopy: Fiji ROI zip, QuPath GeoJSON outlines and the per-cell table in microns.

DICOM-SEG lives in `medmrcnn.dicomseg`. Every writer is atomic (the file appears complete or not at all).
"""

from medmrcnn.export.celltable import write_cell_table
from medmrcnn.export.labelimage import write_label_image
from medmrcnn.export.nifti import write_nifti
from medmrcnn.export.outlines import write_geojson, write_imagej_rois
from medmrcnn.export.overlay import write_overlay_png
from medmrcnn.export.report import REPORT_SCHEMA, report_dict, write_csv, write_json_report

__all__ = ["REPORT_SCHEMA", "report_dict", "write_cell_table", "write_csv", "write_geojson", "write_imagej_rois",
           "write_json_report", "write_label_image", "write_nifti", "write_overlay_png"]
