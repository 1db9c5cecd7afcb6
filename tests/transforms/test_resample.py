"""In-plane resampling to the network's pixel size: sizes, field of view, and where positions move."""

import torch

from medmrcnn.transforms import inplane_size, resize_slices


def test_size_keeps_the_field_of_view():
    assert inplane_size((512, 512), (0.7, 0.7), 1.4) == (256, 256)
    assert inplane_size((512, 400), (0.7, 0.9), 1.4) == (256, 257)
    assert inplane_size((100, 80), (1.0, 1.0), None) == (100, 80)
    assert inplane_size((3, 3), (0.1, 0.1), 5.0) == (1, 1)


def test_resize_aligns_pixel_edges_and_keeps_batches_on_their_device():
    images = torch.zeros(2, 3, 64, 48)
    images[:, :, 16:32, 8:24] = 1.0  # a square from (8, 16) to (24, 32) px, edges exclusive
    out = resize_slices(images, (32, 24))
    assert out.shape == (2, 3, 32, 24) and out.device == images.device
    # Halving maps edges to edges: the square becomes (4, 8)-(12, 16) exactly.
    assert torch.equal(out[0, 0] > 0.5, torch.nn.functional.pad(torch.ones(8, 8), (4, 12, 8, 16)) > 0.5)
    assert resize_slices(images, (64, 48)) is images
    up = resize_slices(images, (128, 96))
    assert torch.equal(up[0, 0] > 0.5, torch.nn.functional.pad(torch.ones(32, 32), (16, 48, 32, 64)) > 0.5)
