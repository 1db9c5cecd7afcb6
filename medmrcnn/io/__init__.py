"""Loading and saving volumes: DICOM series and enhanced multi-frame objects, NIfTI, NRRD/MHA/MHD, PNG/TIFF.

Everything returns `medmrcnn.Volume` on the data contract (docs/data-contract.md); decisions on gaps, tilt,
mixed series and bad input are in docs/loading.md. MONAI interop lives in `medmrcnn.io.monai` (imported lazily).
"""

from medmrcnn.io.loading import load_volume, load_volumes, read_series, save_volume, scan, select_series
from medmrcnn.io.series import SeriesInfo

__all__ = ["SeriesInfo", "load_volume", "load_volumes", "read_series", "save_volume", "scan", "select_series"]
