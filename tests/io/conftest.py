"""Fixtures for the loading tests: small synthetic DICOM series (generated, never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmrcnn.synthetic import make_ct_phantom
from medmrcnn.synthetic.dicom_series import write_dicom_series
from medmrcnn.volume import Volume
from tests.io.helpers import rotated_affine


@pytest.fixture(scope="session")
def ct_volume() -> Volume:
    """A small CT phantom in HU (10 x 40 x 48, axial)."""
    return make_ct_phantom(shape=(10, 40, 48), spacing=(2.5, 0.8, 0.7), n_tumours=2, seed=3).volume


@pytest.fixture(scope="session")
def ct_series(tmp_path_factory, ct_volume) -> Path:
    """`ct_volume` written as a DICOM series with random file names (read-only for tests: copy before editing)."""
    out = tmp_path_factory.mktemp("ct_series")
    write_dicom_series(ct_volume, out, shuffle_names=True, seed=1)
    return out


@pytest.fixture(scope="session")
def oblique_volume(ct_volume) -> Volume:
    """`ct_volume`'s voxels on an oblique grid."""
    return Volume(ct_volume.array, rotated_affine(), modality="CT")


@pytest.fixture(scope="session")
def oblique_series(tmp_path_factory, oblique_volume) -> Path:
    out = tmp_path_factory.mktemp("oblique_series")
    write_dicom_series(oblique_volume, out, shuffle_names=True, seed=2)
    return out
