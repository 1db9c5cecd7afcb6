"""Writers for prediction results: NIfTI label maps, JSON report, CSV table, PNG overlay montage, 2D label images.

DICOM-SEG lives in `medmrcnn.dicomseg`. Every writer is atomic (the file appears complete or not at all).
"""

from medmrcnn.export.labelimage import write_label_image
from medmrcnn.export.nifti import write_nifti
from medmrcnn.export.overlay import write_overlay_png
from medmrcnn.export.report import REPORT_SCHEMA, report_dict, write_csv, write_json_report

__all__ = ["REPORT_SCHEMA", "report_dict", "write_csv", "write_json_report", "write_label_image", "write_nifti",
           "write_overlay_png"]
