"""SyncShapes clips: what a clip shows and sounds, how a split's clips are drawn, their captions.

A clip is a coloured shape crossing a dark, faintly textured background and bouncing off
the walls (render.py draws it). Every wall contact lights the struck wall and sounds a
note (sound.py synthesises it): the shape sets the timbre and the colour the pitch. The
caption names the attributes in one of several templates with synonyms. Within a split no
two clips share their discretised attributes (a clip that repeats an earlier one's is
resampled), so no two share a caption either. Everything about a clip follows from
(seed, split, clip index).

sync_hard lists N clips twice: `<id>` (split key 'sync_hard'), as generated, and
`<id>_shifted` (split key 'sync_hard_shifted'): the same video and caption, its audio
rotated circularly by 0.3-0.7 of the clip's length, so that every note starts at least
0.25 s from every bounce. Prepare the two split keys as two splits and score the
originals with the shifted copies' audio as distractors:

    config.eval.splits = "RECORDS/sync_hard+RECORDS/sync_hard_shifted:a"

A model blind to timing then reaches at most `TIMING_BLIND_V2A_R1` of its video->audio
R@1 without the copies. The corpus, and why the test is built so: docs/demo.md.
"""
import dataclasses
import math
import zlib

import numpy as np

SPLITS = ("train", "val", "test", "sync_hard")
# The split key of sync_hard's shifted copies.
SHIFTED_SPLIT = "sync_hard_shifted"
SHIFTED_SUFFIX = "_shifted"
# A model blind to timing picks between a clip's audio and its shifted copy by chance at
# best: its expected video->audio R@1 on sync_hard, as a fraction of its R@1 without the
# copies (docs/demo.md, the synchrony test).
TIMING_BLIND_V2A_R1 = 0.5
MAX_BOUNCES = 4
# sync_hard's clips bounce once or twice: the notes of three bounces, rotated, cannot all
# keep clear of both the bounces and the clip's edges.
SYNC_HARD_BOUNCES = (1, 2)

# Timing, in seconds. A bounce's note must fit in the clip, away from its edges, and
# notes must not overlap, so that each can be heard (and found) on its own.
_EDGE_MARGIN_S = 0.15
_MIN_BOUNCE_GAP_S = 0.3
NOTE_S = 0.15  # a note's length
# sync_hard: the rotation as a fraction of the clip, and how far a rotated note must
# start from every bounce for the copy to be out of sync.
_SHIFT_RANGE = (0.3, 0.7)
_MIN_SYNC_OFFSET_S = 0.25
# Draws before giving up on a clip: a draw is rejected when its bounces are too many,
# too few or too close, or its attributes repeat an earlier clip's.
_MAX_ATTEMPTS = 20_000
_SHIFT_ATTEMPTS = 50
# The direction of motion is within this many degrees of its word's compass direction,
# which leaves 15 degrees between neighbouring words.
_DIRECTION_JITTER_DEG = 15.0
# The sample rates AAC encodes at.
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
    """A shape's outline, its note and its words.

    Attributes:
      outline: vertices in units of the shape's radius, image axes (x right, y down),
        in order around the centre; None for a circle of radius 1.
      timbre: a key of sound.py's partials.
      names: synonyms for the caption.
      sound: the caption's word for its note.
    """

    outline: tuple[tuple[float, float], ...] | None
    timbre: str
    names: tuple[str, ...]
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
    """Draws a clip whose attributes are not in `taken`.

    Returns:
      (the clip, its sync_hard shift in samples; 0 outside sync_hard).

    Raises:
      RuntimeError: no such clip in `_MAX_ATTEMPTS` draws.
    """
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
    """Draws a motion within the ranges of the attributes' words.

    Returns:
      (radius, start (x, y), velocity (x, y)), in pixels and pixels per second.
    """
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
                and np.all(times <= seconds - _EDGE_MARGIN_S - NOTE_S)
                and np.all(np.diff(times) >= _MIN_BOUNCE_GAP_S))


def _sample_shift(rng, bounce_times, options: SyncShapesOptions) -> int | None:
    """Draws a rotation of the audio track that puts every note out of sync.

    Returns:
      The rotation in samples: every rotated note starts at least _MIN_SYNC_OFFSET_S
      from every bounce and stays clear of the clip's edges; None if no draw of
      _SHIFT_ATTEMPTS was.
    """
    samples = num_samples(options)
    onsets = np.round(np.asarray(bounce_times) * options.sample_rate)
    for _ in range(_SHIFT_ATTEMPTS):
        shift = round(rng.uniform(*_SHIFT_RANGE) * samples)
        shifted = ((onsets + shift) % samples) / options.sample_rate
        offsets = np.abs(shifted[:, None] - np.asarray(bounce_times)[None, :])
        if _well_spaced(shifted, options.seconds) and offsets.min() >= _MIN_SYNC_OFFSET_S:
            return shift
    return None


# Caption -------------------------------------------------------------------------------


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
    """Where the shape's centre is when the shape touches each wall.

    Returns:
      ((x_low, x_high), (y_low, y_high)) in pixels.
    """
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


# Sound timing --------------------------------------------------------------------------


def sound_times(spec: ClipSpec, options: SyncShapesOptions) -> list[float]:
    """Seconds at which the notes start in the clip's audio track, ascending."""
    samples = num_samples(options)
    onsets = [(onset(t, options) + spec.audio_shift) % samples for t in spec.bounce_times]
    return sorted(sample / options.sample_rate for sample in onsets)


def onset(bounce_time: float, options: SyncShapesOptions) -> int:
    """The audio sample at which the note of a bounce at `bounce_time` seconds starts.

    Args:
      bounce_time: seconds of the wall contact.
      options: the corpus options (their sample rate).

    Returns:
      The sample index, before any rotation by a clip's audio_shift.
    """
    return round(bounce_time * options.sample_rate)


def num_samples(options: SyncShapesOptions) -> int:
    """The length of every clip's audio track, in samples."""
    return round(options.seconds * options.sample_rate)
