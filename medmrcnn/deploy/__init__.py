"""A DICOM node for hospital deployment: receives series from a PACS (C-STORE), segments each complete series with
`medmrcnn infer`'s own code path and sends the DICOM-SEG and SR measurement report back, crash-safe and journalled
(`medmrcnn serve-dicom`; docs/deployment.md).
"""

from medmrcnn.deploy.config import Destination, NodeConfig
from medmrcnn.deploy.node import DicomNode, NodeError
from medmrcnn.deploy.status import node_status

__all__ = ["Destination", "DicomNode", "NodeConfig", "NodeError", "node_status"]
