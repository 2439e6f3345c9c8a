"""SyncShapes: decodable clips in the generic format, deterministic, distinct captions, notes
that start at the bounces (and, in sync_hard's shifted copies, away from them)."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import load_config
from vlsa_jax.data import media, prepare
from vlsa_jax.demo.clip import (COLOURS, SHIFTED_SPLIT, SHIFTED_SUFFIX, SPLITS, SyncShapesOptions,
                                sample_split, trajectory, walls)
from vlsa_jax.demo.corpus import CORPUS_VERSION, OPTIONS_FILE, generate
from vlsa_jax.demo.render import render_frames, wall_glow
from vlsa_jax.data.datasets import read_annotations

OPTIONS = SyncShapesOptions(num_train=6, num_val=3, num_test=3, num_sync_hard=3, seed=3)
# A note's onset is found within this many seconds (5 ms envelope hops, AAC's smearing).
ONSET_TOLERANCE_S = 0.02


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sync_shapes")
    return directory, generate(directory, OPTIONS)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _decode(directory, row, options=OPTIONS) -> media.DecodedClip:
    """The whole clip: every frame, and the audio window [0, seconds]."""
    return media.decode_clip(
        directory / row["path"], num_frames=round(options.seconds * options.fps),
        short_side=options.size, sample_rate=options.sample_rate,
        clip_samples=round(options.seconds * options.sample_rate))


def _onsets(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Seconds at which the 5 ms peak envelope rises above a fifth of a note's amplitude."""
    hop = sample_rate // 200
    envelope = np.abs(audio[:len(audio) // hop * hop]).reshape(-1, hop).max(axis=1)
    loud = np.concatenate([[False], envelope > 0.1])
    return np.flatnonzero(loud[1:] & ~loud[:-1]) * hop / sample_rate


def test_splits_read_with_the_generic_adapter(corpus):
    directory, annotations = corpus
    assert list(annotations) == list(SPLITS)
    for split, path in annotations.items():
        assert path == directory / f"{split}.jsonl"
        count = OPTIONS.num_clips(split)
        clips = read_annotations("generic", str(path), str(directory), split)
        assert len(clips) == count
        assert all((directory / clip.path).is_file() and not os.path.isabs(clip.path)
                   for clip in clips)
        assert all(clip.start is None and clip.end is None for clip in clips)
    originals = read_annotations("generic", str(annotations["sync_hard"]), str(directory),
                                 "sync_hard")
    shifted = read_annotations("generic", str(annotations["sync_hard"]), str(directory),
                               SHIFTED_SPLIT)
    assert [c.clip_id + SHIFTED_SUFFIX for c in originals] == [c.clip_id for c in shifted]
    assert [c.captions for c in originals] == [c.captions for c in shifted]


def test_captions_are_distinct_within_each_split_and_name_the_clip(corpus):
    _, annotations = corpus
    for path in annotations.values():
        rows = _rows(path)
        for key in {row["split"] for row in rows}:
            captions = [row["captions"][0] for row in rows if row["split"] == key]
            assert len(set(captions)) == len(captions), key
        for row in rows:
            caption, attributes = row["captions"][0], row["attributes"]
            assert attributes["colour"] in caption and attributes["start"] in caption
            assert attributes["bounces"] == len(row["bounce_times"])
            assert (attributes["sound"] in caption) == (attributes["bounces"] > 0)


def test_no_two_clips_of_a_split_share_their_attributes():
    # Seed 1's 512 training clips draw repeated attributes that must be resampled.
    specs = sample_split("train", SyncShapesOptions(seed=1))
    assert len({tuple(spec.attributes.values()) for spec in specs}) == len(specs)
    assert len({spec.caption for spec in specs}) == len(specs)


def test_clips_decode_to_the_requested_geometry(corpus):
    directory, annotations = corpus
    for path in annotations.values():
        for row in _rows(path):
            clip = _decode(directory, row)
            assert clip.frames.shape == (16, OPTIONS.size, OPTIONS.size, 3)
            assert clip.audio_valid == (0, len(clip.audio))
            assert clip.duration == pytest.approx(OPTIONS.seconds, abs=0.05)


def test_shape_touches_a_wall_at_each_bounce():
    for spec in sample_split("train", OPTIONS):
        (x_low, x_high), (y_low, y_high) = walls(spec.shape, spec.radius, OPTIONS.size)
        centres = trajectory(spec, np.array(spec.bounce_times), OPTIONS.size)
        gaps = np.abs(np.stack([centres[:, 0] - x_low, centres[:, 0] - x_high,
                                centres[:, 1] - y_low, centres[:, 1] - y_high]))
        np.testing.assert_allclose(gaps.min(axis=0), 0, atol=1e-6)
        # Between bounces the shape stays off the walls.
        between = np.linspace(0, OPTIONS.seconds, 401)
        between = between[np.abs(between[:, None] - np.array(spec.bounce_times)).min(
            axis=1, initial=np.inf) > 0.01]
        centres = trajectory(spec, between, OPTIONS.size)
        assert np.all((centres[:, 0] > x_low) & (centres[:, 0] < x_high)
                      & (centres[:, 1] > y_low) & (centres[:, 1] < y_high))


def test_first_frame_shows_the_shape_in_its_colour_at_its_start():
    spec = sample_split("val", OPTIONS)[0]
    frame = render_frames(spec, OPTIONS)[0]
    x, y = (int(c) for c in spec.start)
    np.testing.assert_array_equal(frame[y, x], COLOURS[spec.colour].rgb)
    assert frame.reshape(-1, 3).max(axis=1).min() < 60  # the background is dark


def test_the_struck_wall_glows_around_each_bounce():
    specs = [s for s in sample_split("train", OPTIONS) if s.bounce_times][:20]
    size, fps = OPTIONS.size, OPTIONS.fps
    times = np.arange(round(OPTIONS.seconds * fps)) / fps
    width = round(size / 16)
    for spec in specs:
        glow = wall_glow(spec, times, size)
        frames = render_frames(spec, OPTIONS).astype(np.float32)
        (x_low, x_high), (y_low, y_high) = walls(spec.shape, spec.radius, size)
        expected = np.zeros_like(glow)
        for bounce, (x, y) in zip(spec.bounce_times,
                                  trajectory(spec, np.array(spec.bounce_times), size)):
            gaps = {"left": x - x_low, "right": x_high - x, "top": y - y_low,
                    "bottom": y_high - y}
            strip = np.zeros((size, size), bool)
            wall = min(gaps, key=gaps.get)
            rows_or_columns = {"left": np.s_[:, :width], "right": np.s_[:, size - width:],
                               "top": np.s_[:width, :], "bottom": np.s_[size - width:, :]}
            strip[rows_or_columns[wall]] = True
            distance = np.abs(times - bounce)
            strength = np.where(distance < 0.1875, 1 - distance / 0.1875, 0)
            expected = np.maximum(expected, strength[:, None, None] * strip)
        np.testing.assert_allclose(glow, expected, atol=1e-6)
        # In the picture: the frame nearest a bounce is bright along the struck wall
        # where the shape is not; a frame with no glow is dark at every wall.
        lit = np.argmin(np.abs(times - spec.bounce_times[0]))
        bright = glow[lit] > 0.5
        assert frames[lit][bright].mean() > 120
        dark = np.flatnonzero(glow.max(axis=(1, 2)) == 0)
        border = np.ones((size, size), bool)
        border[width:size - width, width:size - width] = False
        for i in dark:
            assert np.median(frames[i][border]) < 60


def test_notes_start_at_the_bounces(corpus):
    directory, annotations = corpus
    for split in ("train", "val", "test"):
        for row in _rows(annotations[split]):
            np.testing.assert_allclose(row["sound_times"], row["bounce_times"], atol=1e-4)
            onsets = _onsets(_decode(directory, row).audio, OPTIONS.sample_rate)
            assert len(onsets) == len(row["sound_times"]), row["id"]
            np.testing.assert_allclose(onsets, row["sound_times"], atol=ONSET_TOLERANCE_S)


def test_shifted_copies_sound_away_from_the_bounces(corpus):
    directory, annotations = corpus
    rows = _rows(annotations["sync_hard"])
    for original, shifted in zip(rows[::2], rows[1::2]):
        assert shifted["id"] == original["id"] + SHIFTED_SUFFIX
        assert shifted["bounce_times"] == original["bounce_times"]
        assert original["audio_shift"] == 0
        shift = shifted["audio_shift"]
        assert 0.3 * OPTIONS.seconds <= shift <= 0.7 * OPTIONS.seconds
        expected = np.sort((np.array(original["sound_times"]) + shift) % OPTIONS.seconds)
        np.testing.assert_allclose(shifted["sound_times"], expected, atol=1e-5)

        decoded = _decode(directory, original), _decode(directory, shifted)
        np.testing.assert_array_equal(decoded[0].frames, decoded[1].frames)
        onsets = [_onsets(clip.audio, OPTIONS.sample_rate) for clip in decoded]
        np.testing.assert_allclose(onsets[0], original["bounce_times"], atol=ONSET_TOLERANCE_S)
        np.testing.assert_allclose(onsets[1], shifted["sound_times"], atol=ONSET_TOLERANCE_S)
        offsets = np.abs(onsets[1][:, None] - np.array(original["bounce_times"])[None, :])
        assert offsets.min() > 0.2


def test_same_seed_same_corpus_whatever_the_workers_and_another_seed_differs(
        corpus, tmp_path):
    directory, annotations = corpus
    again = generate(tmp_path / "again", OPTIONS, num_workers=2)
    for split in SPLITS:
        assert again[split].read_text() == annotations[split].read_text()
    row = _rows(annotations["sync_hard"])[1]
    first, second = _decode(directory, row), _decode(tmp_path / "again", row)
    np.testing.assert_array_equal(first.frames, second.frames)
    np.testing.assert_array_equal(first.audio, second.audio)

    other = dataclasses.replace(OPTIONS, seed=4, num_val=0, num_test=0, num_sync_hard=0)
    other_rows = _rows(generate(tmp_path / "other", other)["train"])
    rows = _rows(annotations["train"])
    assert [r["captions"] for r in other_rows] != [r["captions"] for r in rows]
    assert not np.array_equal(_decode(tmp_path / "other", other_rows[0]).audio,
                              _decode(directory, rows[0]).audio)


def test_rerun_reuses_finished_splits_and_refuses_other_options(tmp_path):
    options = dataclasses.replace(OPTIONS, num_train=2, num_val=1, num_test=1, num_sync_hard=1)
    annotations = generate(tmp_path, options)
    media_file = tmp_path / _rows(annotations["train"])[0]["path"]
    stamps = {path: path.stat().st_mtime_ns for path in [*annotations.values(), media_file]}
    annotations["val"].unlink()  # an unfinished split
    generate(tmp_path, options)
    assert annotations["val"].exists()
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items()
               if path != annotations["val"])
    with pytest.raises(ValueError, match="other output directory"):
        generate(tmp_path, dataclasses.replace(options, seed=5))
    # A corpus of an earlier version, rendered otherwise, is refused too.
    recorded = json.loads((tmp_path / OPTIONS_FILE).read_text())
    assert recorded["version"] == CORPUS_VERSION
    del recorded["version"]
    (tmp_path / OPTIONS_FILE).write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match="other output directory"):
        generate(tmp_path, options)


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="even"):
        SyncShapesOptions(size=63)
    with pytest.raises(ValueError, match="AAC"):
        SyncShapesOptions(sample_rate=11111)


def test_prepare_reads_the_corpus(corpus, tmp_path):
    directory, annotations = corpus
    manifest = prepare.prepare_split(
        load_config(), "generic", str(annotations["train"]), str(directory),
        str(tmp_path / "records"), "train", progress=False)
    assert (manifest.num_clips, manifest.num_failed) == (OPTIONS.num_train, 0)


@pytest.mark.slow
def test_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vlsa_jax.demo.corpus", f"--output_dir={tmp_path}",
         "--num_train=1", "--num_val=1", "--num_test=1", "--num_sync_hard=1"],
        capture_output=True, text=True, check=True)
    assert "1 sync_hard, 1 sync_hard_shifted" in result.stdout
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == sorted(
        f"{split}.jsonl" for split in SPLITS)
