"""The generator's measures: Frechet distance of judge features and the VAE round trip's PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from magic.evaluation.fidelity import frechet_distance, reconstruction_psnr


def test_frechet_distance_is_zero_for_one_set_and_the_squared_shift_for_a_moved_one():
    features = np.random.default_rng(0).normal(size=(2000, 4))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    moved = features + np.array([3.0, 0.0, 0.0, 0.0])
    assert frechet_distance(features, moved) == pytest.approx(9.0, rel=1e-6)


def test_frechet_distance_refuses_a_single_vector():
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


def test_reconstruction_psnr_of_a_one_grey_level_error_and_of_an_identical_image():
    pixels = np.random.default_rng(1).integers(1, 255, size=(16, 16, 3), dtype=np.uint8)
    original = Image.fromarray(pixels)
    off_by_one = Image.fromarray(pixels + 1)
    psnr = reconstruction_psnr([original, original], [off_by_one, original])
    assert psnr[0] == pytest.approx(20 * math.log10(255.0))  # MSE 1: 48.13 dB
    assert np.isinf(psnr[1])


def test_reconstruction_psnr_refuses_mismatched_inputs():
    image = Image.new("RGB", (16, 16))
    with pytest.raises(ValueError, match="one reconstruction per original"):
        reconstruction_psnr([image, image], [image])
    with pytest.raises(ValueError, match="resize the originals"):
        reconstruction_psnr([image], [Image.new("RGB", (8, 8))])
