"""Patchification, grid positions, the token embeddings and the masked mean."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vlsa_jax.models.embeddings import (FactorizedPositions, PatchEmbedding, TextEmbedding,
                                        masked_mean, patchify_audio, patchify_video,
                                        valid_or_ones)
from vlsa_jax.models.transformer import StackSpec

_SPEC = StackSpec(width=8, depth=1, num_heads=2, mlp_dim=16)
# A few small programs: LLVM optimisation would cost more time than it saves.
_QUICK_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(autouse=True)
def _no_mesh():
    """Parameters built outside any mesh, despite their logical axis names."""
    with nnx.use_eager_sharding(False):
        yield


def test_video_patches_are_frame_major_then_row_major():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 3, 8, 12, 3)).astype(np.float32)  # B T H W C
    patches = np.asarray(patchify_video(frames, 4))
    assert patches.shape == (2, 3 * 2 * 3, 4 * 4 * 3)
    for t in range(3):
        for i in range(2):
            for j in range(3):
                np.testing.assert_array_equal(
                    patches[:, (t * 2 + i) * 3 + j],
                    frames[:, t, 4 * i:4 * i + 4, 4 * j:4 * j + 4].reshape(2, -1))


def test_audio_patches_are_time_major():
    spectrogram = np.random.default_rng(0).normal(size=(2, 12, 8)).astype(np.float32)
    patches = np.asarray(patchify_audio(spectrogram, 4))
    assert patches.shape == (2, 3 * 2, 16)
    for t in range(3):
        for f in range(2):
            np.testing.assert_array_equal(
                patches[:, t * 2 + f],
                spectrogram[:, 4 * t:4 * t + 4, 4 * f:4 * f + 4].reshape(2, -1))


def test_a_grid_position_is_the_sum_of_its_axes_rows():
    @functools.partial(jax.jit, compiler_options=_QUICK_COMPILE)
    def positions():
        module = FactorizedPositions((3, 4), 8, _SPEC, rngs=nnx.Rngs(0))
        return [table[...] for table in module.tables], module()

    (rows, cols), table = positions()
    assert table.shape == (12, 8)
    for t in range(3):
        for p in range(4):
            np.testing.assert_allclose(table[t * 4 + p], rows[t] + cols[p], rtol=1e-6)


def test_embeddings_map_patches_and_ids_to_width_tokens():
    @functools.partial(jax.jit, compiler_options=_QUICK_COMPILE)
    def embed(patches, ids):
        rngs = nnx.Rngs(0)
        return (PatchEmbedding(48, (3, 4), _SPEC, rngs=rngs)(patches),
                TextEmbedding(50, 6, _SPEC, rngs=rngs)(ids))

    patch_tokens, tokens = embed(jnp.ones((2, 12, 48)),
                                 jnp.array([[5, 6, 7, 0, 0, 0], [5, 9, 9, 9, 9, 9]]))
    assert patch_tokens.shape == (2, 12, 8)
    assert tokens.shape == (2, 6, 8)
    # A word's token depends on its position: id 9 at positions 2 and 3 differ.
    assert np.abs(tokens[1, 2] - tokens[1, 3]).max() > 1e-4


def test_the_masked_mean_ignores_invalid_tokens():
    tokens = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    valid = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    mean = np.asarray(masked_mean(jnp.asarray(tokens, jnp.bfloat16), valid))
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean[0], tokens[0, :2].mean(axis=0), atol=2e-2)
    np.testing.assert_allclose(mean[1], tokens[1].mean(axis=0), atol=2e-2)
    np.testing.assert_array_equal(mean[2], 0)  # no valid token: zeros, not NaN
    np.testing.assert_allclose(masked_mean(tokens, None), tokens.mean(axis=1), rtol=1e-6)


def test_validity_defaults_to_every_token():
    tokens = jnp.zeros((2, 3, 4))
    np.testing.assert_array_equal(valid_or_ones(tokens, None), np.ones((2, 3), bool))
    valid = jnp.array([[True, False, True], [False, False, True]])
    assert valid_or_ones(tokens, valid) is valid
