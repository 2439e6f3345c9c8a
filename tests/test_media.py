"""Media decoding on real files written by PyAV, and the audio front ends."""
import av
import librosa
import numpy as np
import pytest

from tests import media_fixtures
from tests.helpers import load_config
from vlsa_jax.data import media

SAMPLE_RATE = 11_025
CLIP_SAMPLES = 8_191  # the tiny config's window: 0.74 s
SHORT_SIDE = 40
TONE_RMS = media_fixtures.TONE_AMPLITUDE / np.sqrt(2)


def _decode(path, start=None, end=None, **kwargs):
    options = {"num_frames": 4, "short_side": SHORT_SIDE, "sample_rate": SAMPLE_RATE,
               "clip_samples": CLIP_SAMPLES}
    return media.decode_clip(path, start, end, **(options | kwargs))


def _brightness(frames):
    """Mean grey level of each frame [T]."""
    return frames.reshape(len(frames), -1).mean(axis=1)


def _expected_brightness(times, written_times):
    """The grey level of the written frames at `times` (each one of written_times)."""
    index = np.searchsorted(written_times, np.asarray(times) - 1e-3)
    return media_fixtures.frame_value(index)


def _peak_hz(audio, sample_rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return np.argmax(spectrum) * sample_rate / len(audio)


def _tone_at(times, tone_hz=440.0):
    return media_fixtures.TONE_AMPLITUDE * np.sin(2 * np.pi * tone_hz * times)


def _check_frames_follow_targets(clip, start, end, written_times):
    """Frame i is the first written frame at or after the centre of segment i."""
    targets = start + (np.arange(len(clip.frame_times)) + 0.5) * (end - start) / len(
        clip.frame_times)
    # The last written frame stands in for targets after it.
    index = np.minimum(np.searchsorted(written_times, targets - 1e-3), len(written_times) - 1)
    expected_times = written_times[index]
    np.testing.assert_allclose(clip.frame_times, expected_times, atol=2e-3)
    np.testing.assert_allclose(_brightness(clip.frames),
                               _expected_brightness(clip.frame_times, written_times), atol=4)


def test_decodes_frames_and_audio(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10,
                                     size=(64, 48))
    clip = _decode(path)
    assert clip.frames.shape == (4, 40, 54, 3) and clip.frames.dtype == np.uint8
    assert min(clip.frames.shape[1:3]) == SHORT_SIDE
    assert np.all(np.diff(clip.frame_times) > 0)
    _check_frames_follow_targets(clip, 0.0, 2.0, media_fixtures.frame_times(2.0, 10))
    assert clip.duration == pytest.approx(2.0)
    assert clip.audio.shape == (CLIP_SAMPLES,) and clip.audio.dtype == np.float32
    assert clip.audio_valid == (0, CLIP_SAMPLES)


def test_decoder_threads_do_not_change_the_result(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10)
    single, automatic = _decode(path, threads=1), _decode(path, threads=0)
    np.testing.assert_array_equal(single.frames, automatic.frames)
    np.testing.assert_array_equal(single.frame_times, automatic.frame_times)
    np.testing.assert_array_equal(single.audio, automatic.audio)


def test_span_selects_frames_and_centres_audio(tmp_path):
    # Key frames every second: the decoder seeks to the one before the span.
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=6.0, fps=10)
    start, end = 3.05, 4.45
    clip = _decode(path, start, end, num_frames=5)
    assert np.all((clip.frame_times >= start) & (clip.frame_times <= end))
    _check_frames_follow_targets(clip, start, end, media_fixtures.frame_times(6.0, 10))
    assert clip.duration == pytest.approx(end - start)
    window_start = (start + end) / 2 - CLIP_SAMPLES / SAMPLE_RATE / 2
    tone = _tone_at(window_start + np.arange(CLIP_SAMPLES) / SAMPLE_RATE)
    # A one-sample shift at 440 Hz would drop the correlation to 0.97.
    assert np.corrcoef(clip.audio, tone)[0, 1] > 0.99


def test_span_end_past_the_file_is_clipped_and_start_past_it_fails(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=1.0)
    assert _decode(path, 0.5, 5.0).duration == pytest.approx(0.5)
    with pytest.raises(media.MediaError, match="past the end"):
        _decode(path, 2.0, 3.0)


def test_short_file_pads_the_audio_window_symmetrically(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=1.0)
    clip = _decode(path, clip_samples=2 * SAMPLE_RATE)
    first, last = clip.audio_valid
    # The 2 s window is centred on the 1 s file: half a second of padding on each side
    # (the AAC encoder's last frame adds up to 1024 samples at 44.1 kHz to the end).
    assert first == pytest.approx(SAMPLE_RATE // 2, abs=1)
    assert SAMPLE_RATE <= last - first <= SAMPLE_RATE + 1024 // 4 + 1
    assert not clip.audio[:first].any() and not clip.audio[last:].any()
    assert np.sqrt(np.mean(clip.audio[first:first + SAMPLE_RATE] ** 2)) == pytest.approx(
        TONE_RMS, rel=0.05)


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_channels_are_mixed_to_mono_without_gain(tmp_path, channels):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", channels=channels, video=False)
    clip = _decode(path, need_video=False)
    # Every channel carries the tone: the mix is the tone, not louder.
    assert np.sqrt(np.mean(clip.audio ** 2)) == pytest.approx(TONE_RMS, rel=0.1)
    assert _peak_hz(clip.audio) == pytest.approx(440.0, abs=3)


@pytest.mark.parametrize("sample_rate", [8_000, 44_100, 48_000])
def test_resampling_keeps_the_tone(tmp_path, sample_rate):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", sample_rate=sample_rate,
                                     tone_hz=1000.0, video=False)
    clip = _decode(path, need_video=False)
    assert _peak_hz(clip.audio) == pytest.approx(1000.0, abs=3)


def test_silent_audio_decodes_to_zeros(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", silent=True)
    clip = _decode(path)
    assert clip.audio_valid == (0, CLIP_SAMPLES)
    assert np.abs(clip.audio).max() < 1e-4


def test_webm_vp9_opus(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.webm", sample_rate=48_000)
    clip = _decode(path, 0.0, 2.0)
    _check_frames_follow_targets(clip, 0.0, 2.0, media_fixtures.frame_times(2.0, 10))
    assert clip.audio_valid == (0, CLIP_SAMPLES)
    assert _peak_hz(clip.audio) == pytest.approx(440.0, abs=3)


def test_one_frame_video_repeats_the_frame(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=0.1, fps=10)
    clip = _decode(path)
    assert clip.frames.shape[0] == 4
    assert np.all(clip.frames == clip.frames[0]) and np.all(clip.frame_times == 0.0)


def test_variable_frame_rate_is_sampled_by_time(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=2.0, fps=10,
                                     variable_fps=True)
    clip = _decode(path, num_frames=8)
    # 20 frames in the first second, 5 in the second: indices and times disagree.
    _check_frames_follow_targets(
        clip, 0.0, 2.0, media_fixtures.frame_times(2.0, 10, variable_fps=True))


@pytest.mark.parametrize("writer, reason", [
    (None, "file not found"),
    (media_fixtures.write_empty, "empty file"),
    (media_fixtures.write_truncated, "truncated or corrupt file"),
    (lambda path: media_fixtures.write_clip(path, audio=False), "no audio stream"),
    (lambda path: media_fixtures.write_clip(path, video=False), "no video stream"),
])
def test_unusable_files_raise_with_a_reason(tmp_path, writer, reason):
    path = tmp_path / "clip.mp4"
    if writer is not None:
        writer(path)
    with pytest.raises(media.MediaError, match=reason):
        _decode(path)


def test_file_cut_short_repeats_its_last_frame_and_says_so(tmp_path):
    # WebM carries its duration in the header: the container still claims 4 s.
    path = media_fixtures.write_clip(tmp_path / "clip.webm", seconds=4.0,
                                     sample_rate=48_000)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    clip = _decode(path)
    assert clip.frame_times[-1] == clip.frame_times[-2] < 3.0
    assert clip.duration == pytest.approx(clip.frame_times[-1] + 0.1)
    assert clip.audio_valid[1] < CLIP_SAMPLES  # the window, centred at 2 s, runs out


def test_missing_audio_can_be_silence(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", audio=False)
    clip = _decode(path, missing_audio="silence")
    assert clip.frames.shape[0] == 4
    assert clip.audio_valid == (0, 0)
    assert clip.audio.shape == (CLIP_SAMPLES,) and not clip.audio.any()


def test_audio_only_file_without_video(tmp_path):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", video=False)
    clip = _decode(path, need_video=False)
    assert clip.frames is None and clip.frame_times is None
    assert _peak_hz(clip.audio) == pytest.approx(440.0, abs=3)


# Several spans of one file, decoded in one pass (decode_spans).

# Spans of a 20 s file (key frames every second): overlapping ones, a short one between
# two frames, one 8 s after the others end (reached by a seek), one past the end.
SPANS = [(0.5, 2.0), (1.0, 3.0), (2.2, 2.9), (4.0, 6.0), (8.05, 8.25), (16.0, 18.0),
         (30.0, 31.0)]


def _decode_spans(path, spans, **kwargs):
    """{span index: DecodedClip or MediaError}, checking that each span came once."""
    options = {"num_frames": 4, "short_side": SHORT_SIDE, "sample_rate": SAMPLE_RATE,
               "clip_samples": CLIP_SAMPLES}
    found = list(media.decode_spans(path, spans, **(options | kwargs)))
    assert sorted(index for index, _ in found) == list(range(len(spans)))
    return dict(found)


def _alone(path, start, end):
    """decode_clip of one span, or its MediaError."""
    try:
        return _decode(path, start, end)
    except media.MediaError as error:
        return error


def _check_same_clip(clip, alone, audio_atol=0.0):
    if isinstance(alone, media.MediaError):
        assert isinstance(clip, media.MediaError) and str(clip) == str(alone)
        return
    np.testing.assert_array_equal(clip.frames, alone.frames)
    np.testing.assert_array_equal(clip.frame_times, alone.frame_times)
    assert clip.duration == alone.duration and clip.audio_valid == alone.audio_valid
    np.testing.assert_allclose(clip.audio, alone.audio, rtol=0, atol=audio_atol)


@pytest.mark.parametrize("whole_file, seeks", [(False, 2), (True, 1)],
                         ids=["seeking_over_the_gap", "decoding_through"])
def test_spans_decode_in_one_pass_as_each_alone(tmp_path, monkeypatch, whole_file, seeks):
    # One seek to the first span's key frame and one over the 8 s gap; with the whole
    # file as a span too, the pass decodes through the gap.
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=20.0, fps=10)
    spans = SPANS + [(None, None)] * whole_file
    opened = _watch_opened_files(monkeypatch)
    clips = _decode_spans(path, spans)
    assert len(opened) == 1 and opened[0].seeks == seeks
    for index, (start, end) in enumerate(spans):
        _check_same_clip(clips[index], _alone(path, start, end))
    assert "past the end of the file" in str(clips[SPANS.index((30.0, 31.0))])


@pytest.mark.parametrize("name, audio_atol", [("clip.mp4", 0.05), ("clip.webm", 1e-5)])
def test_spans_of_camera_like_video_keep_their_frames(tmp_path, name, audio_atol):
    """Frames are the same bit for bit; the audio only as far as its codec allows.

    FFmpeg's AAC decoder fills noise-substituted bands (this clip's audio is a tone
    over noise) from a pseudo-random generator that runs on from the decoder's
    opening, across seeks: noise of the same spectrum, other samples, whatever
    decoded before. Opus converges to within 1e-5 after a seek, not bit for bit.
    """
    path = media_fixtures.write_textured_clip(tmp_path / name, seconds=20.0, fps=10,
                                              size=(96, 64), sample_rate=48_000)
    clips = _decode_spans(path, SPANS)
    for index, (start, end) in enumerate(SPANS):
        _check_same_clip(clips[index], _alone(path, start, end), audio_atol)


class _WatchedContainer:
    """An open container that counts its seeks, and whose demuxing fails on the packets
    of [fail_from, fail_to) seconds."""

    def __init__(self, container, fail_from=None, fail_to=None):
        self._container, self._fail_from, self._fail_to = container, fail_from, fail_to
        self.seeks = 0

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._container.close()

    def seek(self, *args, **kwargs):
        self.seeks += 1
        return self._container.seek(*args, **kwargs)

    def demux(self, streams):
        for packet in self._container.demux(streams):
            if self._fail_from is not None and packet.pts is not None and (
                    self._fail_from <= packet.pts * packet.time_base < self._fail_to):
                raise av.error.InvalidDataError(1094995529, "Invalid data found")
            yield packet


def _watch_opened_files(monkeypatch, **failure):
    """Makes av.open return _WatchedContainers; returns the list they are added to."""
    opened, open_file = [], av.open

    def watched_open(*args, **kwargs):
        opened.append(_WatchedContainer(open_file(*args, **kwargs), **failure))
        return opened[-1]

    monkeypatch.setattr(av, "open", watched_open)
    return opened


def test_an_error_in_the_middle_fails_only_the_spans_it_hits(tmp_path, monkeypatch):
    path = media_fixtures.write_clip(tmp_path / "clip.mp4", seconds=20.0, fps=10)
    _watch_opened_files(monkeypatch, fail_from=4.0, fail_to=4.5)
    # (3.5, 5.0) is being decoded when the error comes; (4.6, 6.0) fails after its own
    # seek, to the key frame at 4 s, as it does alone; the others are decoded.
    spans = [(0.5, 2.0), (3.5, 5.0), (4.6, 6.0), (8.0, 9.0), (16.0, 18.0)]
    clips = _decode_spans(path, spans)
    for index, (start, end) in enumerate(spans):
        _check_same_clip(clips[index], _alone(path, start, end))
    failed = [index for index, clip in clips.items() if isinstance(clip, media.MediaError)]
    assert failed == [1, 2]
    assert str(clips[1]).startswith("truncated or corrupt file: ")


@pytest.mark.parametrize("writer, reason", [
    (None, "file not found"),
    (media_fixtures.write_truncated, "truncated or corrupt file"),
    (lambda path: media_fixtures.write_clip(path, audio=False), "no audio stream"),
])
def test_an_unusable_file_fails_every_span(tmp_path, writer, reason):
    path = tmp_path / "clip.mp4"
    if writer is not None:
        writer(path)
    clips = _decode_spans(path, [(0.0, 0.5), (0.2, 1.0), (None, None)])
    assert all(reason in str(clip) for clip in clips.values())


# Spectrograms, at the paper's parameters: 11025 Hz, n_fft 1022, hop 256, 65535 samples.


@pytest.fixture(scope="module")
def audio_config():
    return load_config(arg="variant=base").audio


def _tone(audio_config, tone_hz):
    times = np.arange(audio_config.clip_samples) / audio_config.sample_rate
    return (0.5 * np.sin(2 * np.pi * tone_hz * times)).astype(np.float32)


def _with(audio_config, **changes):
    config = audio_config.copy_and_resolve_references()
    config.update(changes)
    return config


@pytest.mark.parametrize("frontend", ["sop_logfreq", "logmel"])
def test_spectrogram_shape(audio_config, frontend):
    features = media.spectrogram(_tone(audio_config, 440.0),
                                 _with(audio_config, frontend=frontend))
    assert features.shape == (256, 256) and features.dtype == np.float32
    assert np.all(np.isfinite(features))


def _sop_reference(magnitude, bins):
    """Sound of Pixels' warp, row by row: grid_y = (21 ** ((y + 1) / 2) - 11) / 10."""
    num_freq, num_frames = magnitude.shape
    warped = np.empty((bins, num_frames))
    for row, y in enumerate(np.linspace(-1, 1, bins)):
        grid_y = (21 ** ((y + 1) / 2) - 11) / 10
        source = (grid_y + 1) / 2 * (num_freq - 1)  # align_corners=True
        for frame in range(num_frames):
            warped[row, frame] = np.interp(source, np.arange(num_freq), magnitude[:, frame])
    return warped


def test_sop_logfreq_matches_the_sound_of_pixels_warp(audio_config):
    waveform = np.random.default_rng(0).uniform(
        -0.5, 0.5, audio_config.clip_samples).astype(np.float32)
    magnitude = np.abs(librosa.stft(waveform, n_fft=audio_config.n_fft,
                                    hop_length=audio_config.hop, center=True))
    expected = np.log(np.maximum(_sop_reference(magnitude, audio_config.bins), 1e-5)).T
    np.testing.assert_allclose(media.spectrogram(waveform, audio_config), expected,
                               rtol=1e-5, atol=1e-5)


def _warped_bin(tone_hz, audio_config):
    """Output row where the log warp puts `tone_hz` (the inverse of Sound of Pixels' grid)."""
    grid_y = 2 * tone_hz / (audio_config.sample_rate / 2) - 1
    y = 2 * np.log(10 * grid_y + 11) / np.log(21) - 1
    return (y + 1) / 2 * (audio_config.bins - 1)


def test_sop_logfreq_puts_a_tone_where_the_warp_maps_it(audio_config):
    peaks = []
    for tone_hz in (440.0, 2000.0):
        features = media.spectrogram(_tone(audio_config, tone_hz), audio_config)
        peaks.append(np.argmax(features.mean(axis=0)))
        assert peaks[-1] == pytest.approx(_warped_bin(tone_hz, audio_config), abs=1)
    assert peaks[1] > peaks[0]


def test_logmel_is_log_librosa_mel(audio_config):
    config = _with(audio_config, frontend="logmel")
    waveform = _tone(audio_config, 440.0)
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop,
        n_mels=config.bins, center=True, power=2.0)
    np.testing.assert_allclose(media.spectrogram(waveform, config), np.log(mel + 1e-6).T,
                               rtol=1e-5, atol=1e-5)


def test_spectrogram_rejects_unknown_frontend_and_geometry(audio_config):
    waveform = _tone(audio_config, 440.0)
    with pytest.raises(ValueError, match="audio.frontend"):
        media.spectrogram(waveform, _with(audio_config, frontend="mfcc"))
    with pytest.raises(ValueError, match="audio.frames"):
        media.spectrogram(waveform, _with(audio_config, frames=128))


def test_frontend_parameters(audio_config):
    assert media.frontend_parameters(audio_config) == {
        "frontend": "sop_logfreq", "sample_rate": 11_025, "n_fft": 1022, "hop": 256,
        "clip_samples": 65_535, "frames": 256, "bins": 256}
