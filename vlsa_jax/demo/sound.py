"""SyncShapes audio: faint noise and a short note at each of the clip's bounces.

A note starts at its bounce's sample (`clip.onset`) and lasts `clip.NOTE_S`: the shape's
timbre at the colour's pitch, with a fast attack and an exponential decay. The track of a
sync_hard shifted copy is rotated circularly by the clip's `audio_shift` samples.
"""
import functools

import numpy as np

from vlsa_jax.demo.clip import (COLOURS, NOTE_S, SHAPES, ClipSpec, SyncShapesOptions,
                                num_samples, onset)

_NOTE_ATTACK_S = 0.005
_NOTE_DECAY_S = 0.035
_NOTE_AMPLITUDE = 0.5
_NOISE_STD = 0.01  # background hiss, -40 dB below full scale

# (frequency ratio, amplitude) of each timbre's partials: the Fourier series of the
# waveforms, cut below the Nyquist frequency when a note is made (no aliasing).
_PARTIALS = {
    "sine": ((1, 1.0),),
    "square": tuple((k, 1 / k) for k in range(1, 64, 2)),
    "sawtooth": tuple((k, 1 / k) for k in range(1, 64)),
    "triangle": tuple((k, (-1) ** (k // 2) / k**2) for k in range(1, 64, 2)),
    "bell": ((1, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)),  # a struck bar's modes
}


def render_audio(spec: ClipSpec, options: SyncShapesOptions) -> np.ndarray:
    """The clip's audio track: noise and a note at each bounce, rotated by its audio_shift.

    Returns:
      [seconds * sample_rate] float32 mono.
    """
    rng = np.random.default_rng([spec.noise_seed, 1])
    signal = _NOISE_STD * rng.standard_normal(num_samples(options))
    note = _note(spec.shape, spec.colour, options.sample_rate)
    for bounce_time in spec.bounce_times:
        start = onset(bounce_time, options)
        signal[start:start + len(note)] += note
    return np.roll(signal, spec.audio_shift).astype(np.float32)


@functools.cache
def _note(shape: str, colour: str, sample_rate: int) -> np.ndarray:
    """One note: the shape's timbre at the colour's pitch, a fast attack, an exponential decay.

    Returns:
      [NOTE_S * sample_rate] float32.
    """
    t = np.arange(round(NOTE_S * sample_rate)) / sample_rate
    fundamental = COLOURS[colour].pitch_hz
    ratios, amplitudes = np.array([
        (ratio, amplitude) for ratio, amplitude in _PARTIALS[SHAPES[shape].timbre]
        if fundamental * ratio < 0.45 * sample_rate]).T
    wave = amplitudes @ np.sin(2 * np.pi * fundamental * ratios[:, None] * t[None, :])
    envelope = np.minimum(t / _NOTE_ATTACK_S, 1.0) * np.exp(-t / _NOTE_DECAY_S)
    return (_NOTE_AMPLITUDE * wave / np.abs(wave).max() * envelope).astype(np.float32)
