"""The network: config, builder on torchvision parts, checkpoints, local pretrained weights."""

from medmrcnn.modeling.builder import build_model
from medmrcnn.modeling.checkpoint import load_model, read_checkpoint, save_checkpoint
from medmrcnn.modeling.config import ModelConfig
from medmrcnn.modeling.pretrained import load_torchvision_weights

__all__ = ["ModelConfig", "build_model", "load_model", "load_torchvision_weights", "read_checkpoint", "save_checkpoint"]
