"""SyncShapes frames: the shape over its background, and the struck walls' glow.

The background is dark grey, so that every colour stands out, with a faint static
texture of the clip's own. A struck wall glows: a strip along it lights up around the
contact, brightest at the contact's time and dark `_GLOW_S` / 2 before and after it, so
that every bounce shows in one frame of any eight sampled from the sixteen (one per
two-frame segment), its brightness telling how near. A change of direction alone shows a
bounce only across frames, which the demo's two-layer model did not learn to see.
Symmetric in time, the glow looks the same played backwards: frames in reverse order (the
demo's gam.reversed_video_negatives) differ from the clip in when the walls light, not
how.
"""
import functools

import numpy as np

from vlsa_jax.demo.clip import COLOURS, SHAPES, ClipSpec, SyncShapesOptions, trajectory, walls

_BACKGROUND_LEVELS = (20.0, 50.0)
_TEXTURE_STD = 3.0
_GLOW_S = 0.375
_GLOW_WIDTH = 1 / 16  # of the side
_GLOW_LEVEL = 230.0
# Angular resolution of the shapes' outlines.
_OUTLINE_BINS = 1024


def render_frames(spec: ClipSpec, options: SyncShapesOptions) -> np.ndarray:
    """[seconds * fps, size, size, 3] uint8 RGB; frame i shows time i / fps."""
    times = np.arange(round(options.seconds * options.fps)) / options.fps
    centres = trajectory(spec, times, options.size).astype(np.float32)
    pixels = np.arange(options.size, dtype=np.float32) + 0.5  # pixel centres
    dx = pixels[None, None, :] - centres[:, 0, None, None]  # [T, 1, W]
    dy = pixels[None, :, None] - centres[:, 1, None, None]  # [T, H, 1]
    outline = _outline_radii(spec.shape)
    angle = np.mod(np.arctan2(dy, dx), 2 * np.pi)
    bins = np.minimum((angle * (len(outline) / (2 * np.pi))).astype(np.intp), len(outline) - 1)
    # The fraction of a pixel the shape covers, ramped over one pixel at its edge.
    coverage = np.clip(outline[bins] * spec.radius - np.hypot(dx, dy) + 0.5, 0, 1)[..., None]
    glow = wall_glow(spec, times, options.size)[..., None]  # [T, H, W, 1]
    background = _background(spec, options.size)
    background = background + glow * (_GLOW_LEVEL - background)  # under the shape
    colour = np.array(COLOURS[spec.colour].rgb, np.float32)
    frames = background + coverage * (colour - background)
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def wall_glow(spec: ClipSpec, times: np.ndarray, size: int) -> np.ndarray:
    """[len(times), size, size] float32 in [0, 1]: how brightly each pixel's wall glows.

    A contact at time b lights the strip along the wall touched, 1 - |t - b| / (_GLOW_S / 2)
    at times t within _GLOW_S / 2 of b, 0 otherwise; overlapping glows take the brighter.
    """
    times = np.asarray(times, np.float64)
    glow = np.zeros((len(times), size, size), np.float32)
    if not spec.bounce_times:
        return glow
    width = max(1, round(_GLOW_WIDTH * size))
    pixels = np.arange(size)
    strips = {  # (wall index as in walls(): x low, x high, y low, y high) -> [H, W] mask
        0: np.broadcast_to(pixels[None, :] < width, (size, size)),
        1: np.broadcast_to(pixels[None, :] >= size - width, (size, size)),
        2: np.broadcast_to(pixels[:, None] < width, (size, size)),
        3: np.broadcast_to(pixels[:, None] >= size - width, (size, size)),
    }
    (x_low, x_high), (y_low, y_high) = walls(spec.shape, spec.radius, size)
    contacts = trajectory(spec, np.array(spec.bounce_times), size)
    for bounce, (x, y) in zip(spec.bounce_times, contacts):
        wall = int(np.argmin([x - x_low, x_high - x, y - y_low, y_high - y]))
        strength = np.clip(1 - np.abs(times - bounce) / (_GLOW_S / 2), 0, 1)
        glow = np.maximum(glow, strength[:, None, None] * strips[wall])
    return glow.astype(np.float32)


def _background(spec: ClipSpec, size: int) -> np.ndarray:
    """[size, size, 3] float32: a grey level and a static texture, the clip's own."""
    rng = np.random.default_rng([spec.noise_seed, 0])
    level = rng.uniform(*_BACKGROUND_LEVELS)
    texture = rng.normal(0.0, _TEXTURE_STD, (size, size, 1))
    return np.repeat(level + texture, 3, axis=-1).astype(np.float32)


@functools.cache
def _outline_radii(shape: str) -> np.ndarray:
    """The distance from the centre to the shape's outline, in radii, by angle.

    Returns:
      [_OUTLINE_BINS] float32; bin j covers the angles [2 pi j, 2 pi (j + 1)) /
      _OUTLINE_BINS (image axes).
    """
    outline = SHAPES[shape].outline
    if outline is None:
        return np.ones(_OUTLINE_BINS, np.float32)
    angles = (np.arange(_OUTLINE_BINS) + 0.5) * 2 * np.pi / _OUTLINE_BINS
    rays = np.stack([np.cos(angles), np.sin(angles)], axis=-1)[:, None, :]  # [A, 1, 2]
    corners = np.array(outline)[None]  # [1, E, 2]
    edges = np.roll(corners, -1, axis=1) - corners

    def cross(a, b):
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    # The ray t * u meets edge p + s * e where t = (p x e) / (u x e), s = (p x u) / (u x e).
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = cross(rays, edges)
        distance = cross(corners, edges) / denominator
        along = cross(corners, rays) / denominator
    hits = (distance > 0) & (along >= 0) & (along <= 1)
    return np.where(hits, distance, np.inf).min(axis=1).astype(np.float32)
