"""How many slices go through the network at once."""

from __future__ import annotations

import torch

from medmrcnn.modeling.config import ModelConfig

CPU_BATCH = 4  # bigger CPU batches do not run faster; they only hold more memory
MAX_BATCH = 64
# Peak activation bytes per input pixel of a ResNet-50/FPN-256 Mask R-CNN at inference in float32: about 100
# values per input pixel are alive at once (stride-4 stem and stage 1, FPN levels, RPN head), times 4 bytes,
# with a 3x margin for allocator fragmentation and cuDNN workspaces. An estimate, not a measurement: it only has
# to keep the automatic batch safely inside the free memory. Scaled by FPN width.
_BYTES_PER_PIXEL_FP32 = 1200
_FIXED_PER_SLICE = 64 * 2**20  # RPN / RoI-head buffers that do not grow with the slice size


def batch_size_for_memory(free_bytes: int, size_yx: tuple[int, int], model_cfg: ModelConfig, amp: bool,
                          headroom: float = 0.5) -> int:
    """Slices per batch that fit in `headroom` of `free_bytes` of device memory, between 1 and MAX_BATCH."""
    width = max(model_cfg.fpn_channels, 64) / 256
    per_pixel = _BYTES_PER_PIXEL_FP32 * width * (0.5 if amp else 1.0) * max(1.0, model_cfg.in_channels / 3)
    per_slice = size_yx[0] * size_yx[1] * per_pixel + _FIXED_PER_SLICE
    return int(max(1, min(MAX_BATCH, free_bytes * headroom // per_slice)))


def auto_batch_size(device: torch.device, size_yx: tuple[int, int], model_cfg: ModelConfig, amp: bool) -> int:
    """CPU_BATCH on the CPU; on CUDA, what the currently free memory holds (`batch_size_for_memory`)."""
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    return batch_size_for_memory(free, size_yx, model_cfg, amp)
