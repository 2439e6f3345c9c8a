"""Small deterministic media files for the tests, written with PyAV.

Frame i of a clip is uniformly grey with value `frame_value(i)`, so the frame a
decoder picked can be read off its brightness; the audio is a sine tone of the
same amplitude on every channel. A 2 s clip takes a few tens of milliseconds.
"""
import fractions
import pathlib

import av
import numpy as np
from PIL import Image

# Video and audio encoder per container (by file extension).
CODECS = {".mp4": ("libx264", "aac"), ".webm": ("libvpx-vp9", "libopus")}
# The sample rates the Opus encoder accepts.
OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)
TONE_AMPLITUDE = 0.5
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
# Frame timestamps are whole milliseconds.
_VIDEO_TIME_BASE = fractions.Fraction(1, 1000)
# Standard deviation of write_textured_clip's per-frame noise, in 8-bit levels.
_SENSOR_NOISE = 8.0


def frame_value(index):
    """The grey level of frame `index` (an int or an int array)."""
    return (np.asarray(index) * 20) % 256


def frame_times(seconds: float, fps: float, variable_fps: bool = False) -> np.ndarray:
    """Presentation times in seconds of the frames `write_clip` writes.

    Constant rate: frame i at i / fps. Variable rate: the first half of the clip at
    2 * fps, the second half at fps / 2, so frame index and time disagree.
    """
    if not variable_fps:
        times = np.arange(round(seconds * fps)) / fps
    else:
        half = seconds / 2
        times = np.concatenate([np.arange(round(half * fps * 2)) / (fps * 2),
                                half + np.arange(round(half * fps / 2)) / (fps / 2)])
    if not len(times):
        raise ValueError(f"{seconds} s at {fps} fps holds no frame")
    return np.round(times * 1000) / 1000  # whole milliseconds, as written


def write_clip(path, *, seconds: float = 2.0, fps: float = 10, size=(64, 48), codec=None,
               sample_rate: int = 44_100, channels: int = 2, audio: bool = True,
               video: bool = True, tone_hz: float = 440.0, silent: bool = False,
               variable_fps: bool = False) -> pathlib.Path:
    """Writes a clip of grey frames (see `frame_value`) and a sine tone.

    Args:
      path: the file; its extension picks the container and codecs (`CODECS`).
      seconds: length of both streams.
      fps: frame rate (variable_fps: 2 * fps in the first half, fps / 2 after).
      size: (width, height) of the frames.
      codec: the video encoder; None for the container's default.
      sample_rate: audio rate in Hz (.webm: one of OPUS_RATES).
      channels: 1, 2 or 6 (5.1), all carrying the same tone.
      audio, video: whether to write each stream.
      tone_hz: the tone's frequency.
      silent: write zeros instead of the tone.
      variable_fps: frame times from `frame_times(..., variable_fps=True)`.

    Returns:
      The path.
    """
    path = pathlib.Path(path)
    video_codec, audio_codec = CODECS[path.suffix]
    if audio_codec == "libopus" and sample_rate not in OPUS_RATES:
        raise ValueError(f"Opus encodes at {OPUS_RATES} Hz, not {sample_rate}")
    with av.open(str(path), "w") as container:
        # Every stream is added before the first packet is muxed (the header is written then).
        video_stream = _add_video(container, codec or video_codec, fps, size) if video else None
        audio_stream = (container.add_stream(audio_codec, rate=sample_rate,
                                             layout=_LAYOUTS[channels]) if audio else None)
        if video:
            _write_video(container, video_stream, frame_times(seconds, fps, variable_fps), size)
        if audio:
            _write_audio(container, audio_stream,
                         _tone(seconds, sample_rate, tone_hz, silent), channels)
    return path


def _add_video(container, codec: str, fps: float, size, key_frame_seconds: float = 1.0):
    stream = container.add_stream(codec, rate=round(fps))
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = stream.codec_context.time_base = _VIDEO_TIME_BASE
    # A key frame a second by default: seeks help.
    stream.codec_context.gop_size = max(1, round(fps * key_frame_seconds))
    return stream


def _write_video(container, stream, times: np.ndarray, size) -> None:
    width, height = size
    for index, time in enumerate(times):
        pixels = np.full((height, width, 3), frame_value(index), np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = round(time * 1000), _VIDEO_TIME_BASE
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def _tone(seconds: float, sample_rate: int, tone_hz: float, silent: bool) -> np.ndarray:
    """[samples] float32: the tone, or zeros."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    amplitude = 0.0 if silent else TONE_AMPLITUDE
    return (amplitude * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)


def _write_audio(container, stream, signal: np.ndarray, channels: int) -> None:
    # The encoder splits the one long frame into frames of its own size.
    frame = av.AudioFrame.from_ndarray(np.tile(signal, (channels, 1)), format="fltp",
                                       layout=_LAYOUTS[channels])
    frame.sample_rate, frame.pts = stream.rate, 0
    frame.time_base = fractions.Fraction(1, stream.rate)
    container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_textured_clip(path, *, seconds: float = 10.0, fps: float = 30,
                        size=(640, 360), sample_rate: int = 44_100, channels: int = 2,
                        tone_hz: float = 440.0, seed: int = 0,
                        key_frame_seconds: float = 1.0) -> pathlib.Path:
    """Writes a clip that costs about as much to decode as camera footage.

    Flat frames (`write_clip`) code to a few bytes each, and H.264 decodes them
    several times faster than real video. Here a smooth random scene pans across
    the frame (motion the encoder predicts), a square moves against it, and fresh
    sensor noise lands on every frame (residual it cannot predict): about 1 Mbit/s
    at 640x360 and x264's default quality, a bit rate of camera footage at that
    size, and PyAV decodes a 10 s clip in about 0.2 s. The audio is the tone over
    noise, so that AAC codes a full spectrum.

    Args:
      path: the file (.mp4 or .webm, as `write_clip`).
      seconds, fps, size, sample_rate, channels, tone_hz: as `write_clip`.
      seed: the scene, the noise and the square's path.
      key_frame_seconds: the interval between key frames (x264's own default is 250
        frames, 8.3 s at 30 fps).

    Returns:
      The path.
    """
    path = pathlib.Path(path)
    video_codec, audio_codec = CODECS[path.suffix]
    rng = np.random.default_rng(seed)
    width, height = size
    times = frame_times(seconds, fps)
    # The scene: random values on a coarse grid, smoothly upsampled, twice the frame
    # in each direction so that it can pan for the whole clip.
    coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize((2 * width, 2 * height),
                                                      Image.BICUBIC), np.float32)
    pan = np.stack([np.linspace(0, width - 1, len(times)),
                    np.linspace(0, height - 1, len(times))], axis=1).astype(int)
    with av.open(str(path), "w") as container:
        stream = _add_video(container, video_codec, fps, size, key_frame_seconds)
        if video_codec == "libx264":
            stream.options = {"preset": "veryfast"}  # encoding speed only
        audio_stream = container.add_stream(audio_codec, rate=sample_rate,
                                            layout=_LAYOUTS[channels])
        for index, time in enumerate(times):
            x, y = pan[index]
            pixels = scene[y:y + height, x:x + width].copy()
            left = int((width - 64) * (0.5 + 0.5 * np.sin(time)))
            top = int((height - 64) * (0.5 + 0.5 * np.cos(0.7 * time)))
            pixels[top:top + 64, left:left + 64] = (230, 40, 40)
            pixels += rng.normal(0, _SENSOR_NOISE, pixels.shape).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(
                np.clip(pixels, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(time * 1000), _VIDEO_TIME_BASE
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        signal = _tone(seconds, sample_rate, tone_hz, silent=False)
        signal += rng.normal(0, 0.05, signal.shape).astype(np.float32)
        _write_audio(container, audio_stream, signal, channels)
    return path


def write_truncated(path) -> pathlib.Path:
    """Writes a valid mp4 clip, then cuts the file to half its bytes."""
    path = write_clip(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    return path


def write_empty(path) -> pathlib.Path:
    """Writes a zero-byte file."""
    path = pathlib.Path(path)
    path.write_bytes(b"")
    return path
