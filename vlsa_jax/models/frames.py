"""Frames on the device: resizing (and mirroring) the host's crops, then standardising.

The input pipeline crops each example's frames on the host and ships each crop in the
top-left corner of a square uint8 canvas, with its side and flip in 'video_crop'.
Resizing here, as two small matrix products per frame, takes the costliest step
after JPEG decoding off the host's cores, which feed the accelerators.
"""
import jax
import jax.numpy as jnp

# Batch key: [B, 2] int32 (side of the crop in the canvas's top-left corner, flip 0/1).


def resize_weights(side, canvas: int, size: int) -> jax.Array:
    """[size, canvas] float32: output pixel i as a weighted sum of canvas pixels [0, side).

    Antialiased bilinear, as Pillow's BILINEAR: a triangle filter centred on the
    output pixel's centre, widened by the shrink factor when shrinking (so every
    source pixel counts), cut off at the crop's edge and renormalised there.
    `side` may be traced; `side == size == canvas` gives the identity.
    """
    scale = jnp.asarray(side, jnp.float32) / size  # source pixels per output pixel
    centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) * scale
    pixels = jnp.arange(canvas, dtype=jnp.float32) + 0.5
    distance = jnp.abs(pixels[None, :] - centres[:, None]) / jnp.maximum(scale, 1.0)
    weights = jnp.maximum(0.0, 1.0 - distance)
    weights = jnp.where(jnp.arange(canvas)[None, :] < side, weights, 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_crops(canvases, crops, size: int) -> jax.Array:
    """canvases [B, T, C, C, 3] uint8, crops [B, 2] (side, flip) -> [B, T, size, size, 3]
    float32: each example's crop resized to size x size, mirrored left-right if flip."""
    canvas = canvases.shape[2]
    rows = jax.vmap(lambda side: resize_weights(side, canvas, size))(crops[:, 0])
    columns = jnp.where(crops[:, 1, None, None] > 0, rows[:, ::-1], rows)
    x = canvases.astype(jnp.float32)
    x = jnp.einsum("btyxc,bwx->btywc", x, columns)
    return jnp.einsum("btywc,bhy->bthwc", x, rows)


def normalize_frames(frames, video_config) -> jax.Array:
    """RGB frames [..., 3] on the 0-255 scale -> float32, standardised with the config's
    mean and std."""
    mean = jnp.asarray(video_config.mean, jnp.float32) * 255
    std = jnp.asarray(video_config.std, jnp.float32) * 255
    return (frames.astype(jnp.float32) - mean) / std
