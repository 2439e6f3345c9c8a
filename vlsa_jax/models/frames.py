"""Frames on the device: resizing (and mirroring) the host's crops, then standardising.

The input pipeline crops each example's frames on the host and ships each crop in the
top-left corner of a square uint8 canvas, with 'video_crop' [B, 2] int32: the crop's side
and a flip flag (0/1). Resizing here, as two small matrix products per frame, takes the
costliest step after JPEG decoding off the host's cores, which feed the accelerators.
"""
import jax
import jax.numpy as jnp


def resize_weights(side, canvas: int, size: int) -> jax.Array:
    """The weights that resize the first `side` pixels of a canvas row to `size` pixels.

    Antialiased bilinear, as Pillow's BILINEAR: a triangle filter centred on the
    output pixel's centre, widened by the shrink factor when shrinking (so every
    source pixel counts), cut off at the crop's edge and renormalised there.
    `side` may be traced; `side == size == canvas` gives the identity.

    Returns:
      [size, canvas] float32: output pixel i as a weighted sum of canvas pixels
      [0, side).
    """
    scale = jnp.asarray(side, jnp.float32) / size  # source pixels per output pixel
    centres = (jnp.arange(size, dtype=jnp.float32) + 0.5) * scale
    pixels = jnp.arange(canvas, dtype=jnp.float32) + 0.5
    distance = jnp.abs(pixels[None, :] - centres[:, None]) / jnp.maximum(scale, 1.0)
    weights = jnp.maximum(0.0, 1.0 - distance)
    weights = jnp.where(jnp.arange(canvas)[None, :] < side, weights, 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_crops(canvases, crops, size: int) -> jax.Array:
    """Resizes each example's crop to size x size, mirrored left-right if flipped.

    Args:
      canvases: [B, T, C, C, 3] uint8, each crop in the top-left corner.
      crops: [B, 2] int (side, flip).
      size: the output side.

    Returns:
      [B, T, size, size, 3] float32, on the 0-255 scale.
    """
    canvas = canvases.shape[2]
    rows = jax.vmap(lambda side: resize_weights(side, canvas, size))(crops[:, 0])
    columns = jnp.where(crops[:, 1, None, None] > 0, rows[:, ::-1], rows)
    x = canvases.astype(jnp.float32)
    x = jnp.einsum("btyxc,bwx->btywc", x, columns)
    return jnp.einsum("btywc,bhy->bthwc", x, rows)


def normalize_frames(frames, video_config) -> jax.Array:
    """Standardises RGB frames [..., 3] on the 0-255 scale with the config's mean and std.

    Returns:
      float32 frames of the input's shape.
    """
    mean = jnp.asarray(video_config.mean, jnp.float32) * 255
    std = jnp.asarray(video_config.std, jnp.float32) * 255
    return (frames.astype(jnp.float32) - mean) / std
