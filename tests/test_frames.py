"""Frames on the device: the crops' antialiased resize and flip, and standardisation."""
import jax
import numpy as np
import pytest
from PIL import Image

from tests.test_model import _config
from vlsa_jax.models.frames import normalize_frames, resize_crops, resize_weights


def _reference_resize(image: np.ndarray, size: int) -> np.ndarray:
    """[S, S, C] -> [size, size, C] float64 by a loop: each output pixel is the
    triangle-weighted mean of the source pixels, the triangle's half-width the shrink
    factor (at least one pixel), weights renormalised where it crosses the edge."""
    side = image.shape[0]
    scale = side / size
    support = max(scale, 1.0)

    def weights(i):
        centre = (i + 0.5) * scale
        w = np.array([max(0.0, 1 - abs(j + 0.5 - centre) / support) for j in range(side)])
        return w / w.sum()

    table = [weights(i) for i in range(size)]
    out = np.zeros((size, size, image.shape[2]))
    for i in range(size):
        for k in range(size):
            out[i, k] = np.einsum("y,x,yxc->c", table[i], table[k], image.astype(np.float64))
    return out


def _canvas(rng, crops, canvas: int, frames: int = 2) -> np.ndarray:
    """Random uint8 canvases [B, T, canvas, canvas, 3] with noise outside each crop too."""
    return rng.integers(0, 256, (len(crops), frames, canvas, canvas, 3), np.uint8)


@pytest.mark.parametrize("side,size", [(40, 16), (23, 16), (16, 16), (11, 16), (40, 40)])
def test_resize_matches_the_loop_reference(side, size):
    rng = np.random.default_rng(side * 100 + size)
    crops = np.array([[side, 0], [side, 1]], np.int32)
    canvases = _canvas(rng, crops, canvas=40)
    resized = np.asarray(jax.jit(resize_crops, static_argnums=2)(canvases, crops, size))
    assert resized.shape == (2, 2, size, size, 3) and resized.dtype == np.float32
    for b, (_, flip) in enumerate(crops):
        for t in range(2):
            want = _reference_resize(canvases[b, t, :side, :side], size)
            np.testing.assert_allclose(resized[b, t], want[:, ::-1] if flip else want,
                                       atol=1e-3)


def test_resize_agrees_with_pillow_bilinear():
    rng = np.random.default_rng(1)
    sides = np.array([64, 50, 33, 20], np.int32)
    crops = np.stack([sides, np.zeros_like(sides)], axis=1)
    canvases = _canvas(rng, crops, canvas=64, frames=1)
    resized = np.asarray(resize_crops(canvases, crops, 24))
    for b, side in enumerate(sides):
        crop = Image.fromarray(canvases[b, 0, :side, :side])
        pillow = np.asarray(crop.resize((24, 24), Image.Resampling.BILINEAR), np.float32)
        # Pillow rounds to uint8 after each of its two passes (fixed-point weights).
        difference = np.abs(resized[b, 0] - pillow)
        assert difference.max() <= 1.5 and difference.mean() < 0.5


def test_each_example_gets_its_own_side_and_flip_and_pixels_outside_its_crop_are_ignored():
    rng = np.random.default_rng(2)
    crops = np.array([[32, 0], [32, 1], [20, 0], [32, 0]], np.int32)
    canvases = _canvas(rng, crops, canvas=32)
    canvases[3] = canvases[0]
    canvases[2, :, 20:] = 255 - canvases[2, :, 20:]  # outside the 20-pixel crop only
    resized = np.asarray(resize_crops(canvases, crops, 16))
    np.testing.assert_allclose(resized[1], np.asarray(resize_crops(
        canvases[1:2], np.array([[32, 0]], np.int32), 16))[0][:, :, ::-1], atol=1e-4)
    np.testing.assert_array_equal(resized[3], resized[0])
    changed = canvases.copy()
    changed[2, :, 20:] = 0
    np.testing.assert_allclose(np.asarray(resize_crops(changed, crops, 16))[2], resized[2],
                               atol=1e-4)


def test_a_crop_of_the_model_size_is_passed_through_exactly():
    rng = np.random.default_rng(3)
    canvases = _canvas(rng, [0, 0], canvas=16)
    crops = np.array([[16, 0], [16, 1]], np.int32)
    resized = np.asarray(resize_crops(canvases, crops, 16))
    np.testing.assert_array_equal(resized[0], canvases[0])
    np.testing.assert_array_equal(resized[1], canvases[1][:, :, ::-1])
    weights = np.asarray(resize_weights(16, 16, 16))
    np.testing.assert_array_equal(weights, np.eye(16))


def test_frames_are_normalised_with_the_config_statistics():
    config = _config()
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4, 3), dtype=np.uint8)
    mean = np.asarray(config.video.mean) * 255
    std = np.asarray(config.video.std) * 255
    np.testing.assert_allclose(normalize_frames(frames, config.video), (frames - mean) / std,
                               rtol=1e-6, atol=1e-5)
