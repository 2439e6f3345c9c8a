"""Media decoding and the audio front ends.

`decode_clip` turns one span of a media file into what a record stores: frames
sampled uniformly over the span, and a fixed-length mono waveform centred on it.
Both streams are demuxed in one pass over the container, and each stream stops
being decoded as soon as it has what it needs. `decode_spans` does the same for
many spans of one file (clips cut from a long video) in one pass for all of them.
`spectrogram` turns the waveform into the model's [time, frequency] input (the
config's `audio` section).

Times are seconds from the start of the file (the container's start time), taken
from each frame's timestamp (pts * time_base), so variable frame rates are sampled
by time, not by frame index.
"""
import collections
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence

import av
import librosa
import numpy as np

# Audio decoded on each side of the window, so that the resampler's filter sees real
# signal (not its zero padding) at the window's edges, and a decoder that needs
# pre-roll after a seek (Opus: 80 ms) has settled when the window starts.
_AUDIO_MARGIN_S = 0.1
# Spans further apart than this (from the last frame decoded to the next span's first
# time) are reached by a seek to the key frame before the next span rather than by
# decoding the gap: a seek costs at most a key frame interval of decoding, 1-10 s in
# camera and web video.
_SEEK_AHEAD_S = 5.0
# Samples per resampled frame: few large frames cost less per sample than one per
# decoded frame; the samples are the same.
_RESAMPLED_FRAME_SIZE = 8192
# Floor of the magnitude before the log of the 'sop_logfreq' front end: log(0) is -inf.
_MIN_MAGNITUDE = 1e-5
# Added to the mel power before the log of the 'logmel' front end.
_MEL_EPSILON = 1e-6


class MediaError(Exception):
    """A clip that cannot be used; str(e) is a short reason, e.g. 'no audio stream'."""


@dataclasses.dataclass
class DecodedClip:
    """One decoded clip.

    Attributes:
      frames: [num_frames, H, W, 3] uint8 RGB, short side resized to `short_side`
        (aspect kept, even sizes), frame i the first frame at or after the centre of
        the i-th of num_frames equal segments of the span (the last frame if none
        is); None if no video was decoded.
      frame_times: [num_frames] float64 seconds of the chosen frames; None with frames.
      audio: [clip_samples] float32 mono waveform at the requested rate, the window
        centred on the span's midpoint; None if no audio was requested.
      audio_valid: [first, last) indices of `audio` that hold decoded signal; the
        rest is zeros because the file has no audio there ((0, 0) for a file without
        audio decoded with missing_audio='silence').
      duration: seconds of the span that lie within the file: the container's
        duration bounds it and, if the video ends early (a file cut short), so does
        the end of the last frame.
    """

    frames: np.ndarray | None
    frame_times: np.ndarray | None
    audio: np.ndarray | None
    audio_valid: tuple[int, int] | None
    duration: float


def decode_clip(path, start: float | None = None, end: float | None = None, *,
                num_frames: int, short_side: int, sample_rate: int, clip_samples: int,
                need_video: bool = True, need_audio: bool = True,
                missing_audio: str = "error", threads: int = 1) -> DecodedClip:
    """Decodes the span [start, end] of a media file: `decode_spans` of that one span.

    The audio window (clip_samples long) is centred on the span's midpoint and takes
    whatever audio the file has there, also outside the span; where the file has
    none, the window is zero-padded and `audio_valid` says so.

    Args:
      path: the media file.
      start: the span's start in seconds; None is the start of the file.
      end: the span's end in seconds; None (or past the file) is the end of the file.
      num_frames: frames to sample over the span.
      short_side: the frames' short side in pixels after resizing.
      sample_rate: the waveform's sample rate in Hz.
      clip_samples: the waveform's length in samples.
      need_video: decode the video (a file without video is an error); if False,
        `frames` is None.
      need_audio: decode the audio; if False, `audio` is None.
      missing_audio: 'error' (a file without audio is an error) or 'silence' (it
        gets an all-zero waveform with audio_valid (0, 0)).
      threads: FFmpeg threads decoding and scaling the video; 0 lets FFmpeg choose
        (frame and slice threads). Which is faster where:
        docs/performance.md#input-pipeline-and-preparation.

    Returns:
      The decoded clip.

    Raises:
      MediaError: the file is missing, empty, corrupt, of unknown duration, lacks a
        needed stream or a decodable video frame, or the span lies outside it.
      ValueError: invalid arguments.
    """
    [(_, clip)] = decode_spans(
        path, [(start, end)], num_frames=num_frames, short_side=short_side,
        sample_rate=sample_rate, clip_samples=clip_samples, need_video=need_video,
        need_audio=need_audio, missing_audio=missing_audio, threads=threads)
    if isinstance(clip, MediaError):
        raise clip
    return clip


def decode_spans(path, spans: Sequence[tuple[float | None, float | None]], *,
                 num_frames: int, short_side: int, sample_rate: int, clip_samples: int,
                 need_video: bool = True, need_audio: bool = True,
                 missing_audio: str = "error",
                 threads: int = 1) -> Iterator[tuple[int, DecodedClip | MediaError]]:
    """Decodes several spans of one media file in one pass over it.

    Each span comes out as `decode_clip` decodes it alone, but the file is demuxed and
    decoded once for all of them (spans may overlap): frames are handed to the spans
    open at their time, and only the frames a span keeps are resized. The frames are
    the same bit for bit; so is the audio where its decoder keeps no state across a
    seek. FFmpeg's AAC decoder does: it fills noise-substituted bands from a
    pseudo-random generator that a seek does not reset, so there the noise differs (as
    it does between two seeks to different key frames); Opus agrees to within 1e-5.
    Between spans more than `_SEEK_AHEAD_S` apart the pass seeks instead of decoding
    the gap. A span holds only what it keeps (its frames, its audio window),
    and is yielded as soon as it is complete, so a long film is never held decoded.

    Args:
      path: the media file.
      spans: (start, end) in seconds of each span, as `decode_clip` takes them.
      num_frames, short_side, sample_rate, clip_samples, need_video, need_audio,
        missing_audio, threads: as `decode_clip`, the same for every span.

    Yields:
      (index into `spans`, the decoded clip or the MediaError that says why that span
      cannot be used) once for every span, in the order the spans are complete. A
      file that cannot be used at all fails every span with the same reason; an error
      in the middle of the file fails the spans being decoded at that moment, and the
      pass goes on with the others.

    Raises:
      ValueError: invalid arguments (before anything is yielded).
    """
    if missing_audio not in ("error", "silence"):
        raise ValueError(f"missing_audio={missing_audio!r} is not 'error' or 'silence'")
    for start, end in spans:
        if start is not None and end is not None and end <= start:
            raise ValueError(f"end ({end}) must be after start ({start})")
    yielded = set()
    try:
        _check_file(path)
        with av.open(os.fspath(path)) as container:
            for index, clip in _decode(
                    container, spans, num_frames=num_frames, short_side=short_side,
                    sample_rate=sample_rate, clip_samples=clip_samples,
                    need_video=need_video, need_audio=need_audio,
                    missing_audio=missing_audio, threads=threads):
                yielded.add(index)
                yield index, clip
    except (MediaError, av.error.FFmpegError) as error:  # the file as a whole
        failure = _as_media_error(error)
        for index in range(len(spans)):
            if index not in yielded:
                yield index, failure


def _check_file(path) -> None:
    if not os.path.isfile(path):
        raise MediaError("file not found")
    if os.path.getsize(path) == 0:
        raise MediaError("empty file")


def _as_media_error(error: Exception) -> MediaError:
    """A MediaError as is; an FFmpeg error as the MediaError of a corrupt file."""
    if isinstance(error, MediaError):
        return error
    failure = MediaError(f"truncated or corrupt file: {error}")
    failure.__cause__ = error
    return failure


def _decode(container, spans, *, num_frames, short_side, sample_rate, clip_samples,
            need_video, need_audio, missing_audio, threads):
    """decode_spans on an open container; raises MediaError if the file is unusable."""
    video = _first_stream(container.streams.video) if need_video else None
    audio = _first_stream(container.streams.audio) if need_audio else None
    if need_video and video is None:
        raise MediaError("no video stream")
    if need_audio and audio is None and missing_audio == "error":
        raise MediaError("no audio stream")
    file_end = _file_end(container)
    if video is not None:
        video.thread_type = "AUTO"  # frame and slice threads, if more than one
        video.codec_context.thread_count = threads

    decoded = []
    for index, (start, end) in enumerate(spans):
        try:
            span_start, span_end = _span(file_end, start, end)
        except MediaError as error:
            yield index, error
            continue
        picker = window = None
        if video is not None:
            picker = _FramePicker(_segment_centres(span_start, span_end, num_frames),
                                  short_side, video.sample_aspect_ratio, threads)
        if audio is not None:
            window = _AudioWindow((span_start + span_end) / 2, sample_rate, clip_samples)
        decoded.append(_Span(index, span_start, span_end, picker, video, window, audio,
                             silence=clip_samples if need_audio and audio is None else 0))
    streams = [stream for stream in (video, audio) if stream is not None]
    if streams:  # the video first: it is the stream to seek on
        origin = (container.start_time or 0) / av.time_base
        yield from _run(container, streams, decoded, origin)
    else:
        for span in decoded:
            yield span.index, span.finish()


def _first_stream(streams):
    return streams[0] if streams else None


def _file_end(container) -> float:
    """The container's duration in seconds."""
    if container.duration is None:
        raise MediaError("unknown duration")
    return container.duration / av.time_base


def _span(file_end: float, start: float | None, end: float | None) -> tuple[float, float]:
    """[start, end] in seconds, clipped to the file's duration."""
    span_start = max(start or 0.0, 0.0)
    span_end = file_end if end is None else min(end, file_end)
    if span_end <= span_start:
        raise MediaError(f"span starts at {span_start:.3f} s, past the end of the file "
                         f"({file_end:.3f} s)")
    return span_start, span_end


def _segment_centres(start: float, end: float, count: int) -> np.ndarray:
    """The centres [count] of `count` equal segments of [start, end]."""
    return start + (np.arange(count) + 0.5) * (end - start) / count


class _Span:
    """One span being decoded: its consumers (stream index -> `_FramePicker` or
    `_AudioWindow`), and the clip they make."""

    def __init__(self, index: int, start: float, end: float, picker, video, window, audio,
                 silence: int):
        self.index, self.start, self.end = index, start, end
        self._picker, self._window = picker, window
        self._silence = silence  # samples of silence for a file without audio, or 0
        self.consumers = {}
        if picker is not None:
            self.consumers[video.index] = picker
        if window is not None:
            self.consumers[audio.index] = window
        # Seconds: the first frame any consumer needs is not before it.
        self.first_time = min((c.first_time for c in self.consumers.values()),
                              default=0.0)

    @property
    def done(self) -> bool:
        return all(consumer.done for consumer in self.consumers.values())

    def finish(self) -> DecodedClip | MediaError:
        """The clip, or the MediaError of a video without a decodable frame."""
        clip = DecodedClip(frames=None, frame_times=None, audio=None, audio_valid=None,
                           duration=self.end - self.start)
        if self._picker is not None:
            try:
                clip.frames, clip.frame_times, video_end = self._picker.finish()
            except (MediaError, av.error.FFmpegError) as error:
                return _as_media_error(error)
            clip.duration = max(min(self.end, video_end) - self.start, 0.0)
        if self._window is not None:
            clip.audio, clip.audio_valid = self._window.finish()
        elif self._silence:  # missing_audio == 'silence'
            clip.audio, clip.audio_valid = np.zeros(self._silence, np.float32), (0, 0)
        return clip


def _run(container, streams: list, spans: list[_Span], origin: float):
    """Demuxes the streams once for all spans, feeding each span's consumers its frames.

    The pass starts at the key frame before the earliest span's first time (or at the
    start of the file) and decodes on. A span opens when a frame reaches its first
    time (an audio frame by its end: the window takes a frame that ends in its
    margin), is fed every frame of its streams from then on until its consumers are
    done, and is yielded then; what precedes the times a consumer needs it skips, as
    it would after a seek of its own. A stream that no open or waiting span needs is
    no longer decoded. Where no span is open and the next one starts more than
    `_SEEK_AHEAD_S` after the last frame decoded, the pass seeks to the key frame
    before it instead of decoding the gap. At the end of the file, the spans still
    waiting get the last frame of each stream, as a pass of their own would end.

    An error while demuxing or decoding fails the open spans (or, if none is open,
    the span the pass sought to); the pass then seeks to the next waiting span.

    Args:
      container: the open container.
      streams: the streams to demux, the one to seek on first.
      spans: the spans.
      origin: the container's start time in seconds; frame times are relative to it.

    Yields:
      (span index, DecodedClip or MediaError) for every span.
    """
    waiting = collections.deque(sorted(spans, key=lambda span: span.first_time))
    first_pass = True
    while waiting:
        sought = waiting[0]  # the span this pass starts for
        position = max(sought.first_time, 0.0)  # seconds reached
        open_spans, last = [], {}  # last: stream index -> (frame, time)
        try:
            if position > 0 or not first_pass:
                # To the last key frame at or before the span's first time.
                container.seek(int((origin + position) / streams[0].time_base),
                               stream=streams[0], backward=True)
            first_pass = False
            for packet in container.demux(streams):
                index = packet.stream.index
                if not waiting and all(span.consumers[index].done for span in open_spans):
                    continue
                for frame in packet.decode():
                    if frame.time is None:
                        raise MediaError(f"{packet.stream.type} frames without timestamps")
                    time = frame.time - origin
                    last[index] = (frame, time)
                    position = max(position, time)
                    reached = time + (frame.samples / frame.sample_rate
                                      if packet.stream.type == "audio" else 0.0)
                    while waiting and waiting[0].first_time <= reached:
                        open_spans.append(waiting.popleft())
                    for span in open_spans:
                        consumer = span.consumers[index]
                        if not consumer.done:
                            consumer.add(frame, time)
                for span in [span for span in open_spans if span.done]:
                    open_spans.remove(span)
                    yield span.index, span.finish()
                if not open_spans and (
                        not waiting or waiting[0].first_time > position + _SEEK_AHEAD_S):
                    break
            else:  # the end of the file
                for span in waiting:
                    for index, (frame, time) in last.items():
                        span.consumers[index].add(frame, time)
                open_spans += waiting
                waiting.clear()
        except (MediaError, av.error.FFmpegError) as error:
            failed = open_spans or (
                [waiting.popleft()] if waiting and waiting[0] is sought else [])
            open_spans = []
            for span in failed:
                yield span.index, _as_media_error(error)
        for span in open_spans:
            yield span.index, span.finish()


class _FramePicker:
    """Picks, for each target time, the first video frame at or after it.

    Targets past the last frame get the last frame. Only the picked frames are resized
    and converted to RGB, in two steps, each with a reformatter of its own: resizing in
    the decoded pixel format, then converting at the output size (swscale's unscaled
    YUV -> RGB path). The chroma keeps the source's subsampling (4:2:0 for most video),
    as the stored JPEG frames do. Why two steps and two reformatters:
    docs/performance.md#input-pipeline-and-preparation.
    """

    def __init__(self, targets: np.ndarray, short_side: int, sample_aspect_ratio,
                 threads: int):
        self._targets = targets
        self._short_side = short_side
        self._sample_aspect_ratio = sample_aspect_ratio
        self._size = None  # (width, height) of the output, from the first frame
        self._resizer = av.video.reformatter.VideoReformatter()
        self._to_rgb = av.video.reformatter.VideoReformatter()
        self._threads = threads
        self._frames = []
        self._times = []
        self._last = None  # (frame, time) of the latest frame decoded
        self._last_picked = None  # (frame, rgb) of the latest frame picked
        self.first_time = float(targets[0])

    @property
    def done(self) -> bool:
        return len(self._frames) == len(self._targets)

    def add(self, frame: av.VideoFrame, time: float) -> None:
        self._last = (frame, time)
        while not self.done and time >= self._targets[len(self._frames)]:
            self._pick(frame, time)

    def finish(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Picks the frames of the targets left, and returns every pick.

        Returns:
          (frames [T, H, W, 3] uint8, their times [T] float64 in seconds, the video's
          end): the end is infinite unless the video ended before the last target, and
          then it is the end of its last frame.

        Raises:
          MediaError: no video frame was decoded.
        """
        if self._last is None:
            raise MediaError("no decodable video frames")
        end = math.inf
        if not self.done:
            frame, time = self._last
            end = time + float((frame.duration or 0) * frame.time_base)
        while not self.done:
            self._pick(*self._last)
        return np.stack(self._frames), np.asarray(self._times, np.float64), end

    def _pick(self, frame: av.VideoFrame, time: float) -> None:
        if self._last_picked is None or self._last_picked[0] is not frame:
            if self._size is None:
                self._size = _resized(frame.width, frame.height, self._sample_aspect_ratio,
                                      self._short_side)
            width, height = self._size
            resized = self._resizer.reformat(frame, width=width, height=height,
                                             threads=self._threads)
            rgb = self._to_rgb.reformat(resized, format="rgb24", threads=self._threads)
            self._last_picked = (frame, rgb.to_ndarray())
        self._frames.append(self._last_picked[1])
        self._times.append(time)


def _resized(width: int, height: int, sample_aspect_ratio, short_side: int):
    """The output size of a frame: short side `short_side`, display aspect kept.

    Returns:
      (width, height), both even.
    """
    display_width = width * float(sample_aspect_ratio or 1)
    scale = short_side / min(display_width, height)
    return _even(display_width * scale), _even(height * scale)


def _even(size: float) -> int:
    return max(2, 2 * round(size / 2))


class _AudioWindow:
    """Resamples the audio around a window to mono and cuts the window out."""

    def __init__(self, centre: float, sample_rate: int, clip_samples: int):
        self._sample_rate = sample_rate
        self._clip_samples = clip_samples
        self._window_start = centre - clip_samples / sample_rate / 2
        self._window_end = self._window_start + clip_samples / sample_rate
        # rematrix_maxval=1 scales the down-mix so it cannot clip: stereo becomes the
        # mean of its channels, as librosa.load(mono=True) makes it.
        self._resampler = av.AudioResampler(
            format="flt", layout="mono", rate=sample_rate, frame_size=_RESAMPLED_FRAME_SIZE,
            options={"rematrix_maxval": "1.0"})
        self._chunks = []
        self._decoded_start = None  # time of the first sample resampled
        self.first_time = self._window_start - _AUDIO_MARGIN_S
        self.done = False

    def add(self, frame: av.AudioFrame, time: float) -> None:
        if time + frame.samples / frame.sample_rate < self.first_time:
            return
        if self._decoded_start is None:
            self._decoded_start = time
        self._chunks.extend(out.to_ndarray()[0] for out in self._resampler.resample(frame))
        self.done = time >= self._window_end + _AUDIO_MARGIN_S

    def finish(self) -> tuple[np.ndarray, tuple[int, int]]:
        """Flushes the resampler and cuts the window out.

        Returns:
          (the window [clip_samples] float32, the range [first, last) of it that holds
          decoded audio; zeros elsewhere).
        """
        self._chunks.extend(out.to_ndarray()[0] for out in self._resampler.resample(None))
        window = np.zeros(self._clip_samples, np.float32)
        if self._decoded_start is None:
            return window, (0, 0)
        decoded = np.concatenate(self._chunks)
        # Index into `decoded` of the window's first sample (negative: before the audio).
        offset = round((self._window_start - self._decoded_start) * self._sample_rate)
        first = min(max(-offset, 0), self._clip_samples)
        last = max(min(len(decoded) - offset, self._clip_samples), first)
        window[first:last] = decoded[offset + first:offset + last]
        return window, (first, last)


def spectrogram(waveform: np.ndarray, audio_config) -> np.ndarray:
    """The audio front end named by `audio_config.frontend`.

    'sop_logfreq' (the paper, after Sound of Pixels): the STFT magnitude, its
    frequency axis warped to `bins` log-spaced rows by Sound of Pixels' grid, then
    log(max(magnitude, 1e-5)) (the floor keeps silence finite). 'logmel': the
    librosa mel power spectrogram with `bins` bands, then log(mel + 1e-6).

    Args:
      waveform: [clip_samples] float32 mono at audio_config.sample_rate.
      audio_config: the config's `audio` section (frontend, sample_rate, n_fft, hop,
        frames, bins).

    Returns:
      [audio_config.frames, audio_config.bins] float32, time-major.

    Raises:
      ValueError: an unknown front end, or a config whose clip_samples and hop do not
        give `frames` STFT frames.
    """
    frontend = _FRONTENDS.get(audio_config.frontend)
    if frontend is None:
        raise ValueError(f"audio.frontend={audio_config.frontend!r} is not one of "
                         f"{sorted(_FRONTENDS)}")
    features = frontend(np.asarray(waveform, np.float32), audio_config).T
    expected = (audio_config.frames, audio_config.bins)
    if features.shape != expected:
        raise ValueError(
            f"the {audio_config.frontend} spectrogram of {len(waveform)} samples is "
            f"[frames, bins] {list(features.shape)}, but audio.frames and audio.bins "
            f"are {list(expected)}: the config's audio geometry is inconsistent")
    return np.ascontiguousarray(features, dtype=np.float32)


def frontend_parameters(audio_config) -> dict:
    """Every parameter that determines the spectrogram, as stored in record manifests."""
    return {
        "frontend": audio_config.frontend,
        "sample_rate": audio_config.sample_rate,
        "n_fft": audio_config.n_fft,
        "hop": audio_config.hop,
        "clip_samples": audio_config.clip_samples,
        "frames": audio_config.frames,
        "bins": audio_config.bins,
    }


def _sop_logfreq(waveform: np.ndarray, audio_config) -> np.ndarray:
    """log |STFT| on Sound of Pixels' log-frequency grid, [bins, frames]."""
    magnitude = np.abs(librosa.stft(waveform, n_fft=audio_config.n_fft,
                                    hop_length=audio_config.hop, center=True))
    warped = _warp_frequency(magnitude, audio_config.bins)
    return np.log(np.maximum(warped, _MIN_MAGNITUDE))


def _warp_frequency(magnitude: np.ndarray, bins: int) -> np.ndarray:
    """Resamples the frequency axis to Sound of Pixels' log-spaced grid.

    Sound of Pixels (warpgrid + grid_sample, align_corners semantics) reads output
    row y in linspace(-1, 1, bins) at the normalised frequency
    g = (21 ** ((y + 1) / 2) - 11) / 10, i.e. input row (g + 1) / 2 * (F - 1),
    interpolating linearly between the two nearest input rows.

    Args:
      magnitude: [F, T] linear-frequency magnitudes.
      bins: output rows.

    Returns:
      [bins, T]; row 0 is the lowest frequency, row bins - 1 the Nyquist frequency.
    """
    num_freq = magnitude.shape[0]
    rows = _sop_grid_rows(num_freq, bins)
    lower = np.minimum(np.floor(rows).astype(np.int64), num_freq - 2)
    weight = (rows - lower)[:, None]
    return (1 - weight) * magnitude[lower] + weight * magnitude[lower + 1]


def _sop_grid_rows(num_freq: int, bins: int) -> np.ndarray:
    """The input frequency rows [bins] (fractional) that Sound of Pixels' grid reads."""
    y = np.linspace(-1.0, 1.0, bins)
    grid = (21.0 ** ((y + 1) / 2) - 11) / 10
    return (grid + 1) / 2 * (num_freq - 1)


def _logmel(waveform: np.ndarray, audio_config) -> np.ndarray:
    """log mel power spectrogram, [bins, frames]."""
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=audio_config.sample_rate, n_fft=audio_config.n_fft,
        hop_length=audio_config.hop, n_mels=audio_config.bins, center=True, power=2.0)
    return np.log(mel + _MEL_EPSILON)


_FRONTENDS = {"sop_logfreq": _sop_logfreq, "logmel": _logmel}
