r"""SyncShapes: a synthetic video-audio-text corpus whose sounds are synchronised with the picture.

    python -m vlsa_jax.demo.synthetic --output_dir=data/sync_shapes --num_workers=4
    python -m vlsa_jax.data.prepare --dataset=generic --annotations=data/sync_shapes/train.jsonl \
        --media_dir=data/sync_shapes --output_dir=data/sync_shapes_records --split=train

Each clip is an mp4 file (H.264 video, mono AAC audio): a coloured shape crosses a dark,
faintly textured background and bounces off the walls. Every wall contact lights the
struck wall for 0.375 s around it, brightest at the contact, and sounds a short note over
faint noise, starting at the contact's time: the shape sets the timbre (circle:
sine, square: square wave, triangle: sawtooth, diamond: triangle wave, star: bell-like
partials) and the colour the pitch. The caption names the size, colour, shape, speed,
direction, starting region, number of bounces and the sound, in one of several templates
with synonyms: "a small red circle moves quickly to the left from the top right and
bounces twice with a low beep each time". Within a split no two clips share their
discretised attributes (a clip that repeats an earlier one's is resampled), so no two
share a caption either.

Everything follows from (seed, split, clip index), whatever the number of workers; only
the encoded bytes depend on the FFmpeg build.

Layout of output_dir (the media_dir to give the preparation):

    sync_shapes.json          the options the corpus was generated with, and its version
    media/<split>/<id>.mp4
    <split>.jsonl             the generic adapter's JSON Lines, written last

A split whose .jsonl exists is complete and is reused. Rows carry, besides the adapter's
keys, what the clip holds: `attributes` (the caption's discretised values),
`bounce_times` (seconds of the wall contacts), `sound_times` (seconds at which the notes
start in the audio track) and `audio_shift` (seconds the track is rotated by).

The sync_hard split
-------------------
sync_hard.jsonl lists N clips twice: `<id>` (split key 'sync_hard'), as generated, and
`<id>_shifted` (split key 'sync_hard_shifted'): the same video and caption, its audio
rotated circularly by 0.3-0.7 of the clip's length, so that every note starts at least
0.25 s from every bounce and, like the original notes, clear of the clip's edges.
Rotation, unlike a delay with padding, keeps the notes, their number and the noise: the
two tracks differ only in when the notes sound relative to the picture. Every sync_hard
clip bounces once or twice (without a note there is nothing to shift; the rotated notes
of three cannot all keep clear of the bounces and the edges). Prepare the two split keys
as two splits and score the originals with the shifted copies' audio as distractors:

    config.eval.splits = "RECORDS/sync_hard+RECORDS/sync_hard_shifted:a"

In video->audio, each original video's gallery (2N audios) then holds its own audio and
its shifted twin. A timing-blind model (one that hears which notes sound and sees which
shape moves, not when) scores the twins alike, so at best it picks its own by chance:
expected R@1 at most 1/2, `TIMING_BLIND_V2A_R1` (exact ties count against the query in
`metrics.ranks`, which makes it 0). Only synchrony lifts video->audio R@1 above 1/2.
A caption says nothing about when, so text->audio has nothing to tell the twins by.

The copies are two splits, not one of 2N clips, because they share their video: in a
sweep over all 2N videos, an original and its shifted copy are the same query, rank the
same audio first and at most one of them is right, which bounds video->audio (and
audio->video) R@1 by 1/2 for every model, synchronised or not.
"""
import contextlib
import dataclasses
import fractions
import functools
import json
import math
import os
import pathlib
import zlib

import av
import numpy as np
from absl import app, flags

from vlsa_jax.data.processes import worker_pool

SPLITS = ("train", "val", "test", "sync_hard")
# The split key of sync_hard's shifted copies (see the module docstring).
SHIFTED_SPLIT = "sync_hard_shifted"
SHIFTED_SUFFIX = "_shifted"
# Expected video->audio R@1 on sync_hard of a model blind to timing (see the docstring).
TIMING_BLIND_V2A_R1 = 0.5
OPTIONS_FILE = "sync_shapes.json"
# Recorded with the options: a corpus rendered otherwise (version 1: no wall glow) is
# refused rather than mixed with this one.
CORPUS_VERSION = 2
MAX_BOUNCES = 4
# sync_hard's clips bounce once or twice: the notes of three bounces, rotated, cannot all
# keep clear of both the bounces and the clip's edges.
SYNC_HARD_BOUNCES = (1, 2)

# Timing, in seconds. A bounce's note must fit in the clip, away from its edges, and
# notes must not overlap, so that each can be heard (and found) on its own.
_EDGE_MARGIN_S = 0.15
_MIN_BOUNCE_GAP_S = 0.3
_NOTE_S = 0.15
_NOTE_ATTACK_S = 0.005
_NOTE_DECAY_S = 0.035
_NOTE_AMPLITUDE = 0.5
_NOISE_STD = 0.01  # background hiss, -40 dB below full scale
# sync_hard: the rotation as a fraction of the clip, and how far a rotated note must
# start from every bounce for the copy to be out of sync.
_SHIFT_RANGE = (0.3, 0.7)
_MIN_SYNC_OFFSET_S = 0.25
# Draws before giving up on a clip: a draw is rejected when its bounces are too many,
# too few or too close, or its attributes repeat an earlier clip's.
_MAX_ATTEMPTS = 20_000
_SHIFT_ATTEMPTS = 50

# The picture. The background is dark grey, so that every colour stands out, with a
# faint static texture.
_BACKGROUND_LEVELS = (20.0, 50.0)
_TEXTURE_STD = 3.0
# A struck wall glows: a strip along it lights up around the contact, brightest at the
# contact's time and dark _GLOW_S / 2 before and after it, so that every bounce shows in
# one frame of any eight sampled from the sixteen (one per two-frame segment), its
# brightness telling how near. A change of direction alone shows a bounce only across
# frames, which the demo's two-layer model did not learn to see. Symmetric in time, the
# glow looks the same played backwards: frames in reverse order (the demo's
# gam.reversed_video_negatives) differ from the clip in when the walls light, not how.
_GLOW_S = 0.375
_GLOW_WIDTH = 1 / 16  # of the side
_GLOW_LEVEL = 230.0
# Angular resolution of the shapes' outlines.
_OUTLINE_BINS = 1024
# The direction of motion is within this many degrees of its word's compass direction,
# which leaves 15 degrees between neighbouring words.
_DIRECTION_JITTER_DEG = 15.0
# x264 with look-ahead (mb-tree), adaptive quantisation or B-frames, i.e. every preset
# but 'ultrafast', gave other bytes for the same frames on a few percent of encodes of
# a busy machine, even on one thread; 'ultrafast' never did. The files stay small.
_X264_OPTIONS = {"preset": "ultrafast"}
# FFmpeg's 'fast' AAC coder: a third of the default's time, the notes as clear.
_AAC_OPTIONS = {"aac_coder": "fast"}
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000,
              88200, 96000)


@dataclasses.dataclass(frozen=True)
class SyncShapesOptions:
    """What to generate: clip geometry and how many clips per split.

    Attributes:
      seconds: length of every clip.
      fps: video frame rate.
      size: side of the square frames in pixels (even, for H.264's yuv420p).
      sample_rate: audio rate in Hz (one AAC supports).
      num_train, num_val, num_test: clips per split.
      num_sync_hard: sync_hard clips; each is written twice (original and shifted).
      seed: the corpus seed.
    """

    seconds: float = 2.0
    fps: int = 8
    size: int = 64
    sample_rate: int = 16000
    num_train: int = 512
    num_val: int = 64
    num_test: int = 128
    num_sync_hard: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.size < 16 or self.size % 2:
            raise ValueError(f"size={self.size}: frames need an even side of at least 16")
        if self.fps < 1 or self.seconds <= 0:
            raise ValueError(f"fps={self.fps}, seconds={self.seconds}: both must be positive")
        if self.sample_rate not in _AAC_RATES:
            raise ValueError(f"sample_rate={self.sample_rate}: AAC encodes at {_AAC_RATES}")
        counts = (self.num_train, self.num_val, self.num_test, self.num_sync_hard)
        if min(counts) < 0:
            raise ValueError(f"clip counts must not be negative: {counts}")

    def num_clips(self, split: str) -> int:
        return getattr(self, f"num_{split}")


@dataclasses.dataclass(frozen=True)
class _Shape:
    """outline: vertices in units of the shape's radius, image axes (x right, y down),
    in order around the centre; None for a circle of radius 1."""

    outline: tuple[tuple[float, float], ...] | None
    timbre: str
    names: tuple[str, ...]  # synonyms for the caption
    sound: str


def _polygon(radii, first_angle_deg: float) -> tuple[tuple[float, float], ...]:
    """Vertices at equal angles from `first_angle_deg` (-90: pointing up), at `radii`."""
    angles = np.radians(first_angle_deg) + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return tuple((float(r * np.cos(a)), float(r * np.sin(a))) for r, a in zip(radii, angles))


# Radii chosen so that the shapes of one size word cover similar areas.
SHAPES = {
    "circle": _Shape(None, "sine", ("circle", "disc"), "beep"),
    "square": _Shape(_polygon((1.27,) * 4, -135), "square", ("square",), "buzz"),
    "triangle": _Shape(_polygon((1.5,) * 3, -90), "sawtooth", ("triangle",), "rasp"),
    "diamond": _Shape(_polygon((1.25,) * 4, -90), "triangle", ("diamond", "rhombus"), "hoot"),
    "star": _Shape(_polygon((1.5, 0.65) * 5, -90), "bell", ("star",), "chime"),
}

# (frequency ratio, amplitude) of each timbre's partials: the Fourier series of the
# waveforms, cut below the Nyquist frequency when a note is made (no aliasing).
_PARTIALS = {
    "sine": ((1, 1.0),),
    "square": tuple((k, 1 / k) for k in range(1, 64, 2)),
    "sawtooth": tuple((k, 1 / k) for k in range(1, 64)),
    "triangle": tuple((k, (-1) ** (k // 2) / k**2) for k in range(1, 64, 2)),
    "bell": ((1, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)),  # a struck bar's modes
}


@dataclasses.dataclass(frozen=True)
class _Colour:
    rgb: tuple[int, int, int]
    pitch_hz: float
    pitch: str  # the pitch word's key in _PITCH_WORDS


# Pitches a major third apart, from G3 up; three pitch words over the eight.
COLOURS = {
    "red": _Colour((225, 45, 45), 196.0, "low"),
    "orange": _Colour((245, 140, 30), 247.0, "low"),
    "yellow": _Colour((240, 220, 50), 311.0, "low"),
    "green": _Colour((50, 190, 70), 392.0, "medium"),
    "cyan": _Colour((40, 200, 215), 494.0, "medium"),
    "blue": _Colour((60, 100, 245), 622.0, "medium"),
    "purple": _Colour((165, 70, 215), 784.0, "high"),
    "pink": _Colour((245, 120, 190), 988.0, "high"),
}

# Ranges of each word, with gaps between them so that no value is borderline.
_SIZES = {"small": (0.06, 0.085), "medium": (0.10, 0.125), "large": (0.14, 0.17)}  # radius / side
_SPEEDS = {"slow": (0.3, 0.8), "steady": (1.0, 1.8), "fast": (2.1, 3.2)}  # sides per clip
# Counter-clockwise from +x, 45 degrees apart.
_DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
# Thirds of the region the centre can be in, row by row from the top.
_STARTS = ("top left", "top", "top right", "left", "centre", "right",
           "bottom left", "bottom", "bottom right")

# The caption's words; synonyms of different values never coincide.
_SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium-sized", "mid-sized"),
               "large": ("large", "big")}
_SPEED_WORDS = {"slow": ("slowly", "gently"), "steady": ("steadily", "at a steady pace"),
                "fast": ("quickly", "rapidly")}
_DIRECTION_WORDS = {
    "right": ("to the right", "rightward"),
    "up-right": ("up and to the right", "diagonally up and right"),
    "up": ("upward", "straight up"),
    "up-left": ("up and to the left", "diagonally up and left"),
    "left": ("to the left", "leftward"),
    "down-left": ("down and to the left", "diagonally down and left"),
    "down": ("downward", "straight down"),
    "down-right": ("down and to the right", "diagonally down and right"),
}
_PITCH_WORDS = {"low": ("low", "deep"), "medium": ("medium", "mid-pitched"),
                "high": ("high", "high-pitched")}
_COUNT_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}
_TEMPLATES = (
    "a {size} {colour} {shape} moves {speed} {direction} from the {start} and {bounces}",
    ("starting at the {start}, a {size} {colour} {shape} travels {speed} {direction} and "
     "{bounces}"),
    ("a {size} {colour} {shape} sets off from the {start}, heads {direction} {speed} and "
     "{bounces}"),
)
_BOUNCE_PHRASES = (
    "bounces {count} with a {pitch} {sound}{each}",
    "hits a wall {count}, sounding a {pitch} {sound}{each}",
    "touches a wall {count}, making a {pitch} {sound}{each}",
)
_NO_BOUNCE_PHRASES = ("never touches a wall, so it stays silent",
                      "does not bounce and makes no sound")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip; positions in pixels, image axes (y down).

    Attributes:
      clip_id: the annotation id.
      split: the annotation row's split key.
      path: the mp4 file, relative to the output directory.
      caption: the clip's one caption.
      attributes: the caption's discretised values (shape, colour, size, speed, direction,
        start, bounces) and the sound's (sound, pitch).
      shape, colour: keys of SHAPES and COLOURS.
      radius: the shape's size in pixels (the outline's unit).
      start: (x, y) of the centre at time 0.
      velocity: (x, y) pixels per second.
      bounce_times: seconds of the wall contacts, ascending.
      noise_seed: seeds the background texture and the audio's noise.
      audio_shift: samples the audio track is rotated by (sync_hard's shifted copies).
    """

    clip_id: str
    split: str
    path: str
    caption: str
    attributes: dict
    shape: str
    colour: str
    radius: float
    start: tuple[float, float]
    velocity: tuple[float, float]
    bounce_times: tuple[float, ...]
    noise_seed: int
    audio_shift: int = 0


def generate(output_dir, options: SyncShapesOptions = SyncShapesOptions(),
             num_workers: int = 1) -> dict[str, pathlib.Path]:
    """Writes DIR/media/<split>/<id>.mp4 and DIR/<split>.jsonl; returns split -> annotation path.

    Skips work already done: a split whose jsonl exists (written last, atomically) is
    reused.

    Raises:
      ValueError: output_dir holds a corpus generated with other options.
      RuntimeError: a split asks for more distinct clips than can be drawn.
    """
    root = pathlib.Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    _claim_directory(root, options)
    annotations = {split: root / f"{split}.jsonl" for split in SPLITS}
    pending = [split for split in SPLITS if not annotations[split].exists()]
    if pending:
        with _parallel_map(num_workers) as parallel_map:
            for split in pending:
                specs = sample_split(split, options)
                (root / "media" / split).mkdir(parents=True, exist_ok=True)
                parallel_map(functools.partial(write_clip, root=str(root), options=options),
                             specs)
                _write_atomically(annotations[split], "".join(
                    json.dumps(annotation_row(spec, options)) + "\n" for spec in specs))
    return annotations


def _claim_directory(root: pathlib.Path, options: SyncShapesOptions) -> None:
    """Records the options (and CORPUS_VERSION) in root, or checks them against those
    recorded there: reusing the splits of other options would mix two corpora."""
    path = root / OPTIONS_FILE
    wanted = {"version": CORPUS_VERSION} | dataclasses.asdict(options)
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != wanted:
            raise ValueError(f"{root} holds a SyncShapes corpus generated with {recorded}, "
                             f"not {wanted}: use another output directory")
    else:
        _write_atomically(path, json.dumps(wanted, indent=2) + "\n")


def _write_atomically(path: pathlib.Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@contextlib.contextmanager
def _parallel_map(num_workers: int):
    """Yields map(function, items) run to completion, in num_workers processes."""
    if num_workers <= 1:
        yield lambda function, items: list(map(function, items))
        return
    with worker_pool(num_workers) as pool:
        yield lambda function, items: pool.map(
            function, items, chunksize=max(1, len(items) // (4 * num_workers)))


# Sampling ------------------------------------------------------------------------------


def sample_split(split: str, options: SyncShapesOptions) -> list[ClipSpec]:
    """The clips of a split, in order; sync_hard's come in (original, shifted) pairs.

    Clip i's draws come from a generator seeded with (seed, split, i), so a clip depends
    on the clips before it only through the attributes it must not repeat.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; SyncShapes has {SPLITS}")
    sync_hard = split == "sync_hard"
    taken, specs = set(), []
    for index in range(options.num_clips(split)):
        rng = np.random.default_rng([options.seed, zlib.crc32(split.encode()), index])
        clip_id = f"{split}_{index:05d}"
        spec, shift = _sample_clip(rng, clip_id, split, options, taken, sync_hard)
        taken.add(tuple(spec.attributes.values()))
        specs.append(spec)
        if sync_hard:
            shifted_id = clip_id + SHIFTED_SUFFIX
            specs.append(dataclasses.replace(
                spec, clip_id=shifted_id, split=SHIFTED_SPLIT,
                path=f"media/{split}/{shifted_id}.mp4", audio_shift=shift))
    return specs


def _sample_clip(rng: np.random.Generator, clip_id: str, split: str,
                 options: SyncShapesOptions, taken: set,
                 sync_hard: bool) -> tuple[ClipSpec, int]:
    """(a clip whose attributes are not in `taken`, its sync_hard shift in samples)."""
    fewest, most = SYNC_HARD_BOUNCES if sync_hard else (0, MAX_BOUNCES)
    bounces = int(rng.integers(fewest, most + 1))
    for _ in range(_MAX_ATTEMPTS):
        attributes = {
            "shape": _choice(rng, tuple(SHAPES)),
            "colour": _choice(rng, tuple(COLOURS)),
            "size": _choice(rng, tuple(_SIZES)),
            "speed": _choice(rng, tuple(_SPEEDS)),
            "direction": _choice(rng, _DIRECTIONS),
            "start": _choice(rng, _STARTS),
            "bounces": bounces,
        }
        shape, colour = attributes["shape"], attributes["colour"]
        attributes |= {"sound": SHAPES[shape].sound, "pitch": COLOURS[colour].pitch}
        if tuple(attributes.values()) in taken:
            continue
        radius, start, velocity = _sample_motion(rng, attributes, options.size, options.seconds)
        bounce_times = _wall_contacts(shape, radius, start, velocity, options)
        if len(bounce_times) != bounces or not _well_spaced(bounce_times, options.seconds):
            continue
        shift = _sample_shift(rng, bounce_times, options) if sync_hard else 0
        if shift is None:
            continue
        return ClipSpec(
            clip_id=clip_id, split=split, path=f"media/{split}/{clip_id}.mp4",
            caption=_caption(rng, attributes), attributes=attributes, shape=shape,
            colour=colour, radius=radius, start=start, velocity=velocity,
            bounce_times=bounce_times, noise_seed=int(rng.integers(2**63))), shift
    raise RuntimeError(
        f"{clip_id}: no clip with {bounces} bounce(s) and unused attributes in {_MAX_ATTEMPTS} "
        f"draws; the split may hold more clips than there are distinct captions, or "
        f"{options.seconds} s may be too short for {bounces} well-spaced bounces")


def _choice(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


def _sample_motion(rng, attributes: dict, size: int, seconds: float):
    """(radius, start (x, y), velocity (x, y)) within the ranges of the attributes' words."""
    radius = rng.uniform(*_SIZES[attributes["size"]]) * size
    (x_low, x_high), (y_low, y_high) = walls(attributes["shape"], radius, size)
    row, column = divmod(_STARTS.index(attributes["start"]), 3)
    start = (_in_third(rng, x_low, x_high, column), _in_third(rng, y_low, y_high, row))
    angle = math.radians(45 * _DIRECTIONS.index(attributes["direction"])
                         + rng.uniform(-_DIRECTION_JITTER_DEG, _DIRECTION_JITTER_DEG))
    speed = rng.uniform(*_SPEEDS[attributes["speed"]]) * size / seconds
    return radius, start, (speed * math.cos(angle), -speed * math.sin(angle))  # y points down


def _in_third(rng, low: float, high: float, third: int) -> float:
    """A point in the middle 80% of the third-th third of [low, high]."""
    width = (high - low) / 3
    return low + width * (third + rng.uniform(0.1, 0.9))


def _well_spaced(times, seconds: float) -> bool:
    """Whether every note fits in the clip away from its edges and no two overlap."""
    times = np.sort(np.asarray(times, np.float64))
    return bool(np.all(times >= _EDGE_MARGIN_S)
                and np.all(times <= seconds - _EDGE_MARGIN_S - _NOTE_S)
                and np.all(np.diff(times) >= _MIN_BOUNCE_GAP_S))


def _sample_shift(rng, bounce_times, options: SyncShapesOptions) -> int | None:
    """A rotation of the audio (samples) that moves every note away from every bounce, and
    keeps the notes clear of the clip's edges; None if none was found."""
    samples = _num_samples(options)
    onsets = np.round(np.asarray(bounce_times) * options.sample_rate)
    for _ in range(_SHIFT_ATTEMPTS):
        shift = round(rng.uniform(*_SHIFT_RANGE) * samples)
        shifted = ((onsets + shift) % samples) / options.sample_rate
        offsets = np.abs(shifted[:, None] - np.asarray(bounce_times)[None, :])
        if _well_spaced(shifted, options.seconds) and offsets.min() >= _MIN_SYNC_OFFSET_S:
            return shift
    return None


def _caption(rng, attributes: dict) -> str:
    bounces = attributes["bounces"]
    if bounces:
        phrase = _choice(rng, _BOUNCE_PHRASES).format(
            count=_COUNT_WORDS[bounces], pitch=_choice(rng, _PITCH_WORDS[attributes["pitch"]]),
            sound=attributes["sound"], each=" each time" if bounces > 1 else "")
    else:
        phrase = _choice(rng, _NO_BOUNCE_PHRASES)
    return _choice(rng, _TEMPLATES).format(
        size=_choice(rng, _SIZE_WORDS[attributes["size"]]), colour=attributes["colour"],
        shape=_choice(rng, SHAPES[attributes["shape"]].names),
        speed=_choice(rng, _SPEED_WORDS[attributes["speed"]]),
        direction=_choice(rng, _DIRECTION_WORDS[attributes["direction"]]),
        start=attributes["start"], bounces=phrase)


def annotation_row(spec: ClipSpec, options: SyncShapesOptions) -> dict:
    """The clip's line of the generic adapter's JSON Lines, with what the clip holds."""
    return {
        "id": spec.clip_id,
        "path": spec.path,
        "captions": [spec.caption],
        "split": spec.split,
        "attributes": spec.attributes,
        "bounce_times": [round(t, 4) for t in spec.bounce_times],
        "sound_times": [round(t, 6) for t in sound_times(spec, options)],
        "audio_shift": round(spec.audio_shift / options.sample_rate, 6),
    }


# Motion --------------------------------------------------------------------------------


def walls(shape: str, radius: float, size: int) -> tuple[tuple[float, float], ...]:
    """((x_low, x_high), (y_low, y_high)): where the centre is when the shape touches a wall."""
    outline = SHAPES[shape].outline
    points = np.array([(-1.0, -1.0), (1.0, 1.0)] if outline is None else outline)
    low, high = -points.min(axis=0) * radius, size - points.max(axis=0) * radius
    return tuple((float(lo), float(hi)) for lo, hi in zip(low, high))


def trajectory(spec: ClipSpec, times: np.ndarray, size: int) -> np.ndarray:
    """[len(times), 2] (x, y) of the shape's centre, bouncing elastically off the walls."""
    columns = []
    for (low, high), start, velocity in zip(walls(spec.shape, spec.radius, size), spec.start,
                                            spec.velocity):
        # Unfolded, the motion is a straight line; folding [0, 2 span) onto [0, span]
        # mirrors it at each wall.
        span = high - low
        unfolded = np.mod(start - low + velocity * np.asarray(times, np.float64), 2 * span)
        columns.append(low + np.where(unfolded <= span, unfolded, 2 * span - unfolded))
    return np.stack(columns, axis=-1)


def _wall_contacts(shape: str, radius: float, start, velocity,
                   options: SyncShapesOptions) -> tuple[float, ...]:
    """Seconds in [0, options.seconds) at which the shape touches a wall, ascending."""
    times = []
    for (low, high), position, speed in zip(walls(shape, radius, options.size), start,
                                            velocity):
        if speed == 0:
            continue
        first = (high - position if speed > 0 else position - low) / abs(speed)
        period = (high - low) / abs(speed)
        times += list(np.arange(first, options.seconds, period))
    return tuple(sorted(float(t) for t in times))


def sound_times(spec: ClipSpec, options: SyncShapesOptions) -> list[float]:
    """Seconds at which the notes start in the clip's audio track, ascending."""
    samples = _num_samples(options)
    onsets = [(_onset(t, options) + spec.audio_shift) % samples for t in spec.bounce_times]
    return sorted(onset / options.sample_rate for onset in onsets)


def _onset(bounce_time: float, options: SyncShapesOptions) -> int:
    return round(bounce_time * options.sample_rate)


def _num_samples(options: SyncShapesOptions) -> int:
    return round(options.seconds * options.sample_rate)


# Rendering -----------------------------------------------------------------------------


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
    """[_OUTLINE_BINS] distance from the centre to the outline, in radii, bin j covering
    the angles [2 pi j, 2 pi (j + 1)) / _OUTLINE_BINS (image axes)."""
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


def render_audio(spec: ClipSpec, options: SyncShapesOptions) -> np.ndarray:
    """[seconds * sample_rate] float32 mono: noise, a note at each bounce, rotated by
    spec.audio_shift samples."""
    rng = np.random.default_rng([spec.noise_seed, 1])
    signal = _NOISE_STD * rng.standard_normal(_num_samples(options))
    note = _note(spec.shape, spec.colour, options.sample_rate)
    for bounce_time in spec.bounce_times:
        onset = _onset(bounce_time, options)
        signal[onset:onset + len(note)] += note
    return np.roll(signal, spec.audio_shift).astype(np.float32)


@functools.cache
def _note(shape: str, colour: str, sample_rate: int) -> np.ndarray:
    """[_NOTE_S * sample_rate] float32: the shape's timbre at the colour's pitch, a fast
    attack and an exponential decay."""
    t = np.arange(round(_NOTE_S * sample_rate)) / sample_rate
    fundamental = COLOURS[colour].pitch_hz
    ratios, amplitudes = np.array([
        (ratio, amplitude) for ratio, amplitude in _PARTIALS[SHAPES[shape].timbre]
        if fundamental * ratio < 0.45 * sample_rate]).T
    wave = amplitudes @ np.sin(2 * np.pi * fundamental * ratios[:, None] * t[None, :])
    envelope = np.minimum(t / _NOTE_ATTACK_S, 1.0) * np.exp(-t / _NOTE_DECAY_S)
    return (_NOTE_AMPLITUDE * wave / np.abs(wave).max() * envelope).astype(np.float32)


def write_clip(spec: ClipSpec, root: str, options: SyncShapesOptions) -> None:
    """Renders the clip and writes it to root/spec.path."""
    write_mp4(os.path.join(root, spec.path), render_frames(spec, options),
              render_audio(spec, options), options.fps, options.sample_rate)


def write_mp4(path, frames: np.ndarray, audio: np.ndarray, fps: int, sample_rate: int) -> None:
    """Writes frames [T, H, W, 3] uint8 (frame i at i / fps) as H.264 and audio [samples]
    float32 (from time 0) as mono AAC."""
    with av.open(os.fspath(path), "w") as container:
        # Both streams exist before the first packet is muxed (the header is written then).
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = "yuv420p"
        video.options = _X264_OPTIONS
        video.codec_context.gop_size = fps  # a key frame a second: seeks stay short
        video.codec_context.thread_count = 1  # frame threads make the output vary too
        sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        sound.options = _AAC_OPTIONS
        time_base = fractions.Fraction(1, fps)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode())
        # One long frame; the encoder cuts it into frames of its own size.
        samples = av.AudioFrame.from_ndarray(audio[None, :], format="fltp", layout="mono")
        samples.sample_rate, samples.pts = sample_rate, 0
        samples.time_base = fractions.Fraction(1, sample_rate)
        container.mux(sound.encode(samples))
        container.mux(sound.encode())


# Command line ---------------------------------------------------------------------------

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    options = SyncShapesOptions(**{field.name: getattr(FLAGS, field.name)
                                   for field in dataclasses.fields(SyncShapesOptions)})
    for split, path in generate(FLAGS.output_dir, options, FLAGS.num_workers).items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        counts = {key: sum(row["split"] == key for row in rows)
                  for key in dict.fromkeys(row["split"] for row in rows)}
        print(f"{split:<10} {path}: "
              + (", ".join(f"{n} {key}" for key, n in counts.items()) or "no clips"))
    print(f"media_dir for the preparation: {FLAGS.output_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("output_dir", None, "Where the corpus goes (the preparation's media_dir).")
    flags.DEFINE_integer("num_workers", 1, "Processes rendering and encoding clips.")
    for _field in dataclasses.fields(SyncShapesOptions):
        _define = flags.DEFINE_float if _field.type is float else flags.DEFINE_integer
        _define(_field.name, _field.default, f"SyncShapesOptions.{_field.name}.")
    flags.mark_flag_as_required("output_dir")
    app.run(main)
